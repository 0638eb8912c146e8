"""What stays the same for a whole run (:class:`RunContext`), built by ``prepare``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from grainline.documents import Document, Failure
from grainline.embedding import Embedder
from grainline.storage.chunks import ChunkStore
from grainline.storage.doc_states import DocStates
from grainline.storage.ledger import Ledger, RunRecord
from grainline.storage.locks import TableLock

from .hashed_ids import HashedIds
from .plan import Plan, WorkSpec
from .settings import IngestSettings


@dataclass
class RunContext:
    """What stays the same for the whole run, built once by :func:`prepare` in the
    process that writes."""

    settings: IngestSettings
    run_id: str
    embedder: Embedder
    store: ChunkStore
    ledger: Ledger
    spec: WorkSpec
    root: str
    # What the table holds of each document, read as needed (storage/doc_states.py).
    states: DocStates
    record: RunRecord
    # The source's documents, read lazily; None when they are passed in directly.
    documents: Iterator[Document | Failure] | None = None
    # The table's write lock, held from prepare() until finish().
    lock: TableLock | None = None
    # Earlier runs on this table found still 'running' (they died without a word).
    interrupted: list[str] = field(default_factory=list)
    # The documents read this run (for a full sync's deletions), as 8-byte hashes.
    seen: HashedIds = field(default_factory=HashedIds)
    failed_ids: set[str] = field(default_factory=set)
    # Which stored doc ids this run's source covers (a full sync deletes those not
    # seen); None: documents passed in directly, covered by their source_root label.
    scope: Any = None
    # Documents stored under relative ids by an older grainline, from this root.
    legacy_ids: list[str] = field(default_factory=list)
    # The source manifest (ingest/manifest.py: files skipped unread, entries to write);
    # None when the documents are passed in directly.
    manifest: Any = None

    @property
    def plans(self) -> tuple[Plan, ...]:
        return self.spec.plans


# The runs this process is writing, by run id: the flow's write task is handed the run id
# and looks its context up here, since Prefect walks every task argument on every call
# (to record task inputs), and a context holding the state of every stored document
# made each batch cost in proportion to the table.
_ACTIVE: dict[str, RunContext] = {}


def register_run(ctx: RunContext) -> None:
    """Make ``ctx`` findable by its run id in this process, until :func:`forget_run`."""
    _ACTIVE[ctx.run_id] = ctx


def forget_run(run_id: str) -> None:
    """The run is over in this process."""
    _ACTIVE.pop(run_id, None)


def active_run(run_id: str) -> RunContext:
    """The context of a run this process is writing (registered by ``prepare``)."""
    try:
        return _ACTIVE[run_id]
    except KeyError:
        raise LookupError(f"run {run_id} is not being written by this process") from None
