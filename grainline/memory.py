"""Giving freed memory back to the operating system between the phases of a run.

Embedding batches leave the C heap (PyTorch's CPU tensors, LanceDB's buffers) full
of freed blocks that glibc keeps for reuse; the table maintenance that follows
(compaction, index training) then allocates on top of them, so a run's peak RSS
would be the sum of two phases that never need their memory at the same time."""

from __future__ import annotations

import ctypes
import gc
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
