"""``--precision auto``: the fastest precision that keeps quality on this hardware.

fp16 on CUDA; on a CPU, bf16 when it has bf16 matrix units (Intel AMX, AVX512-BF16),
fp32 otherwise (bf16 emulated in fp32 units is slower than fp32 itself). A candidate
other than fp32 is checked once per model and machine: its vectors of a few probe
texts must stay within a cosine of the fp32 vectors, or auto falls back to fp32 and
says why. The verdict is cached beside the model identities, keyed by the weights,
the device (CPU flags or GPU name), the library versions and the threshold, so later
loads never probe again."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from .identity import identity_cache_dir

log = logging.getLogger("grainline.embedding")

# CPU flags (as /proc/cpuinfo names them) of bf16 matrix units: with either, bf16
# matrix products run natively; without, PyTorch and OpenVINO emulate them.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")

# Texts of the kinds grainline embeds: prose, a title, numbers, a list, a long
# sentence, another script. The last one is near the window's end (over 200 tokens).
PROBES: tuple[str, ...] = (
    "Honeybees dance to tell the hive where flowers are; the waggle run points along the sun's angle.",
    "Tides",
    "In 1969, Apollo 11 landed at 20:17 UTC; the descent used 95% of the fuel margin (about 45 s left).",
    "- flour 500 g\n- water 350 g\n- salt 10 g\n- starter 100 g",
    "Lactic acid bacteria make sourdough sour, and a starter kept at room temperature needs feeding daily.",
    "La marée monte deux fois par jour sous l'effet de la Lune et du Soleil.",
    " ".join(["The committee reviewed the proposal, asked for revised figures on cost and schedule,"
              " and deferred its decision until the next quarterly meeting of the board."] * 7),
)

# Bump when what is cached, or how the verdict is reached, changes.
_FORMAT = 1


@dataclass(frozen=True)
class PrecisionChoice:
    """What auto chose and why; ``min_cosine`` is the probe texts' worst cosine
    against fp32 (None when nothing was probed)."""

    precision: str
    candidate: str
    reason: str
    min_cosine: float | None = None
    cached: bool = False

    def describe(self) -> str:
        """One line for the ingest output and the ledger."""
        return f"{self.precision} (auto: {self.reason})"


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def bf16_units(flags: frozenset[str] | None = None) -> list[str]:
    """The bf16 matrix-unit flags this CPU has (empty: none)."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in BF16_FLAGS if f in flags]


def candidate_for(device: str, flags: frozenset[str] | None = None) -> tuple[str, str]:
    """(the precision auto tries on ``device``, why)."""
    if device.startswith("cuda"):
        return "fp16", "CUDA runs fp16 on its tensor cores"
    if device != "cpu":
        return "fp32", f"fp32 on {device}"
    units = bf16_units(flags)
    if units:
        return "bf16", f"the CPU has bf16 matrix units ({', '.join(units)})"
    return "fp32", "the CPU has no bf16 matrix units (amx_bf16, avx512_bf16), where bf16 is slower than fp32"


def library_version(name: str) -> str | None:
    """An installed distribution's version without importing it (None: not installed)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def choice_key(weights_sha256: str, backend: str, device_id: str, candidate: str, min_cosine: float,
               flags: frozenset[str] | None = None) -> str:
    """The cache key of a verdict: model weights, backend, device (a GPU's name, or the
    CPU's flags), the libraries that compute the vectors, the candidate and the threshold."""
    flags = cpu_flags() if flags is None else flags
    libs = {n: library_version(n) for n in ("torch", "openvino")}
    raw = json.dumps([_FORMAT, weights_sha256, backend, device_id, sorted(flags), libs, candidate, min_cosine])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def cache_dir() -> Path:
    """Where verdicts are cached: beside the model identities."""
    return identity_cache_dir().parent / "precisions"


def read_choice(key: str) -> PrecisionChoice | None:
    """A cached verdict, or None when absent or unreadable."""
    f = cache_dir() / f"{key}.json"
    try:
        raw = json.loads(f.read_text(encoding="utf-8"))
        return PrecisionChoice(**{**{k: raw[k] for k in ("precision", "candidate", "reason", "min_cosine")}, "cached": True})
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a missing or damaged entry only costs a probe


def write_verdict(f: Path, data: dict) -> None:
    """Write a cached verdict as JSON, atomically; a read-only cache is no error (the
    verdict is only reached again next time)."""
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, f)
    except OSError:
        pass


def write_choice(key: str, choice: PrecisionChoice) -> None:
    """Cache a verdict (a read-only cache only costs a probe next time)."""
    write_verdict(cache_dir() / f"{key}.json", {k: v for k, v in asdict(choice).items() if k != "cached"})


def probe_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-text cosine between two sets of (not necessarily normalised) vectors."""
    a = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    b = candidate / np.maximum(np.linalg.norm(candidate, axis=1, keepdims=True), 1e-12)
    return (a.astype(np.float64) * b.astype(np.float64)).sum(axis=1)


def choose(key: str, candidate: str, why: str, min_cosine: float,
           probe: Callable[[str], np.ndarray]) -> PrecisionChoice:
    """The cached verdict for ``key``, or a new one: ``probe(precision)`` gives the
    probe texts' vectors at that precision; the candidate is kept when every text's
    cosine against fp32 reaches ``min_cosine``, else fp32 (logged once: the fallback
    is cached like a success)."""
    cached = read_choice(key)
    if cached is not None:
        return cached
    cos = probe_cosines(probe("fp32"), probe(candidate))
    worst = float(cos.min())
    if worst >= min_cosine:
        choice = PrecisionChoice(candidate, candidate, f"{why}; probe texts within cosine {worst:.5f} of fp32", worst)
    else:
        text = PROBES[int(cos.argmin())]
        reason = (f"{candidate} vectors drift from fp32 (cosine {worst:.5f} < {min_cosine} on probe text "
                  f"{text[:40]!r}), so fp32")
        log.warning("precision auto: %s; this verdict is cached for this model and machine", reason)
        choice = PrecisionChoice("fp32", candidate, reason, worst)
    write_choice(key, choice)
    return choice
