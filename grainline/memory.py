"""Giving freed memory back to the operating system between the phases of a run.

Embedding batches leave the C heap (PyTorch's CPU tensors, LanceDB's buffers) full
of freed blocks that glibc keeps for reuse; the table maintenance that follows
(compaction, index training) then allocates on top of them, so a run's peak RSS
would be the sum of two phases that never need their memory at the same time."""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _libc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only (musl has no malloc_trim)
    except (OSError, AttributeError):
        return None
    return libc


def release_memory() -> bool:
    """Collect garbage and return freed heap pages (glibc ``malloc_trim``) and Arrow's
    unused pool memory to the operating system. True when the heap was trimmed; on
    other platforms only the garbage is collected."""
    gc.collect()
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


# glibc's mallopt parameter for the number of malloc arenas.
_M_ARENA_MAX = -8
# Lance reads files with this many threads on a local disk by default.
_LANCE_LOCAL_IO_THREADS = 8


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 2


@lru_cache(maxsize=1)
def bound_native_memory() -> dict[str, str]:
    """Bound what the native libraries hold beside the data they work on, once per
    process, before the first table is opened (``storage.chunks.connect`` calls it for
    a local database); returns what was set.

    Building a vector index over 450,000 384-d rows peaked 590 MiB above the process's
    start on a 2-core AMD EPYC; with these two settings, 290 MiB (docs/benchmark.md):

    - glibc keeps up to 8 malloc arenas per CPU, one per thread that allocated at the
      same time as another, each holding its freed blocks: capped at one per CPU
      (``mallopt(M_ARENA_MAX)``), unless ``MALLOC_ARENA_MAX`` is set;
    - Lance reads a local table with 8 I/O threads, each with its read-ahead buffers,
      whatever the CPUs: one per CPU (at least 2: with 1 the index build hung; at most
      Lance's 8) through ``LANCE_IO_THREADS``, unless it is set. Object stores want
      many requests in flight and keep Lance's own default: ``connect`` calls this for
      local databases only."""
    done: dict[str, str] = {}
    cpus = max(2, _cpus())
    libc = _libc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ and libc.mallopt(_M_ARENA_MAX, cpus):
        done["malloc_arena_max"] = str(cpus)
    if "LANCE_IO_THREADS" not in os.environ:
        os.environ["LANCE_IO_THREADS"] = done["LANCE_IO_THREADS"] = str(min(_LANCE_LOCAL_IO_THREADS, cpus))
    return done
