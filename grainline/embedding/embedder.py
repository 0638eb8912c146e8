"""The Embedder: a loaded model (torch or OpenVINO) with grainline's batching,
L2-normalised vectors, long-text pooling, an optional tuned head, and the identity
that names its table; ``get_embedder`` keeps one per settings per process."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from grainline.chunkers import ModelWindow
from grainline.documents import Chunk
from grainline.tokens import HFTokenCounter

from . import backends
from . import precision as prec
from . import torch_backend
from .head import Head
from .identity import ModelIdentity, is_bundled, read_cached_identity, resolve_model_path, weights_hash, write_cached_identity
from .pooling import plan_windows, pool
from .settings import EmbedderSettings


class Embedder:
    """A loaded sentence-transformers model plus what grainline needs around it."""

    def __init__(self, settings: EmbedderSettings | None = None) -> None:
        self.settings = settings or EmbedderSettings()
        self.path = resolve_model_path(self.settings.model)
        # backend auto's timed candidates, by backend: the winner's loaded model is kept.
        self._trials: dict[str, Embedder] = {}

    @cached_property
    def backend_choice(self) -> backends.BackendChoice:
        """Which backend computes the vectors: the settings' own, or what auto chose for
        this model and machine (cached; the first time, both are timed)."""
        if self.settings.backend != "auto":
            return backends.BackendChoice(self.settings.backend, "set explicitly", auto=False)
        fixed = backends.fixed_choice(self.settings.device, self.settings.precision)
        if fixed is not None:
            return fixed
        try:
            weights = self._weights_sha256
        except ValueError:  # a hub model not downloaded yet: torch fetches it; timed once it is on disk
            return backends.BackendChoice("torch", f"model {self.settings.model!r} is not on disk yet, and torch downloads it")
        return backends.choose(backends.choice_key(weights, self.settings.precision), self._trial_encoder)

    @property
    def backend(self) -> str:
        """The backend the vectors come from: torch or openvino."""
        return self.backend_choice.backend

    def _trial_encoder(self, backend: str) -> Callable[[Sequence[str]], np.ndarray]:
        trial = Embedder(self.settings.model_copy(update={"backend": backend, "show_progress": False}))
        trial.model  # noqa: B018 - load (and for openvino, convert) before any timing
        self._trials[backend] = trial
        return trial.encode

    @cached_property
    def device(self) -> str:
        # Lazy: choosing a device imports torch, which a run with nothing to embed skips.
        return "cpu" if self.backend == "openvino" else torch_backend.pick_device(self.settings.device)

    @property
    def loaded(self) -> bool:
        """Whether the model weights are in memory (a run with nothing to embed never loads them)."""
        return "model" in self.__dict__

    @cached_property
    def model(self) -> Any:
        if Path(self.path).exists():
            # A local model never needs the hub; make sure nothing tries to reach it.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        trial = self._trials.get(self.backend)
        if trial is not None and trial.loaded:  # auto timed it: no second load
            self.precision_choice = trial.precision_choice
            self._trials.clear()  # the other backend's model is not kept in memory
            return trial.model
        if self.backend == "openvino":
            from . import openvino_backend

            precision = self._resolve_precision(
                lambda p: openvino_backend.load(self.path, self._weights_sha256, p).embed(list(prec.PROBES)))
            return openvino_backend.load(self.path, self._weights_sha256, precision, self.settings.calibration)
        model = torch_backend.load(self.path, self.device, self.settings.model)
        precision = self._resolve_precision(lambda p: torch_backend.probe(model, p, self.device))
        return torch_backend.at_precision(model, precision, self.device)

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

    def choices(self) -> tuple[backends.BackendChoice, Any]:
        """(backend choice, precision choice or None when the precision was set): what
        this process's vectors come from, auto's choices made (this loads the model)."""
        self.model  # noqa: B018 - choosing the precision may probe the loaded model
        return self.backend_choice, self.precision_choice

    _followed_precision: Any = None  # a precision choice made by another process

    def follow(self, backend: backends.BackendChoice, precision: Any) -> None:
        """Take auto's choices as another process made them (:meth:`choices`) instead
        of making them here. A run's workers follow the process that writes, so all of
        one run's vectors come from one backend at one precision, the ones its ledger
        row names: a worker choosing for itself times the backends under its own load,
        with its own cache, and two workers (or a worker and the writer) can choose
        differently. A model already loaded with other choices is loaded again."""
        if self.settings.backend != "auto" and self.settings.precision != "auto":
            return
        want = (backend.backend, precision.precision if precision is not None else self.settings.precision)
        if self.loaded and (self.backend, self.precision) == want:
            return
        if self.loaded:
            self.unload()
        if self.settings.backend == "auto":
            self.__dict__["backend_choice"] = backend
            self.__dict__.pop("device", None)  # follows the backend
        if self.settings.precision == "auto" and precision is not None:
            self._followed_precision = precision

    def _resolve_precision(self, probe: Callable[[str], np.ndarray]) -> str:
        """The settings' precision, or auto's choice for this model and machine:
        the one followed (:meth:`follow`), cached, or reached by ``probe`` (the probe
        texts' vectors at a precision)."""
        if self.settings.precision != "auto":
            return self.settings.precision
        if self._followed_precision is not None:
            self.precision_choice = self._followed_precision
            return self.precision_choice.precision
        candidate, why = prec.candidate_for(self.device)
        if candidate == "fp32":
            self.precision_choice = prec.PrecisionChoice("fp32", "fp32", why)
        else:
            key = prec.choice_key(self._weights_sha256, self.backend, torch_backend.device_id(self.device), candidate,
                                  self.settings.auto_min_cosine)
            self.precision_choice = prec.choose(key, candidate, why, self.settings.auto_min_cosine, probe)
        return self.precision_choice.precision

    def unload(self) -> None:
        """Free the model weights; the next use loads them again."""
        self.__dict__.pop("model", None)
        self._trials.clear()

    @cached_property
    def head(self) -> Head | None:
        """The tuned head or None; it must have been trained on this base model's vectors."""
        if self.settings.head is None:
            return None
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
            folder = self.path if Path(self.path).is_dir() else torch_backend.loaded_from(model)
            if Path(name).exists():
                name = Path(name).resolve().name
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else model.get_sentence_embedding_dimension()
        return ModelIdentity(
            name=name,
            path=str(folder or self.path),
            dim=int(dim),
            max_seq_length=int(model.max_seq_length),
            # The converted model's hash is its source's: IR files are derived data.
            weights_sha256=self._weights_sha256 if self.backend == "openvino" else weights_hash(folder),
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
        if self.backend == "openvino":
            yield model.embed
            return
        import torch

        with torch.inference_mode():
            yield lambda batch: torch_backend.forward(model, batch)

    def embed_chunks(self, chunks: Sequence[Chunk]) -> tuple[np.ndarray, list[int]]:
        """Vectors for chunks, and how many model windows each used. ``pool`` chunks are
        the re-normalised mean of windows covering the whole text; ``truncate`` chunks
        embed the first window only; everything else is embedded as is."""
        plan = plan_windows(chunks, self.window, self.settings.pool_overlap)
        vecs = self.encode(plan.texts, n_tokens=plan.counts)
        # The head acts on the final vector (after pooling): it was trained on such
        # vectors, and a stored base vector is then all a re-embedding pass needs.
        if len(plan.texts) == len(chunks):
            return self.apply_head(vecs), plan.n_windows
        return self.apply_head(pool(vecs, plan.owners, len(chunks))), plan.n_windows

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


_EMBEDDERS: dict[EmbedderSettings, Embedder] = {}


def get_embedder(settings: EmbedderSettings) -> Embedder:
    """One loaded model per settings per process (tasks in one process share it)."""
    if settings not in _EMBEDDERS:
        _EMBEDDERS[settings] = Embedder(settings)
    return _EMBEDDERS[settings]
