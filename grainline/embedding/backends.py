"""``--backend auto``: the fastest backend whose vectors are torch fp32's on this machine.

On a CPU, the OpenVINO conversion of a model is an exact stand-in for torch: every
conversion is refused unless its token ids equal sentence-transformers' and its fp32
vectors reach a cosine of 0.9999 against torch's on the probe texts
(``openvino_backend._check_conversion``), so its vectors share the fp32 table. Which of
the two is faster depends on the CPU, so auto times both once per model and machine,
on a fixed mix of short and paragraph-long texts, and keeps the faster. The verdict is
cached beside the model identities, keyed by the weights, the precision setting, the
CPU's flags and the library versions, so later loads never time again and, when
OpenVINO wins, never import torch at all.

Auto stays on torch without timing anything where the choice is not open: a GPU (or a
device other than the CPU), fp16, int8 (each backend's int8 vectors differ and have a
table of their own: OpenVINO's int8 is opt-in with ``--backend openvino``), or OpenVINO
not installed (the reason names the install command)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from .identity import identity_cache_dir
from .precision import PROBES, cpu_flags, library_version, write_verdict

log = logging.getLogger("grainline.embedding")

INSTALL = 'pip install "grainline[openvino]"'
# Bump when what is cached, or how the verdict is reached, changes.
_FORMAT = 1
# Texts timed per backend (paragraphs of the bundled demo corpus and their first sentences).
TIMING_TEXTS = 48


@dataclass(frozen=True)
class BackendChoice:
    """Which backend computes the vectors and why; ``speedup`` is torch's time over
    OpenVINO's on the timing texts (None when nothing was timed)."""

    backend: str
    reason: str
    auto: bool = True
    speedup: float | None = None
    cached: bool = False

    def describe(self) -> str:
        """One line for the ingest output and the ledger."""
        return f"{self.backend} (auto: {self.reason})" if self.auto else self.backend


def gpu_present() -> bool:
    """Whether this machine has a GPU torch could run on (an NVIDIA driver, or a Mac's
    MPS), found without importing torch."""
    return Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists() or sys.platform == "darwin"


def openvino_installed() -> bool:
    """Whether the openvino extra is installed (found without importing it)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def fixed_choice(device: str, precision: str) -> BackendChoice | None:
    """Auto's verdict where nothing needs timing (torch, and why), else None."""
    if device not in ("auto", "cpu"):
        return BackendChoice("torch", f"device {device} runs on torch")
    if device == "auto" and gpu_present():
        return BackendChoice("torch", "this machine has a GPU, which torch runs on")
    if precision == "fp16":
        return BackendChoice("torch", "fp16 runs on torch")
    if precision == "int8":
        return BackendChoice("torch", "int8 vectors differ per backend, each in a table of its own; "
                                      "--backend openvino chooses OpenVINO's int8")
    if not openvino_installed():
        return BackendChoice("torch", f"OpenVINO, often faster on a CPU, is not installed: {INSTALL}")
    return None


def choice_key(weights_sha256: str, precision: str, flags: frozenset[str] | None = None) -> str:
    """The cache key of a verdict: model weights, precision setting, the CPU's flags and
    the libraries that compute the vectors."""
    flags = cpu_flags() if flags is None else flags
    libs = {n: library_version(n) for n in ("torch", "openvino", "sentence-transformers", "transformers", "tokenizers")}
    raw = json.dumps([_FORMAT, weights_sha256, precision, sorted(flags), libs, os.cpu_count()])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def cache_dir() -> Path:
    """Where verdicts are cached: beside the model identities."""
    return identity_cache_dir().parent / "backends"


def read_choice(key: str) -> BackendChoice | None:
    """A cached verdict, or None when absent or unreadable."""
    try:
        raw = json.loads((cache_dir() / f"{key}.json").read_text(encoding="utf-8"))
        return BackendChoice(raw["backend"], raw["reason"], True, raw.get("speedup"), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a missing or damaged entry only costs a timing


def write_choice(key: str, choice: BackendChoice) -> None:
    """Cache a verdict (a read-only cache only costs a timing next time)."""
    write_verdict(cache_dir() / f"{key}.json",
                  {k: v for k, v in asdict(choice).items() if k not in ("cached", "auto")})


def timing_texts(limit: int = TIMING_TEXTS) -> list[str]:
    """A fixed mix of the lengths grainline embeds: demo-corpus paragraphs and their
    first sentences (the probe texts where the corpus is missing)."""
    from .openvino_backend import calibration_texts

    try:
        paragraphs = calibration_texts(limit=limit)
    except (OSError, ValueError):
        return list(PROBES)
    return paragraphs + [p.split(". ")[0] for p in paragraphs]


def choose(key: str, encoder_for: Callable[[str], Callable[[Sequence[str]], object]],
           texts: Sequence[str] | None = None) -> BackendChoice:
    """The cached verdict for ``key``, or a new one: ``encoder_for(backend)`` gives that
    backend's encode function (loading, and for OpenVINO converting, the model). Each
    is timed three times, interleaved, on the timing texts after a warm-up; the faster
    (best of three) wins.
    A conversion OpenVINO refuses (the model drifts, or cannot be traced) leaves torch,
    saying why; that verdict is cached like a timing."""
    cached = read_choice(key)
    if cached is not None:
        return cached
    texts = list(texts if texts is not None else timing_texts())
    pt = encoder_for("torch")
    try:
        ov = encoder_for("openvino")
    except (ValueError, RuntimeError, OSError) as exc:
        choice = BackendChoice("torch", f"OpenVINO could not take this model ({exc})")
        log.warning("backend auto: %s; this verdict is cached for this model and machine", choice.reason)
        write_choice(key, choice)
        return choice
    best = {"torch": float("inf"), "openvino": float("inf")}
    for encode in (pt, ov):
        encode(texts[:8])  # warm-up: first-call allocations and kernel selection
    for _ in range(3):
        for name, encode in (("torch", pt), ("openvino", ov)):
            t0 = time.perf_counter()
            encode(texts)
            best[name] = min(best[name], time.perf_counter() - t0)
    speedup = best["torch"] / best["openvino"]
    if speedup >= 1.0:
        reason = (f"OpenVINO embeds {speedup:.2f}x as fast as torch on this CPU, with torch fp32's vectors "
                  f"(cosine >= 0.9999, checked at conversion)")
        choice = BackendChoice("openvino", reason, True, round(speedup, 3))
    else:
        choice = BackendChoice("torch", f"torch embeds {1 / speedup:.2f}x as fast as OpenVINO on this CPU", True,
                               round(speedup, 3))
    write_choice(key, choice)
    return choice
