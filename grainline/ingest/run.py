"""A run's three phases: :func:`prepare` (lock, table, ledger row), :func:`run_batches`
(the one batch loop, driven by the Prefect flow with its tasks and by
:func:`run_ingest` with plain calls) and :func:`finish` (deletions, maintenance, the
export, the ledger row's end, the lock released)."""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from grainline.documents import Document, Failure
from grainline.embedding import Embedder
from grainline.memory import release_memory
from grainline.readers import is_object_uri, open_source, sync_scope
from grainline.redact import redact_text, redact_value
from grainline.storage.chunks import ChunkStore
from grainline.storage.doc_states import DocStates
from grainline.storage.ledger import Ledger, RunCounts, RunRecord, new_run_id
from grainline.storage.locks import TableLock
from grainline.storage.maintenance import figures, maintain_after_run, vector_index_due
from grainline.storage.parquet import default_export_dir, export_table, exported_version

from .batch import EmbeddedBatch, chunk_todo, embed_batch, read_batches, triage, write_batch
from .context import RunContext, forget_run, register_run
from grainline.embedding import get_embedder
from .ends import ExportFailed, drop_undo_tags, record_end, record_precision
from .manifest import ManifestRun
from .plan import WorkSpec, make_plans, table_name_for
from .settings import IngestSettings

log = logging.getLogger("grainline.ingest")


def prepare(settings: IngestSettings, run_id: str | None = None, root: str | None = None) -> RunContext:
    """Load the model, take the table's write lock, open the table, take stock of what
    it holds, record the start. :func:`finish` releases the lock.

    ``root`` names where the documents come from when they are passed in directly
    (an evaluation dataset); otherwise the source is discovered on disk. Stale runs
    are marked interrupted only while the lock (or lease) is really held."""
    documents = None
    scope = None
    manifest = None
    if root is None:
        # Files whose stat the source manifest vouches for are not read; it is loaded
        # below, under the lock, before the lazy reader asks it anything.
        manifest = ManifestRun(rehash=settings.rehash)
        found, documents = open_source(settings.source, settings.reader, manifest.unchanged)  # fails fast on a missing source
        root = source_root(found)
        scope = sync_scope(settings.source, settings.reader)
    embedder = get_embedder(settings.embedder)
    table_name = table_name_for(settings)
    # Named before the lock is taken: the lock's holder record names the run.
    run_id = run_id or new_run_id("ingest")
    lock = TableLock(settings.db, table_name, settings.lock_timeout_s, run_id=run_id).acquire()
    try:
        ctx = _prepare_locked(settings, run_id, root, documents, embedder, lock, exclusive=lock.held)
    except BaseException:
        lock.release()
        raise
    ctx.scope = scope
    try:
        if manifest is not None:
            manifest.load(ctx)
            ctx.manifest = manifest
        register_run(ctx)
        if scope is not None:
            # Ids of files were paths relative to the ingested root before they became
            # real paths. Nothing is rewritten behind the user's back: a full sync of this
            # root replaces them (their vectors are reused), and until then both are
            # stored. (A scan of two columns: a damaged fragment fails here.)
            # The last run vouched that there were none, and nothing wrote the table
            # since: no scan of the whole table on every scheduled run.
            vouched = manifest is not None and manifest.no_legacy_ids(root)
            ctx.legacy_ids = [] if vouched else legacy_ids(ctx.store, root)
    except BaseException as exc:
        # The row already says 'running': it must say how the run ended instead.
        forget_run(run_id)
        try:
            record_end(ctx, RunCounts(), exc)
        finally:
            lock.release()
        raise
    if scope is not None:
        if ctx.legacy_ids:
            log.warning(
                "table %s holds %d documents of %s under ids of an older grainline (relative paths, e.g. %r); this run "
                "stores files under their real paths; `grainline ingest %s --sync full` replaces the old rows "
                "(reusing their vectors)", ctx.store.table_name, len(ctx.legacy_ids), root, ctx.legacy_ids[0],
                shlex.quote(str(settings.source)))
    return ctx


def source_root(found: Path | str) -> str:
    """The root ``open_source`` found, as recorded: a folder's real path, or an
    object-store prefix's URI as it is."""
    return found if isinstance(found, str) and is_object_uri(found) else str(Path(found).resolve())


def legacy_ids(store: ChunkStore, root: str) -> list[str]:
    """Stored ids of ``root`` that an older grainline made relative to it (neither a
    real path nor an object's URI)."""
    if is_object_uri(root):
        return []  # object-store sources came after ids became absolute
    return store.relative_ids(root)


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
        spec=WorkSpec(settings, store.table_name, plans, run_id=run_id, reuse_version=record.version_before),
        # Read as the batches need them (storage/doc_states.py), not all at the start.
        root=root, states=DocStates(store), record=record,
        documents=documents, lock=lock, interrupted=interrupted,
    )
    return ctx


class _Done:
    """A batch chunked and embedded already, with the ``result()`` a future has."""

    def __init__(self, value: EmbeddedBatch) -> None:
        self.value = value

    def result(self) -> EmbeddedBatch:
        return self.value


def run_batches(ctx: RunContext, counts: RunCounts, documents: Iterable[Document | Failure] | None = None, *,
                submit: Callable[[WorkSpec, list[tuple[Document, str]]], Any] | None = None,
                write: Callable[[RunContext, EmbeddedBatch], RunCounts] | None = None,
                in_flight: int = 0, cancel: Callable[[Any], None] | None = None) -> RunCounts:
    """The batch loop of every run: read a batch, triage it here (against the table's
    state), hand the documents that need work to ``submit`` (chunk and embed; returns
    something with ``result()``, e.g. a Prefect future), and ``write`` the results in
    submission order, keeping up to ``in_flight`` batches submitted ahead of the write.

    Defaults: chunk and embed in this process, write with :func:`write_batch`, nothing
    in flight. ``documents`` defaults to the source ``prepare`` opened. Everything this
    loop counts goes into ``counts`` as it happens, so a caller that catches the error
    still records what the run did. On an error the batches not yet written are given
    up (``cancel`` on each, errors ignored) and the error is raised."""
    if submit is None:
        submit = lambda spec, todo: _Done(embed_batch(ctx, chunk_todo(ctx, todo)))  # noqa: E731
    write = write or write_batch
    pending: deque = deque()
    try:
        t_read = time.perf_counter()
        for items in read_batches(documents if documents is not None else ctx.documents, ctx.settings.batch_docs):
            counts.add_time("read", time.perf_counter() - t_read)
            todo, batch_counts = triage(ctx, items)
            counts.merge(batch_counts)
            if todo:
                if ctx.spec.choices is None:
                    # Made here, once, before any worker makes them for itself (the
                    # chunkers need the model's tokenizer here anyway when workers are
                    # threads of this process; Dask workers follow them).
                    ctx.spec = replace(ctx.spec, choices=ctx.embedder.choices())
                pending.append(submit(ctx.spec, todo))
            # Keep a few batches in flight so workers chunk and embed while this
            # process writes; write in submission order.
            while len(pending) > in_flight:
                counts.merge(write(ctx, pending.popleft().result()))
            t_read = time.perf_counter()
        while pending:
            counts.merge(write(ctx, pending.popleft().result()))
    except BaseException:
        while pending:
            future = pending.popleft()
            if cancel is not None:
                try:
                    cancel(future)
                except Exception:  # noqa: BLE001 - the run's own error is the one to report
                    pass
        raise
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
        if ctx.manifest is not None and (error is None or ctx.settings.on_error == "keep"):
            # Entries of the files whose documents are committed, error or not (each
            # says only what the table holds; a failed run keeps its commits); a full
            # sync that saw the whole source also drops the entries of files gone.
            full = error is None and ctx.settings.sync == "full" and ctx.scope is not None
            try:
                ctx.manifest.close(ctx, ctx.scope if full else None)
            except BaseException as exc:  # an interrupt: recorded below like any late error
                if error is None:
                    late = error = exc
        if error is None:
            try:
                _complete(ctx, counts)
            except BaseException as exc:  # recorded below, then raised
                late = error = exc
        rec = record_end(ctx, counts, error, interrupted_by)
        if late is not None:
            late.add_note(rec.error or "")
            raise late
        return rec
    finally:
        forget_run(ctx.run_id)
        if ctx.lock is not None:
            ctx.lock.release()


def _complete(ctx: RunContext, counts: RunCounts) -> None:
    """What a run does after its last batch: deletions, maintenance, the export."""
    rec = ctx.record
    rec.counts = counts  # maintenance adds its time to the record's counts
    drop_undo_tags(ctx)  # before maintenance, which can then prune those versions
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
    # The deletions were the last step to ask for document states, and the run's own
    # sets of ids are done with too: handed back before maintenance and the export.
    ctx.states.forget()
    ctx.seen.clear()
    if ctx.manifest is not None:
        ctx.manifest.let_go()
    index_due = (ctx.store.exists and ctx.settings.maintenance.enabled
                 # Rows and the index are all it reads: the version list (one manifest
                 # read per version) is not asked for.
                 and vector_index_due(ctx.settings.maintenance, figures(ctx.store.table, versions=[])))
    if index_due:
        # Training the index reads every vector of the table: the model is not needed
        # for it, and a big one would sit under that peak (it reloads when next used).
        # What the loaded model chose (precision, backend) goes into the record first.
        record_precision(ctx.record, ctx.embedder)
        ctx.embedder.unload()
    if index_due or ctx.embedder.loaded or counts.chunks_written or counts.chunks_deleted:
        # The batches' freed buffers go back to the system before maintenance and the
        # export allocate in proportion to the table (grainline/memory.py). A run that
        # wrote nothing freed nothing, and a full collection walks every object it
        # holds (0.3 s for the doc states of 100,000 documents).
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


def sync_gone(ctx: RunContext) -> list[str]:
    """The stored documents a full sync deletes: in the source's scope (or, for
    documents passed in directly, of its source_root; or stored by an older grainline
    under a relative id from this root), not seen by this run (read, or part of a file
    the source manifest let it skip unread), and not part of a file that failed as a
    whole (a big text file that fails keeps its stored parts)."""
    legacy = set(ctx.legacy_ids)

    def covered(d: str, source_root: str) -> bool:
        if ctx.scope is None:
            return source_root == ctx.root
        return d in legacy or ctx.scope(d)

    def failed(d: str) -> bool:
        # The document itself, or the file it is a part or record of (the id up to a '#').
        return d in ctx.failed_ids or any(d[:i] in ctx.failed_ids for i, ch in enumerate(d) if ch == "#")

    def gone(ids: list[str], roots: list[str]) -> Iterator[str]:
        # Asked of the run's hashed sets a list at a time: first those read, then, of
        # the rest, those of files skipped unread.
        rest = [(d, r) for d, r, seen in zip(ids, roots, ctx.seen.contains_many(ids)) if not seen]
        if ctx.manifest is not None and rest:
            rest = [dr for dr, skipped in zip(rest, ctx.manifest.covers_many([d for d, _ in rest])) if not skipped]
        return (d for d, r in rest if covered(d, r) and not failed(d))

    if ctx.states.whole:
        stored = ctx.states.roots()
        return list(gone(list(stored), list(stored.values())))
    # Every stored document's id and root (two columns), not every document's state,
    # a batch at a time: what is held is the batch and the documents gone.
    out: dict[str, None] = {}
    for ids, roots in ctx.store.doc_roots_batches():
        out.update(dict.fromkeys(gone(ids, roots)))
    return list(out)


def export_dir(ctx: RunContext) -> str:
    """Where the run's Parquet export goes: ``parquet_dir``, else beside the table."""
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
    try:
        run_batches(ctx, counts, documents)
    except BaseException as exc:
        finish(ctx, counts, exc)
        raise
    return finish(ctx, counts)
