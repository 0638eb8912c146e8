"""Ingestion, step by step, without Prefect: read -> chunk -> embed -> write.

The Prefect flow in ``flows/ingest.py`` wires these same functions as tasks. Each step
takes and returns plain values, so a test (or another orchestrator) can drive them."""

from __future__ import annotations

import json
import logging
import shlex
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grainline.chunkers import CHUNKERS, ChunkContext, ChunkerSettings, chunker_key, chunker_params, settings_for
from grainline.documents import Chunk, Document, Failure
from grainline.embedding import Embedder, EmbedderSettings
from grainline.errors import TerminalError
from grainline.memory import release_memory
from grainline.readers import ReaderSettings, open_source, sync_scope
from grainline.redact import check_uri, redact_text, redact_value
from grainline.storage.chunks import DEFAULT_DB, ChunkStore, DocState
from grainline.storage.ledger import Ledger, RunCounts, RunRecord, utcnow
from grainline.storage.rows import RowStamp
from grainline.storage.locks import TableLock
from grainline.storage.maintenance import MaintenanceSettings, figures, maintain_after_run, vector_index_due
from grainline.storage.parquet import default_export_dir, exported_version, export_table

log = logging.getLogger("grainline.ingest")

STRATEGIES = ("sentence", "paragraph", "article")


def parse_strategies(value: str | Iterable[str]) -> list[str]:
    """'sentence,paragraph' -> ['sentence', 'paragraph'], each checked against the registry."""
    return CHUNKERS.parse_names(value)


class IngestSettings(BaseModel):
    """Everything an ingestion run needs; the defaults are grainline's defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    strategies: list[str] = Field(default_factory=lambda: list(STRATEGIES))
    db: str = DEFAULT_DB
    # incremental: add and update what the source holds; full: also delete documents
    # of this source root that are gone from it.
    sync: Literal["incremental", "full"] = "incremental"
    long_article: Literal["pool", "truncate"] = "pool"
    chunker_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    batch_docs: int = Field(default=64, ge=1)
    export_parquet: bool = True
    parquet_dir: str | None = None
    # Default: one table per model (``ModelIdentity.table_name``). Evaluation datasets
    # use their own table per model so they never mix with production documents.
    table: str | None = None
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    reader: ReaderSettings = Field(default_factory=ReaderSettings)
    # When a run fails: keep the batches it committed (each one whole documents), so a
    # re-run resumes where it stopped; or restore the table to its version before the run.
    on_error: Literal["keep", "restore"] = "keep"
    # How long a run waits for another process writing the same (local) table.
    lock_timeout_s: float = Field(default=6 * 3600, ge=0)
    # Compaction, pruning and indexes after every successful run (storage/maintenance.py).
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    # Other tables of the same model whose stored vectors may be reused by content hash
    # (an evaluation's sweep tables reuse the production table's vectors).
    reuse_from: list[str] = Field(default_factory=list)

    @field_validator("strategies", mode="before")
    @classmethod
    def _strategies(cls, v: Any) -> list[str]:
        return parse_strategies(v)

    @field_validator("db", "parquet_dir")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        # Credentials come from the environment; in a URI they would be recorded.
        return v if v is None else check_uri(v)

    @model_validator(mode="after")
    def _chunker_overrides(self) -> "IngestSettings":
        unknown = set(self.chunker_overrides) - set(CHUNKERS.names())
        if unknown:
            raise ValueError(f"chunker_overrides for unknown strategies {sorted(unknown)}; known: {', '.join(CHUNKERS.names())}")
        self.chunker_settings()  # bad values fail here, naming the setting
        return self

    def chunker_settings(self) -> dict[str, ChunkerSettings]:
        out = {}
        for s in self.strategies:
            overrides = dict(self.chunker_overrides.get(s, {}))
            if s == "article":
                overrides.setdefault("long_article", self.long_article)
            out[s] = settings_for(s, **overrides)
        return out


@dataclass(frozen=True)
class Plan:
    """One strategy with its settings, parameters and key, fixed for a run."""

    strategy: str
    settings: ChunkerSettings
    params: str
    key: str


@dataclass(frozen=True)
class WorkSpec:
    """Everything a worker needs to chunk and embed a batch, and nothing that cannot
    be pickled: a worker on another machine rebuilds the model and table from it."""

    settings: IngestSettings
    table: str
    plans: tuple[Plan, ...]


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
    states: dict[str, DocState]
    record: RunRecord
    # The source's documents, read lazily; None when they are passed in directly.
    documents: Iterator[Document | Failure] | None = None
    # The table's write lock, held from prepare() until finish().
    lock: TableLock | None = None
    # Earlier runs on this table found still 'running' (they died without a word).
    interrupted: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    failed_ids: set[str] = field(default_factory=set)
    # Which stored doc ids this run's source covers (a full sync deletes those not
    # seen); None: documents passed in directly, covered by their source_root label.
    scope: Any = None
    # Documents stored under relative ids by an older grainline, from this root.
    legacy_ids: list[str] = field(default_factory=list)

    @property
    def plans(self) -> tuple[Plan, ...]:
        return self.spec.plans


@dataclass
class ChunkedDoc:
    doc: Document
    chunks: list[Chunk]
    status: str  # added | updated


@dataclass
class ChunkedBatch:
    docs: list[ChunkedDoc] = field(default_factory=list)
    counts: RunCounts = field(default_factory=RunCounts)


@dataclass
class EmbeddedBatch:
    docs: list[ChunkedDoc]
    vectors: dict[str, np.ndarray]  # content_hash -> vector
    n_windows: dict[str, int]
    counts: RunCounts


_EMBEDDERS: dict[EmbedderSettings, Embedder] = {}


def get_embedder(settings: EmbedderSettings) -> Embedder:
    """One loaded model per settings per process (tasks in one process share it)."""
    if settings not in _EMBEDDERS:
        _EMBEDDERS[settings] = Embedder(settings)
    return _EMBEDDERS[settings]


def table_name_for(settings: IngestSettings) -> str:
    """The chunks table this run writes: the model's own, unless overridden."""
    return settings.table or get_embedder(settings.embedder).identity.table_name


def make_plans(settings: IngestSettings, embedder: Embedder) -> tuple[Plan, ...]:
    """Each requested strategy with its settings, parameters and chunker key."""
    chunk_ctx = ChunkContext.default(embedder.window)
    plans = []
    for strategy, cs in settings.chunker_settings().items():
        params = chunker_params(strategy, cs, chunk_ctx)
        plans.append(Plan(strategy, cs, params, chunker_key(strategy, params)))
    return tuple(plans)


def prepare(settings: IngestSettings, run_id: str | None = None, root: str | None = None) -> RunContext:
    """Load the model, take the table's write lock, open the table, take stock of what
    it holds, record the start. :func:`finish` releases the lock.

    ``root`` names where the documents come from when they are passed in directly
    (an evaluation dataset); otherwise the source is discovered on disk. Stale runs
    are marked interrupted only while the lock (or lease) is really held."""
    documents = None
    scope = None
    if root is None:
        found, documents = open_source(settings.source, settings.reader)  # fails fast on a missing source
        root = str(Path(found).resolve())
        scope = sync_scope(settings.source, settings.reader)
    embedder = get_embedder(settings.embedder)
    table_name = table_name_for(settings)
    # Named before the lock is taken: the lock's holder record names the run.
    run_id = run_id or f"ingest-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    lock = TableLock(settings.db, table_name, settings.lock_timeout_s, run_id=run_id).acquire()
    try:
        ctx = _prepare_locked(settings, run_id, root, documents, embedder, lock, exclusive=lock.held)
    except BaseException:
        lock.release()
        raise
    ctx.scope = scope
    if scope is not None:
        # Ids of files were paths relative to the ingested root before they became real
        # paths. Nothing is rewritten behind the user's back: a full sync of this root
        # replaces them (their vectors are reused), and until then both are stored.
        ctx.legacy_ids = sorted(d for d, st in ctx.states.items() if st.source_root == root and not d.startswith("/"))
        if ctx.legacy_ids:
            log.warning(
                "table %s holds %d documents of %s under ids of an older grainline (relative paths, e.g. %r); this run "
                "stores files under their real paths; `grainline ingest %s --sync full` replaces the old rows "
                "(reusing their vectors)", ctx.store.table_name, len(ctx.legacy_ids), root, ctx.legacy_ids[0],
                shlex.quote(str(settings.source)))
    return ctx


def _prepare_locked(settings: IngestSettings, run_id: str, root: str, documents: Iterator[Document | Failure] | None,
                    embedder: Embedder, lock: TableLock, exclusive: bool) -> RunContext:
    ident = embedder.identity
    store = ChunkStore(settings.db, lock.table, ident.dim)
    store.table  # created now, so a failed first run can return to a named, empty version
    plans = make_plans(settings, embedder)
    record = RunRecord(
        run_id=run_id,
        flow="ingest",
        source=redact_text(str(settings.source)),
        table_name=store.table_name,
        model_id=ident.model_id,
        parameters=redact_value({**settings.model_dump(mode="json"), "model": ident.as_dict(), "chunker_keys": [p.key for p in plans],
                                 "chunker_params": {p.key: json.loads(p.params) for p in plans}}),
        version_before=store.version(),
    )
    ledger = Ledger(settings.db)
    # With the table to ourselves, any other run of it still 'running' is dead.
    interrupted = ledger.mark_interrupted(store.table_name, run_id) if exclusive else []
    if interrupted:
        log.warning("runs on table %s that died without finishing, marked interrupted: %s", store.table_name, ", ".join(interrupted))
    ledger.write(record)
    ctx = RunContext(
        settings=settings, run_id=run_id, embedder=embedder, store=store, ledger=ledger,
        spec=WorkSpec(settings, store.table_name, plans), root=root, states={}, record=record,
        documents=documents, lock=lock, interrupted=interrupted,
    )
    try:
        ctx.states = store.doc_states()  # reads every row: a damaged fragment fails here
    except BaseException as exc:
        # The row already says 'running': it must say how the run ended instead.
        _record_end(ctx, RunCounts(), exc)
        raise
    return ctx


def read_batches(documents: Iterable[Document | Failure], batch_docs: int) -> Iterator[list[Document | Failure]]:
    """Documents (and failures) in batches of ``batch_docs``, consumed lazily."""
    it = iter(documents)
    while batch := list(islice(it, batch_docs)):
        yield batch


def triage(ctx: RunContext, items: list[Document | Failure]) -> tuple[list[tuple[Document, str]], RunCounts]:
    """Split a batch into the documents that need work (with 'added' or 'updated'),
    counting the unchanged ones and the failures; runs where the table state is."""
    counts = RunCounts()
    todo: list[tuple[Document, str]] = []
    for item in items:
        if isinstance(item, Failure) and item.stage == "skip":
            counts.docs_skipped += 1
            counts.skipped.append({"where": item.where, "reason": item.reason})
            continue
        if isinstance(item, Failure):
            counts.docs_failed += 1
            counts.failures.append(item.as_dict())
            ctx.failed_ids.add(item.doc_id or item.where)
            continue
        counts.docs_seen += 1
        ctx.seen.add(item.doc_id)
        state = ctx.states.get(item.doc_id)
        h = item.content_hash
        if state is not None and all(state.hashes.get(p.key) == h for p in ctx.plans):
            counts.docs_unchanged += 1
        else:
            todo.append((item, "added" if state is None else "updated"))
    return todo, counts


class TooManyChunks(TerminalError, ValueError):
    """A document cut into more chunks than ``ReaderSettings.max_chunks_per_doc``: that
    document fails (the others go on); chunking it again gives as many."""


def chunk_docs(plans: Iterable[Plan], docs: list[tuple[Document, str]], chunk_ctx: ChunkContext,
               max_chunks: int | None = None) -> ChunkedBatch:
    """Chunk each document with every plan; a document whose chunking fails (or gives
    one strategy more than ``max_chunks`` chunks) becomes a failure record and the
    others go on."""
    out = ChunkedBatch()
    t0 = time.perf_counter()
    plans = list(plans)
    for doc, status in docs:
        try:
            chunks = []
            for p in plans:
                got = CHUNKERS.get(p.strategy)(doc, p.settings, chunk_ctx)
                if max_chunks is not None and len(got) > max_chunks:
                    raise TooManyChunks(f"{len(got)} {p.strategy} chunks > max_chunks_per_doc {max_chunks}")
                chunks.extend(got)
        except TooManyChunks as exc:
            out.counts.docs_failed += 1
            out.counts.failures.append(Failure(doc.doc_id, str(exc), "chunk").as_dict())
            continue
        except Exception as exc:  # noqa: BLE001 - one bad document must not stop the run
            out.counts.docs_failed += 1
            out.counts.failures.append(Failure(doc.doc_id, f"chunking failed: {exc!r}", "chunk").as_dict())
            continue
        out.docs.append(ChunkedDoc(doc, chunks, status))
    out.counts.add_time("chunk", time.perf_counter() - t0)
    return out


def embed_chunked(embedder: Embedder, store: ChunkStore | None, batch: ChunkedBatch,
                  donors: Iterable[ChunkStore] = ()) -> EmbeddedBatch:
    """Vectors for every distinct content hash in the batch: reused from the table (or
    the ``donors``, tables of the same model) when the same text was embedded before,
    embedded otherwise."""
    t0 = time.perf_counter()
    wanted: dict[str, Chunk] = {}
    for cd in batch.docs:
        for c in cd.chunks:
            wanted.setdefault(c.content_hash, c)
    known = store.vectors_by_hash(set(wanted)) if store is not None and store.exists else {}
    for donor in donors:
        missing = set(wanted) - set(known)
        if missing and donor.exists:
            known.update(donor.vectors_by_hash(missing))
    vectors = {h: v for h, (v, _) in known.items()}
    n_windows = {h: nw for h, (_, nw) in known.items()}
    todo = [c for h, c in wanted.items() if h not in vectors]
    counts = batch.counts
    if todo:
        vecs, nws = embedder.embed_chunks(todo)
        for c, v, nw in zip(todo, vecs, nws):
            vectors[c.content_hash] = v
            n_windows[c.content_hash] = nw
    counts.chunks_embedded += len(todo)
    counts.chunks_reused += sum(1 for cd in batch.docs for c in cd.chunks) - len(todo)
    counts.add_time("embed", time.perf_counter() - t0)
    return EmbeddedBatch(batch.docs, vectors, n_windows, counts)


def process_docs(spec: WorkSpec, docs: list[tuple[Document, str]]) -> EmbeddedBatch:
    """Chunk and embed documents in any process: what a distributed worker runs. The
    model is loaded once per process; the table is opened read-only for vector reuse."""
    embedder = get_embedder(spec.settings.embedder)
    store = ChunkStore(spec.settings.db, spec.table, embedder.identity.dim)
    chunked = chunk_docs(spec.plans, docs, ChunkContext.default(embedder.window), spec.settings.reader.max_chunks_per_doc)
    return embed_chunked(embedder, store, chunked, donor_stores(spec.settings, embedder.identity.dim))


def donor_stores(settings: IngestSettings, dim: int) -> list[ChunkStore]:
    """The ``reuse_from`` tables, opened for reading vectors by content hash."""
    return [ChunkStore(settings.db, name, dim) for name in settings.reuse_from]


def chunk_batch(ctx: RunContext, items: list[Document | Failure]) -> ChunkedBatch:
    """Triage and chunk a batch in this process."""
    todo, counts = triage(ctx, items)
    batch = chunk_docs(ctx.plans, todo, ChunkContext.default(ctx.embedder.window), ctx.settings.reader.max_chunks_per_doc)
    counts.merge(batch.counts)
    batch.counts = counts
    return batch


def embed_batch(ctx: RunContext, batch: ChunkedBatch) -> EmbeddedBatch:
    """Embed a chunked batch in this process."""
    return embed_chunked(ctx.embedder, ctx.store, batch, donor_stores(ctx.settings, ctx.embedder.identity.dim))


def write_batch(ctx: RunContext, batch: EmbeddedBatch) -> RunCounts:
    """Hand the batch's chunks and vectors to storage, which upserts their rows and
    drops the stale chunks of these documents in one commit; then remember the new
    state of those documents."""
    t0 = time.perf_counter()
    counts = batch.counts
    if batch.docs:
        if ctx.lock is not None:
            ctx.lock.check()  # an object-store lease that lapsed: another run may write now
        ident = ctx.embedder.identity
        stamp = RowStamp(source_root=ctx.root, run_id=ctx.run_id, model_id=ident.model_id,
                         model_max_seq_length=ident.max_seq_length, ingested_at=utcnow())
        keys = [p.key for p in ctx.plans]
        res = ctx.store.write_documents([(cd.doc, cd.chunks) for cd in batch.docs], batch.vectors, batch.n_windows,
                                        stamp, keys, all_new=all(cd.status == "added" for cd in batch.docs))
        counts.chunks_written += res["inserted"] + res["updated"]
        counts.chunks_deleted += res["deleted"]
        for cd in batch.docs:
            if cd.status == "added":
                counts.docs_added += 1
            else:
                counts.docs_updated += 1
            st = ctx.states.setdefault(cd.doc.doc_id, DocState(source_root=ctx.root))
            doc_hash = cd.doc.content_hash
            for k in keys:
                st.hashes[k] = doc_hash
    counts.add_time("write", time.perf_counter() - t0)
    return counts


def finish(ctx: RunContext, counts: RunCounts, error: BaseException | None = None,
           interrupted_by: int | None = None) -> RunRecord:
    """Full-sync deletions, maintenance and the Parquet export (after a run without
    error), then the ledger row; the table's write lock is released whatever happens.

    The ledger row never stays 'running' while this process can write it: a failure of
    those last steps makes the run 'failed' (then it is raised, with the outcome as a
    note), and an interrupt (SIGINT, SIGTERM) makes it 'interrupted'. ``interrupted_by``
    names the signal when the caller saw one (the error may be what it became)."""
    try:
        late: BaseException | None = None
        if error is None:
            try:
                _complete(ctx, counts)
            except BaseException as exc:  # recorded below, then raised
                late = error = exc
        rec = _record_end(ctx, counts, error, interrupted_by)
        if late is not None:
            late.add_note(rec.error or "")
            raise late
        return rec
    finally:
        if ctx.lock is not None:
            ctx.lock.release()


def _complete(ctx: RunContext, counts: RunCounts) -> None:
    """What a run does after its last batch: deletions, maintenance, the export."""
    rec = ctx.record
    rec.counts = counts  # maintenance adds its time to the record's counts
    _drop_undo_tags(ctx)  # before maintenance, which can then prune those versions
    if ctx.settings.sync == "full":
        t0 = time.perf_counter()
        gone = sync_gone(ctx)
        if gone:
            if ctx.lock is not None:
                ctx.lock.check()
            # Path ids are unique across roots, so a file's rows go whichever root wrote them.
            counts.chunks_deleted += ctx.store.delete_documents(gone, ctx.root if ctx.scope is None else None)
            counts.docs_deleted += len(gone)
            for d in gone:
                ctx.states.pop(d, None)
        counts.add_time("delete", time.perf_counter() - t0)
    if (ctx.store.exists and ctx.settings.maintenance.enabled
            and vector_index_due(ctx.settings.maintenance, figures(ctx.store.table))):
        # Training the index reads every vector of the table: the model is not needed
        # for it, and a big one would sit under that peak (it reloads when next used).
        ctx.embedder.unload()
    # The batches' freed buffers go back to the system before maintenance and the
    # export allocate in proportion to the table (grainline/memory.py).
    release_memory()
    if ctx.store.exists:
        # Before the export: maintenance commits versions, and the export records the
        # version it holds (exporting first would make every next run export again).
        maintain_after_run(ctx.store.table, ctx.settings.maintenance, rec)
    # Exported when the export does not hold the table's current version: this run
    # changed it, or an earlier run died before (or while) exporting.
    if ctx.settings.export_parquet and ctx.store.exists and exported_version(export_dir(ctx)) != ctx.store.version():
        t0 = time.perf_counter()
        release_memory()
        try:
            export_table(ctx.store.table, export_dir(ctx))
        except Exception as exc:
            raise ExportFailed(f"the Parquet export to {export_dir(ctx)} failed: {type(exc).__name__}: {exc}; "
                               "the table holds every document, and the next run redoes the export") from exc
        counts.add_time("export", time.perf_counter() - t0)
    if not (counts.docs_seen or counts.docs_failed or counts.docs_skipped):
        log.warning("the source %s holds no documents", redact_text(str(ctx.settings.source)))


class ExportFailed(TerminalError, RuntimeError):
    """The Parquet export of a run failed (its table was written in full). Terminal for
    the run; the next run exports again, since the export does not hold the table's version."""


class LedgerWriteFailed(TerminalError, RuntimeError):
    """The run's ledger row could not be written (e.g. the disk is full): the ``runs``
    table may still say 'running'; the next run on the table marks it interrupted.
    Terminal: the run itself is over, and repeating it is the user's call."""


def interrupt_signal(error: BaseException | None) -> int | None:
    """The signal that stopped a run: SIGINT for KeyboardInterrupt, else the ``signal``
    of a termination exception (Prefect's TerminationSignal for SIGTERM), else None."""
    import signal

    if isinstance(error, KeyboardInterrupt):
        return getattr(error, "signal", None) or signal.SIGINT
    sig = getattr(error, "signal", None)
    return sig if isinstance(sig, int) and not isinstance(error, Exception) else None


def undo_command(settings: IngestSettings, table: str, version: int) -> str:
    """The command that rolls ``table`` back to ``version``."""
    return f"grainline restore {version} --db {shlex.quote(settings.db)} --table {table}"


def _record_end(ctx: RunContext, counts: RunCounts, error: BaseException | None,
                interrupted_by: int | None = None) -> RunRecord:
    """Say in the ledger how the run ended (completed, failed or interrupted), after
    keeping or restoring what a failed run wrote (``on_error``)."""
    import signal

    rec = ctx.record
    record_precision(rec, ctx.embedder)
    rec.counts = counts
    rec.finished = utcnow()
    sig = interrupt_signal(error) or (interrupted_by if error is not None else None)
    rec.status = "completed" if error is None else ("interrupted" if sig is not None else "failed")
    if error is None:
        rec.error = None
    elif sig is not None:
        rec.error = f"interrupted by {signal.Signals(sig).name}"
    else:
        rec.error = redact_text(f"{type(error).__name__}: {error}")
    version_now = _version_now(ctx)
    wrote = error is not None and rec.version_before is not None and version_now not in (None, rec.version_before)
    if wrote and ctx.settings.on_error == "keep":
        # Every commit holds whole documents, so what was written is consistent and a
        # re-run skips it; the ledger says how to undo it instead, and a tag keeps that
        # version from being pruned until a later run of the table completes.
        rec.error += (
            f"; kept the batches committed before the error (table version {rec.version_before} -> "
            f"{version_now}); a re-run resumes from there; to undo them: "
            f"{undo_command(ctx.settings, ctx.store.table_name, rec.version_before)}"
        )
        _tag_undo(ctx, rec)
    elif wrote:
        # on_error=restore: the version before the run becomes the latest again (a new
        # version; the failed run's versions stay in history).
        try:
            restored = ctx.store.restore(rec.version_before)
            rec.error += f"; table restored to version {rec.version_before} (now version {restored})"
        except Exception as exc:  # noqa: BLE001 - the ledger must still say what happened
            rec.error += f"; restoring version {rec.version_before} failed: {exc!r}"
    rec.version_after = _version_now(ctx)
    try:
        ctx.ledger.write(rec)
    except Exception as exc:
        what = f"run {rec.run_id} {rec.status}" + (f" ({rec.error})" if rec.error else "")
        raise LedgerWriteFailed(f"could not record the end of the run in the ledger of {redact_text(ctx.settings.db)}: "
                                f"{type(exc).__name__}: {exc}; {what}") from exc
    return rec


def sync_gone(ctx: RunContext) -> list[str]:
    """The stored documents a full sync deletes: in the source's scope (or, for
    documents passed in directly, of its source_root; or stored by an older grainline
    under a relative id from this root), not seen by this run, and not part of a file
    that failed as a whole (a big text file that fails keeps its stored parts)."""
    legacy = set(ctx.legacy_ids)

    def covered(d: str, st: DocState) -> bool:
        if ctx.scope is None:
            return st.source_root == ctx.root
        return d in legacy or ctx.scope(d)

    def failed(d: str) -> bool:
        # The document itself, or the file it is a part or record of (the id up to a '#').
        return d in ctx.failed_ids or any(d[:i] in ctx.failed_ids for i, ch in enumerate(d) if ch == "#")

    return [d for d, st in ctx.states.items() if d not in ctx.seen and covered(d, st) and not failed(d)]


def _version_now(ctx: RunContext) -> int | None:
    try:
        return ctx.store.version()
    except Exception:  # noqa: BLE001 - a damaged table cannot say; the ledger still can
        return None


UNDO_TAG_PREFIX = "undo-"


def _tag_undo(ctx: RunContext, rec: RunRecord) -> None:
    """Tag the version a failed run's undo command names, so pruning keeps it."""
    try:
        ctx.store.table.tags.create(f"{UNDO_TAG_PREFIX}{rec.run_id}", rec.version_before)
    except Exception as exc:  # noqa: BLE001 - the hint stays; `restore` says when it is gone
        log.warning("could not tag version %s for the undo command: %s", rec.version_before, exc)


def _drop_undo_tags(ctx: RunContext) -> None:
    """A run that gets to its end has resumed the failed runs before it: their undo
    tags go, so maintenance can prune those versions again."""
    if not ctx.store.exists:
        return
    try:
        for name in [n for n in ctx.store.table.tags.list() if n.startswith(UNDO_TAG_PREFIX)]:
            ctx.store.table.tags.delete(name)
    except Exception as exc:  # noqa: BLE001 - only pruning is held back
        log.warning("could not drop the undo tags of table %s: %s", ctx.store.table_name, exc)


def record_precision(rec: RunRecord, embedder: Embedder) -> None:
    """The precision the run's vectors were made at (what ``auto`` chose, and why) in the
    record's parameters; only once the model is loaded: an unchanged run never loads it."""
    if embedder.loaded:
        choice = embedder.precision_choice
        rec.parameters["precision"] = {"setting": embedder.settings.precision, "chosen": embedder.precision,
                                       "reason": choice.reason if choice is not None else "set explicitly"}


def export_dir(ctx: RunContext) -> str:
    return ctx.settings.parquet_dir or default_export_dir(ctx.settings.db, ctx.store.table_name)


def run_ingest(
    settings: IngestSettings,
    run_id: str | None = None,
    documents: Iterable[Document | Failure] | None = None,
) -> RunRecord:
    """The whole ingestion in this process, without Prefect. With ``documents``, those
    are ingested (``settings.source`` then only labels them)."""
    ctx = prepare(settings, run_id, root=settings.source if documents is not None else None)
    counts = RunCounts()
    t_read = time.perf_counter()
    try:
        for items in read_batches(documents if documents is not None else ctx.documents, settings.batch_docs):
            counts.add_time("read", time.perf_counter() - t_read)
            counts.merge(write_batch(ctx, embed_batch(ctx, chunk_batch(ctx, items))))
            t_read = time.perf_counter()
    except BaseException as exc:
        finish(ctx, counts, exc)
        raise
    return finish(ctx, counts)


def summary_markdown(rec: RunRecord) -> str:
    """The run's counts as a Markdown table (the flow publishes it as an artifact)."""
    c = rec.counts
    lines = [
        f"# grainline ingestion `{rec.run_id}`",
        "",
        f"Source `{rec.source}` -> table `{rec.table_name}` (model `{rec.model_id}`), status **{rec.status}**, "
        f"table version {rec.version_before} -> {rec.version_after}.",
        "",
        "| documents seen | added | updated | unchanged | deleted | failed | chunks written | chunks deleted | embedded | reused |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {c.docs_seen} | {c.docs_added} | {c.docs_updated} | {c.docs_unchanged} | {c.docs_deleted} | {c.docs_failed} "
        f"| {c.chunks_written} | {c.chunks_deleted} | {c.chunks_embedded} | {c.chunks_reused} |",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {k} | {v:.2f} |" for k, v in c.stage_seconds.items()],
    ]
    if c.failures:
        lines += ["", "## Failures", "", "| where | stage | reason |", "|---|---|---|"]
        lines += [f"| `{f['where']}` | {f['stage']} | {f['reason']} |" for f in c.failures]
    if c.skipped:
        lines += ["", f"## Skipped ({c.docs_skipped} files no reader reads)", "", "| file | reason |", "|---|---|"]
        lines += [f"| `{f['where']}` | {f['reason']} |" for f in c.skipped]
    if not (c.docs_seen or c.docs_failed or c.docs_skipped):
        lines += ["", f"**Warning: the source `{rec.source}` holds no documents.**"]
    return redact_text("\n".join(lines) + "\n")


def dry_run(settings: IngestSettings) -> dict[str, Any]:
    """What an ingestion would do, without embedding or writing anything (and without
    the table lock or a ledger row): documents that would be added, updated, unchanged
    or (with ``sync=full``) deleted, failures and skipped files, and how many chunks
    would be written and how many of them embedded (texts with no stored vector)."""
    found, documents = open_source(settings.source, settings.reader)
    root = str(Path(found).resolve())
    embedder = get_embedder(settings.embedder)
    table = table_name_for(settings)
    store = ChunkStore(settings.db, table, embedder.identity.dim)
    states = store.doc_states() if store.exists else {}
    plans = make_plans(settings, embedder)
    # A context like prepare()'s, read-only: nothing here commits or records.
    ctx = RunContext(settings=settings, run_id="dry-run", embedder=embedder, store=store, ledger=None,  # type: ignore[arg-type]
                     spec=WorkSpec(settings, table, plans), root=root, states=states, record=None,  # type: ignore[arg-type]
                     documents=documents, scope=sync_scope(settings.source, settings.reader),
                     legacy_ids=sorted(d for d, st in states.items() if st.source_root == root and not d.startswith("/")))
    counts = RunCounts()
    added: list[str] = []
    updated: list[str] = []
    hashes: set[str] = set()
    chunk_ctx = ChunkContext.default(embedder.window)
    for items in read_batches(documents, settings.batch_docs):
        todo, c = triage(ctx, items)
        batch = chunk_docs(plans, todo, chunk_ctx)
        c.merge(batch.counts)
        counts.merge(c)
        for cd in batch.docs:
            (added if cd.status == "added" else updated).append(cd.doc.doc_id)
            counts.chunks_written += len(cd.chunks)
            hashes.update(ch.content_hash for ch in cd.chunks)
    known = store.vectors_by_hash(hashes) if hashes and store.exists else {}
    gone = sync_gone(ctx) if settings.sync == "full" else []
    return {
        "table": table, "source_root": root, "added": added, "updated": updated, "unchanged": counts.docs_unchanged,
        "deleted": gone, "failures": counts.failures, "skipped": counts.skipped, "chunks_written": counts.chunks_written,
        "chunks_to_embed": len(hashes - set(known)), "legacy_ids": len(ctx.legacy_ids),
    }
