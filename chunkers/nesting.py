"""Small-to-big: which chunk of a coarser strategy holds a chunk of a finer one.

Every strategy cuts the same document text and keeps offsets, so a sentence hit names
its paragraph (and a paragraph its article) by offsets alone. Pure: spans in, spans out.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Generic, Iterable, Iterator, Sequence, TypeVar

# Finest first; a strategy may return the chunks of any strategy after it.
GRANULARITY = ("sentence", "paragraph", "article")

T = TypeVar("T")
H = TypeVar("H")


def parse_pair(value: str) -> tuple[str, str]:
    """``'sentence->paragraph'`` -> ``('sentence', 'paragraph')``, or ValueError naming
    the value and the reason (unknown strategy, or a target that is not coarser)."""
    child, arrow, parent = (part.strip() for part in value.partition("->"))
    if not arrow:
        raise ValueError(f"small-to-big expects CHILD->PARENT (e.g. sentence->paragraph), got {value!r}")
    check_coarser(child, parent)
    return child, parent


def check_coarser(child: str, parent: str) -> None:
    """ValueError unless ``parent`` is a strictly coarser strategy than ``child``."""
    for name in (child, parent):
        if name not in GRANULARITY:
            raise ValueError(f"unknown strategy {name!r} (known: {', '.join(GRANULARITY)})")
    if GRANULARITY.index(parent) <= GRANULARITY.index(child):
        coarser = GRANULARITY[GRANULARITY.index(child) + 1:]
        raise ValueError(f"{child} chunks can only return a coarser strategy "
                         f"({', '.join(coarser) or 'none is coarser than article'}), not {parent!r}")


class Parents(Generic[T]):
    """The chunks of one coarse strategy, by document, for finding the one that holds
    a span: the parent that overlaps the span most (the first one on a tie, so the
    answer never depends on input order). ``items`` are ``(doc_id, start, end, value)``."""

    def __init__(self, items: Iterable[tuple[str, int, int, T]]) -> None:
        by_doc: dict[str, list[tuple[int, int, T]]] = {}
        for doc_id, start, end, value in items:
            by_doc.setdefault(doc_id, []).append((int(start), int(end), value))
        self._docs = {d: sorted(spans, key=lambda s: (s[0], s[1])) for d, spans in by_doc.items()}
        self._starts = {d: [s[0] for s in spans] for d, spans in self._docs.items()}
        # The furthest end of each prefix of a document's parents (non-decreasing), so the
        # first parent that can reach past a span's start is found by bisection: a lookup
        # costs O(log parents + the parents overlapping it), not a pass over every parent
        # before it (minutes of small-to-big scoring on long documents).
        self._reach = {d: list(_running_max(s[1] for s in spans)) for d, spans in self._docs.items()}

    def holding(self, doc_id: str, start: int, end: int) -> T | None:
        """The value of the parent of ``doc_id`` that overlaps ``[start, end)`` most, or
        None when no parent of that document overlaps it."""
        spans = self._docs.get(doc_id)
        if not spans:
            return None
        # Parents starting after the span ends cannot overlap it, nor can those before
        # the first whose prefix reaches past its start (all of them end before it).
        stop = bisect.bisect_left(self._starts[doc_id], end if end > start else start + 1)
        first = bisect.bisect_right(self._reach[doc_id], start, 0, stop)
        best, best_overlap = None, 0
        for i in range(first, stop):
            p_start, p_end, value = spans[i]
            overlap = min(end, p_end) - max(start, p_start)
            if end == start and p_start <= start < p_end:
                overlap = 1  # an empty span lies inside the parent holding its position
            if overlap > best_overlap:
                best, best_overlap = value, overlap
        return best


def _running_max(values: Iterable[int]) -> Iterator[int]:
    """The largest value so far, at each position."""
    top = None
    for v in values:
        top = v if top is None or v > top else top
        yield top


def expand(hits: Sequence[H], key: Callable[[H], tuple[str, int, int]], parents: Parents) -> list[tuple[H, Any]]:
    """Each hit's parent, first occurrence only, in the hits' order: ``(hit, parent)``
    pairs where ``key(hit)`` is its ``(doc_id, start, end)`` and parents' values are
    hashable (a position, a chunk id). A hit whose parent was already returned adds
    nothing; a hit with no parent is dropped."""
    seen: set[Any] = set()
    out: list[tuple[H, Any]] = []
    for hit in hits:
        parent = parents.holding(*key(hit))
        if parent is None or parent in seen:
            continue
        seen.add(parent)
        out.append((hit, parent))
    return out
