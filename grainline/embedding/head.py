"""A tuned head: a residual linear map applied to the base model's final vectors,
saved as ``head.safetensors`` plus ``head.json`` (training metadata, weights hash).

The map is re-normalised::

    out = normalize(x + x W^T + b)

W and b start at zero, so an untrained head is the identity (up to the unit norm the
base vectors already have). Training lives in :mod:`grainline.tuning`; this module only
loads, checks and applies heads, which is all embedding needs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .identity import ModelIdentity

HEAD_WEIGHTS = "head.safetensors"
HEAD_META = "head.json"
HEAD_FORMAT = "grainline-head"
HEAD_FORMAT_VERSION = 1


@dataclass
class Head:
    """Trained weights and what is known about how they were made."""

    weight: np.ndarray  # (dim, dim) float32
    bias: np.ndarray  # (dim,) float32
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def identity(cls, dim: int, meta: dict[str, Any] | None = None) -> "Head":
        """The zero-initialised head: it changes no unit vector."""
        return cls(np.zeros((dim, dim), np.float32), np.zeros(dim, np.float32), dict(meta or {}))

    @property
    def dim(self) -> int:
        return int(self.bias.shape[0])

    @property
    def sha256(self) -> str:
        """Hash of the weights (float32, row-major): a head's identity."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.weight, dtype="<f4").tobytes())
        h.update(np.ascontiguousarray(self.bias, dtype="<f4").tobytes())
        return h.hexdigest()

    @property
    def hash8(self) -> str:
        return self.sha256[:8]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Tuned, L2-normalised float32 vectors for base vectors ``x`` (n, dim)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"head takes ({self.dim})-d vectors, got shape {x.shape}")
        y = x + x @ self.weight.T + self.bias
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return (y / np.where(norms == 0, 1.0, norms)).astype(np.float32)

    def save(self, folder: str | Path) -> Path:
        """Write ``head.safetensors`` and ``head.json`` (metadata and weights hash)."""
        from safetensors.numpy import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        save_file({"weight": np.ascontiguousarray(self.weight, np.float32), "bias": np.ascontiguousarray(self.bias, np.float32)},
                  str(out / HEAD_WEIGHTS))
        meta = {"format": HEAD_FORMAT, "version": HEAD_FORMAT_VERSION, **self.meta, "dim": self.dim, "weights_sha256": self.sha256}
        (out / HEAD_META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, folder: str | Path) -> "Head":
        """Read a saved head, checking that the weights still match their recorded hash."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        check_head_folder(folder)
        try:
            meta = json.loads((folder / HEAD_META).read_text(encoding="utf-8"))
            tensors = load_file(str(folder / HEAD_WEIGHTS))
            head = cls(tensors["weight"].astype(np.float32), tensors["bias"].astype(np.float32), meta)
        except (json.JSONDecodeError, KeyError, OSError, ValueError) as exc:
            raise ValueError(f"cannot read the head in {folder}: {exc!r}") from None
        if head.weight.shape != (head.dim, head.dim):
            raise ValueError(f"{folder / HEAD_WEIGHTS}: weight shape {head.weight.shape} does not match bias ({head.dim},)")
        if meta.get("weights_sha256") != head.sha256:
            raise ValueError(f"{folder / HEAD_WEIGHTS}: weights hash {head.sha256[:12]} differs from the one in {HEAD_META} "
                             f"({str(meta.get('weights_sha256'))[:12]}); the files do not belong together")
        return head


def check_head_folder(folder: str | Path) -> Path:
    """The folder, if it holds a saved head; otherwise a clear error."""
    p = Path(folder)
    missing = [n for n in (HEAD_META, HEAD_WEIGHTS) if not (p / n).is_file()]
    if missing:
        raise ValueError(f"head {str(folder)!r} is not a saved head folder (missing {', '.join(missing)}); "
                         "write one with `grainline tune train`")
    return p


def base_identity_of(head: Head) -> ModelIdentity:
    """The ``ModelIdentity`` of the base model a head was trained on (from its metadata)."""
    base = head.meta.get("base_model")
    if not isinstance(base, dict):
        raise ValueError("the head's metadata has no 'base_model'; it cannot name the base model's table")
    return ModelIdentity(**{f.name: base[f.name] for f in fields(ModelIdentity) if f.name in base})
