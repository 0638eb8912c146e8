"""The OpenVINO backend: a sentence-transformers model converted once to OpenVINO IR
(optionally quantised to int8 by NNCF), cached on disk, and run without torch.

sentence-transformers' own OpenVINO backend needs optimum-intel, which cannot be
installed beside transformers 5; OpenVINO and NNCF themselves can, so grainline
converts the model's whole forward pass (transformer, pooling, dense layers,
normalisation) with ``openvino.convert_model`` and feeds it the model's own tokenizer.
Every conversion is checked against the torch model before it is cached."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

import grainline

from .identity import identity_cache_dir

INSTALL = 'pip install "grainline[openvino]"'
# Bump when how the IR is built changes: older cache entries are then ignored.
_FORMAT = 1
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# int8 calibration: this many texts, from the bundled demo corpus unless told otherwise.
CALIBRATION_TEXTS = 300
# Texts whose tokenization and vectors every conversion must reproduce before it is cached.
_PROBES = (
    "A short sentence.",
    "Bees dance to tell the hive where the flowers are, and how far away they grow.",
    "  Leading and trailing spaces, UPPER case, digits 12345 and punctuation?!  ",
    "Ünïcödé, emoji 🐝 and CJK 蜜蜂 text.",
    "word " * 400,  # longer than the model's window: truncation must match
)


def require() -> Any:
    """Import openvino, or say how to install it."""
    try:
        with _telemetry_declined():  # importing it sends an event
            import openvino
    except ImportError as exc:
        raise RuntimeError(f"backend 'openvino' needs OpenVINO and NNCF: {INSTALL}") from exc
    return openvino


def calibration_texts(source: str | None = None, limit: int = CALIBRATION_TEXTS) -> list[str]:
    """Paragraphs for int8 calibration, in a fixed order: from ``source`` (anything
    grainline reads), by default the bundled demo corpus."""
    from grainline.documents import Document
    from grainline.readers import iter_documents

    src = source or str(grainline.DEMO_CORPUS)
    if not Path(src).exists():
        raise FileNotFoundError(
            f"int8 calibration texts not found at {src}; give EmbedderSettings(calibration=PATH) "
            "(a folder or file of documents)"
        )
    texts: list[str] = []
    for doc in iter_documents(src):
        if isinstance(doc, Document):
            texts.extend(p.strip() for p in doc.text.split("\n\n") if len(p.strip()) > 20)
    if not texts:
        raise ValueError(f"no calibration text found in {src}")
    return texts[:limit]


def cache_dir() -> Path:
    """Where converted models live: ``$GRAINLINE_CACHE_DIR/openvino`` (or ~/.cache/grainline)."""
    return identity_cache_dir().parent / "openvino"


def calibration_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class IRKey:
    """What a converted model depends on."""

    weights_sha256: str
    quantized: bool
    calibration_sha256: str = ""

    @property
    def folder(self) -> Path:
        raw = f"{_FORMAT}|{self.weights_sha256}|{int(self.quantized)}|{self.calibration_sha256}"
        kind = "int8" if self.quantized else "fp32"
        return cache_dir() / f"{self.weights_sha256[:16]}-{kind}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"


class OpenVINOModel:
    """A converted model: what :class:`grainline.embedding.Embedder` needs from a model
    (``tokenizer``, ``max_seq_length``, ``get_embedding_dimension``) plus ``embed``."""

    def __init__(self, folder: Path, inference_precision: str | None) -> None:
        ov = require()
        self.folder = folder
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        self.max_seq_length = int(meta["max_seq_length"])
        self.dim = int(meta["dim"])
        self.inputs = list(meta["inputs"])
        self.source = meta.get("source")
        self._padding = meta["padding"]
        config: dict[str, str] = {}
        if inference_precision:
            config["INFERENCE_PRECISION_HINT"] = inference_precision
        core = ov.Core()
        self._compiled = core.compile_model(core.read_model(folder / "model.xml"), "CPU", config)
        # An infer request runs one inference at a time ("Infer Request is busy" from a
        # second thread), and an ingestion embeds from several task threads: they take
        # turns on the one request (each inference already uses every core), and the
        # shared Rust tokenizer is used under the same lock.
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()

    @cached_property
    def tokenizer(self) -> Any:
        """The model's Rust tokenizer (transformers' wrapper would import torch)."""
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(self.folder / "tokenizer.json"))

    @cached_property
    def _batch_tokenizer(self) -> Any:
        # Padded and cut at the window as sentence-transformers' text path does it
        # (longest_first truncation, the model's pad token and side).
        import copy

        tok = copy.deepcopy(self.tokenizer)
        tok.enable_truncation(self.max_seq_length, strategy="longest_first")
        tok.enable_padding(direction=self._padding["side"], pad_id=self._padding["id"],
                           pad_type_id=self._padding["type_id"], pad_token=self._padding["token"])
        return tok

    def get_embedding_dimension(self) -> int:
        return self.dim

    def features(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Token ids as sentence-transformers' text path makes them (padded, cut at the window)."""
        encs = self._batch_tokenizer.encode_batch(list(texts))
        field = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        return {k: np.asarray([getattr(e, field[k]) for e in encs], dtype=np.int64) for k in self.inputs}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The model's sentence embeddings (as its own modules leave them) for one batch."""
        with self._lock:
            out = self._request.infer(self.features(texts))
            # A copy: the output tensor is the request's buffer, overwritten by its next call.
            return np.array(out[self._compiled.output(0)], dtype=np.float32)


def load(st_path: str, weights_sha256: str, precision: str, calibration: str | None = None) -> OpenVINOModel:
    """The converted model for these weights, building and caching it on first use.
    ``precision``: fp32 or bf16 (one fp32 IR, run at that precision), int8 (an NNCF
    post-training quantised IR), or auto (OpenVINO's choice: bf16 where the CPU has it)."""
    require()
    quantized = precision == "int8"
    calib = calibration_texts(calibration) if quantized else []
    key = IRKey(weights_sha256, quantized, calibration_hash(calib) if quantized else "")
    if not (key.folder / "meta.json").is_file():
        build(st_path, key.folder, calib)
    hint = {"fp32": "f32", "bf16": "bf16"}.get(precision)
    return OpenVINOModel(key.folder, hint)


def _forward_module(st: Any) -> Any:
    """The torch module whose forward is the sentence-transformers pipeline from token
    ids to the sentence embedding (defined here: torch is imported only to convert)."""
    import torch

    class Forward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            feats = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                feats["token_type_ids"] = token_type_ids
            return self.st(feats)["sentence_embedding"]

    return Forward().eval()


@contextmanager
def _telemetry_declined() -> Iterator[None]:
    """OpenVINO's converter and NNCF send usage telemetry (from a forked process) unless
    the user opted out with ``opt_in_out --opt_out``. grainline converts a model as one
    step of a batch job, which must not reach the network or fork beside LanceDB's
    runtime: inside this block their consent check answers no."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # no telemetry package, nothing to decline
        yield
        return
    original = OptInChecker.check
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED  # type: ignore[method-assign]
    try:
        yield
    finally:
        OptInChecker.check = original  # type: ignore[method-assign]


def build(st_path: str, folder: Path, calibration: Sequence[str]) -> None:
    """Convert (and with ``calibration`` texts, quantise) the model into ``folder``.
    Written to a temporary folder and renamed, so concurrent builders never see half a model."""
    with _telemetry_declined():
        _build(st_path, folder, calibration)


def _build(st_path: str, folder: Path, calibration: Sequence[str]) -> None:
    ov = require()
    import torch
    from sentence_transformers import SentenceTransformer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    st = SentenceTransformer(st_path, device="cpu")
    example = st.preprocess(list(_PROBES[:2]))
    inputs = [k for k in _INPUTS if k in example]
    extra = sorted(k for k, v in example.items() if isinstance(v, torch.Tensor) and k not in _INPUTS)
    if "input_ids" not in inputs or "attention_mask" not in inputs or extra:
        raise ValueError(
            f"backend 'openvino' converts text transformer models (inputs {', '.join(_INPUTS)}); "
            f"model {st_path!r} takes {', '.join(sorted(k for k in example if isinstance(example[k], torch.Tensor)))}"
        )
    with torch.inference_mode():
        reference = torch.nn.functional.normalize(st.encode(list(_PROBES), convert_to_tensor=True).float(), dim=1).numpy()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Tracing warns about shape checks in the attention code that hold for every input.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            model = ov.convert_model(_forward_module(st), example_input={k: example[k] for k in inputs})
        hf_tok = st.tokenizer
        if not getattr(hf_tok, "is_fast", False):
            raise ValueError(f"backend 'openvino' needs a fast (Rust) tokenizer; model {st_path!r} has none")
        hf_tok.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        dim = st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension") else st.get_sentence_embedding_dimension()
        padding = {"side": hf_tok.padding_side, "id": hf_tok.pad_token_id, "type_id": hf_tok.pad_token_type_id,
                   "token": hf_tok.pad_token}
        meta = {"format": _FORMAT, "source": st_path, "max_seq_length": int(st.max_seq_length), "dim": int(dim),
                "inputs": inputs, "padding": padding, "quantized": bool(calibration),
                "calibration_texts": len(calibration)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
        converted = OpenVINOModel(tmp, "f32")
        _check_conversion(st, converted, reference)
        if calibration:
            import nncf

            calibrated = nncf.quantize(
                model,
                nncf.Dataset(list(calibration), lambda text: converted.features([text])),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(calibration),
            )
            ov.save_model(calibrated, str(tmp / "model.xml"), compress_to_fp16=False)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first; theirs is as good
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_conversion(st: Any, converted: OpenVINOModel, reference: np.ndarray) -> None:
    """Refuse a conversion whose token ids or fp32 vectors differ from the torch model's."""
    for text in _PROBES:
        ours = converted.features([text])["input_ids"][0].tolist()
        theirs = st.preprocess([text])["input_ids"][0].tolist()
        if ours != theirs:
            raise ValueError(
                f"backend 'openvino' cannot reproduce the input processing of model {converted.source!r} "
                f"(token ids differ on {text[:40]!r}); use backend 'torch'"
            )
    got = converted.embed(list(_PROBES))
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    worst = float((got * reference).sum(axis=1).min())
    if worst < 0.9999:
        raise ValueError(f"the OpenVINO conversion of {converted.source!r} drifts from torch (cosine {worst:.5f}); use backend 'torch'")
