"""A run's sets of ids held as 8-byte hashes (:class:`HashedIds`): the documents it saw,
the files it saw or skipped unread. As a ``set`` of strings each id cost about 150
bytes (the set's slot and the string it kept alive), a million documents 150 MB per
set; as hashes, 8 MB."""

from __future__ import annotations

from array import array
from typing import Iterable, Sequence

import numpy as np


class HashedIds:
    """Ids added one at a time, asked about at the end: the 64-bit ``hash`` of each
    (stable within the process), appended to an array, merged into one sorted array
    the first time it is asked.

    Exact unless two different ids share a hash (for a million ids about 3 in 100
    million runs, and hardly ever the same pair twice: ``hash`` is seeded per process).
    A caller asks it only where such a false "seen" keeps something until a later run
    (a stored document of a file gone not deleted, the manifest entry of a file gone
    not dropped), never where it would make a run skip or drop a file it should read."""

    __slots__ = ("_new", "_sorted")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._new = array("q", (hash(i) for i in ids))
        self._sorted = np.empty(0, dtype=np.int64)

    def add(self, key: str) -> None:
        """Remember ``key``."""
        self._new.append(hash(key))

    def _merged(self) -> np.ndarray:
        if self._new:
            self._sorted = np.union1d(self._sorted, np.frombuffer(self._new, dtype=np.int64))
            self._new = array("q")
        return self._sorted

    def contains_many(self, keys: Sequence[str]) -> np.ndarray:
        """A boolean per key: whether it was added."""
        if not keys:
            return np.zeros(0, dtype=bool)
        known = self._merged()
        if not len(known):
            return np.zeros(len(keys), dtype=bool)
        # A binary search of the sorted hashes: asked a batch at a time, a sort of
        # everything per question (``np.isin``) would cost the whole set each time.
        asked = np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys))
        at = np.minimum(np.searchsorted(known, asked), len(known) - 1)
        return known[at] == asked

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self.contains_many([key])[0])

    def __len__(self) -> int:
        """How many different hashes it holds."""
        return len(self._merged())

    def __bool__(self) -> bool:
        return bool(self._new) or bool(len(self._sorted))

    def clear(self) -> None:
        """Forget every id."""
        self._new = array("q")
        self._sorted = np.empty(0, dtype=np.int64)
