"""What a chunks table holds of each document (``doc_id`` -> :class:`DocState`), read
as a run needs it: the documents of each batch looked up by ``doc_id`` (its scalar
index), or the whole table in one scan once that is the cheaper way.

A scheduled run over a big table reads few documents (most files are skipped unread by
the source manifest), so reading every document's state first, as a run once did, made
a run cost in proportion to the table: 0.39 s at 100,000 documents before anything was
done. A first ingestion, or a run that reads most of a big source, looks up so many
documents that one scan is cheaper: the lookups' time is counted, and once it passes
what a scan of the table is estimated to cost, the table is scanned (the rent-or-buy
rule: never more than twice the cheaper of the two). Not past :data:`SCAN_MAX_ROWS`,
though: every state in memory is about 480 bytes a document, so a big change to a
table of millions of documents goes on looking its documents up, a batch at a time,
and holds what it has in flight."""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator

# What scanning the doc states costs a row (Zen 4: 0.39 s for 454k rows), for the
# rent-or-buy rule; a scan of an empty or small table is cheaper than any lookup.
SCAN_SECONDS_PER_ROW = 1e-6
LOOKUP_IDS = 2000  # ids per lookup query
# The biggest table whose states are read whole (about 220,000 documents of 4-5 rows:
# some 100 MB of states).
SCAN_MAX_ROWS = 1_000_000


class DocStates:
    """doc_id -> :class:`~storage.chunks.DocState` of one chunks table, as a run sees it:
    what the table held when it was read, updated by the run's own writes
    (:meth:`setdefault`, :meth:`pop`). The run holds the table's write lock, so the
    table changes only through those writes."""

    def __init__(self, store: Any, rows: int | None = None) -> None:
        self.store = store
        self._known: dict[str, Any] = {}  # a state, or None: the table holds nothing of it
        self._whole = not store.exists
        # Some states were let go (:meth:`evict`): the others still answer as before,
        # but not every stored document's state is in memory any more.
        self._evicted = False
        self._rows = store.count() if rows is None else rows
        self._scan_cost = self._rows * SCAN_SECONDS_PER_ROW
        self._lookup_spent = 0.0
        self.lookups = 0  # queries made, for the tests and the bench

    @property
    def whole(self) -> bool:
        """Whether every document's state is in memory (the table was scanned, and
        nothing evicted since)."""
        return self._whole and not self._evicted

    def prefetch(self, doc_ids: Iterable[str]) -> None:
        """Read the states of these documents (those not known yet) in one lookup, or
        the whole table once the lookups have cost what its scan would."""
        if self._whole:
            return
        missing = [d for d in dict.fromkeys(doc_ids) if d not in self._known]
        if not missing:
            return
        if self._lookup_spent >= self._scan_cost and self._rows <= SCAN_MAX_ROWS:
            self.load_all()
            return
        t0 = time.perf_counter()
        for i in range(0, len(missing), LOOKUP_IDS):
            part = missing[i:i + LOOKUP_IDS]
            found = self.store.doc_states_of(part)
            self.lookups += 1
            for d in part:
                self._known[d] = found.get(d)
        self._lookup_spent += time.perf_counter() - t0

    def load_all(self) -> None:
        """Scan the table once: every document's state from now on. Reads every row, so
        a damaged fragment fails here."""
        if not self.whole:
            self._known = dict(self.store.doc_states())
            self._whole, self._evicted = True, False

    def get(self, doc_id: str, default: Any = None) -> Any:
        """The document's state, or ``default`` when the table holds nothing of it."""
        if not self._whole and doc_id not in self._known:
            self.prefetch((doc_id,))
        st = self._known.get(doc_id)
        return default if st is None else st

    def setdefault(self, doc_id: str, state: Any) -> Any:
        """The document's state; ``state`` (stored) when the table holds nothing of it."""
        st = self.get(doc_id)
        if st is None:
            st = self._known[doc_id] = state
        return st

    def pop(self, doc_id: str, default: Any = None) -> Any:
        """Forget a document the run deleted: the table holds nothing of it now."""
        st = self.get(doc_id)
        if self._whole:
            self._known.pop(doc_id, None)
        else:
            self._known[doc_id] = None
        return default if st is None else st

    def evict(self, doc_ids: Iterable[str]) -> None:
        """Let go of these documents' states: the run has written them (or found them
        unchanged) and does not ask for them again, since a run reads each document
        once. What a first ingestion of a million documents holds is then the states
        of the documents in flight, not of every one it wrote. Asked again, a state
        evicted after a scan would read as not stored: :attr:`whole` turns False, so
        whoever needs every state reads the table again."""
        known = self._known
        for d in doc_ids:
            if known.pop(d, None) is not None and self._whole:
                self._evicted = True

    @property
    def held(self) -> int:
        """How many documents' states (or 'not stored' answers) are in memory."""
        return len(self._known)

    def forget(self) -> None:
        """Let go of every state in memory (a run's last batch is written and its
        deletions made): the next question reads the table again. What a run held of
        100,000 documents is then handed back before maintenance allocates."""
        self._known = {}
        self._whole, self._evicted = not self.store.exists, False

    def items(self) -> Iterator[tuple[str, Any]]:
        """Every stored document and its state (scans the table the first time)."""
        self.load_all()
        return iter(list(self._known.items()))

    def roots(self) -> dict[str, str]:
        """doc_id -> source_root of every stored document, from memory (:attr:`whole`)."""
        self.load_all()
        return {d: st.source_root for d, st in self._known.items() if st is not None}

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self.get(doc_id) is not None

    def __len__(self) -> int:
        self.load_all()
        return len(self._known)
