"""Where a batch's vectors come from before the model is asked: this run's recent
vectors (a bounded map), then the table as it was when the run started, then the
``reuse_from`` tables. Each lookup costs what the batch holds: the table is read at the
run's starting version, whose rows the ``content_hash`` scalar index covers (maintenance
builds it), so the rows this run adds are never scanned batch after batch; those are
found in the run's own map instead."""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Iterable

import numpy as np

from grainline.storage.chunks import ChunkStore

# Vectors this run made or reused, kept per process for the texts that repeat within a
# run (boilerplate, copied documents): 32,768 of them are 48 MiB at 384 dimensions. A
# text seen again after that many others is found in the table or embedded again (the
# same vector: the model is deterministic), so memory stays bounded on any run.
RECENT_VECTORS = 32_768


class RecentVectors:
    """A bounded, thread-safe map content hash -> (vector, windows), least recently
    used out first."""

    def __init__(self, limit: int = RECENT_VECTORS) -> None:
        self.limit = limit
        self._items: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, hashes: Iterable[str]) -> dict[str, tuple[np.ndarray, int]]:
        """The entries held for these hashes."""
        out = {}
        with self._lock:
            for h in hashes:
                hit = self._items.get(h)
                if hit is not None:
                    self._items.move_to_end(h)
                    out[h] = hit
        return out

    def put_many(self, items: dict[str, tuple[np.ndarray, int]]) -> None:
        """Remember these entries, forgetting the oldest past the limit. A vector is
        kept as a copy of its own: a row of a batch's array would keep the whole array
        alive for as long as the entry lives."""
        with self._lock:
            for h, (vec, windows) in items.items():
                if h in self._items:
                    self._items.move_to_end(h)
                else:
                    self._items[h] = (np.array(vec, copy=True), windows)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


_recent: OrderedDict[str, RecentVectors] = OrderedDict()
_recent_lock = threading.Lock()


def recent_vectors(run_id: str) -> RecentVectors:
    """This process's map for run ``run_id`` (the two newest runs' maps are kept)."""
    with _recent_lock:
        rv = _recent.get(run_id)
        if rv is None:
            rv = _recent[run_id] = RecentVectors()
            while len(_recent) > 2:
                _recent.popitem(last=False)
        return rv


@lru_cache(maxsize=4)
def snapshot_store(db: str, table: str, dim: int, version: int | None, run_id: str) -> ChunkStore:
    """The chunks table as run ``run_id`` found it (``version``), read-only, opened once
    per run and process; at its latest version when ``version`` is None."""
    store = ChunkStore(db, table, dim)
    if version is not None and store.exists:
        store.checkout(version)
    return store


def known_vectors(store: ChunkStore | None, donors: Iterable[ChunkStore], recent: RecentVectors | None,
                  hashes: set[str]) -> dict[str, tuple[np.ndarray, int]]:
    """Stored vectors (and window counts) for as many of ``hashes`` as are known: the
    run's recent map first, then ``store``, then each donor table."""
    known = recent.get_many(hashes) if recent is not None else {}
    for source in ([store] if store is not None else []) + list(donors):
        missing = hashes - known.keys()
        if not missing:
            break
        if source.exists:
            known.update(source.vectors_by_hash(missing))
    return known
