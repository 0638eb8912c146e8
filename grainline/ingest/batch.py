"""One batch of documents through the steps: triage, chunk, embed, write.

Each step takes and returns plain values; :func:`process_docs` (chunk and embed) runs
in any process, :func:`triage` and :func:`write_batch` where the table state is."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from grainline.chunkers import CHUNKERS, ChunkContext
from grainline.documents import Chunk, Document, Failure, FileRead, Unchanged
from grainline.embedding import Embedder
from grainline.errors import TerminalError
from grainline.storage.chunks import ChunkStore, DocState
from grainline.storage.ledger import RunCounts, utcnow
from grainline.storage.rows import RowStamp

from .context import RunContext
from grainline.embedding import get_embedder
from .plan import Plan, WorkSpec
from .reuse import RecentVectors, known_vectors, recent_vectors, snapshot_store
from .settings import IngestSettings


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


def read_batches(documents: Iterable[Document | Failure], batch_docs: int) -> Iterator[list[Document | Failure]]:
    """Documents (and failures) in batches of ``batch_docs``, consumed lazily. The
    source manifest's markers ride along without counting, up to 64 per document
    slot, so a batch of files skipped unread stays one small list."""
    it = iter(documents)
    batch: list = []
    n = 0
    for item in it:
        batch.append(item)
        if not isinstance(item, (Unchanged, FileRead)):
            n += 1
        if n >= batch_docs or len(batch) >= 64 * batch_docs:
            yield batch
            batch, n = [], 0
    if batch:
        yield batch


def triage(ctx: RunContext, items: list[Document | Failure]) -> tuple[list[tuple[Document, str]], RunCounts]:
    """Split a batch into the documents that need work (with 'added' or 'updated'),
    counting the unchanged ones and the failures; runs where the table state is.

    The source manifest's markers count too: a file skipped unread (``Unchanged``)
    counts its documents as seen and unchanged; a file read (``FileRead``) may get its
    entry, written here once its documents are committed (``ctx.manifest.flush``)."""
    counts = RunCounts()
    todo: list[tuple[Document, str]] = []
    # The batch's documents' states in one lookup (or none: the table's state is in
    # memory already), never one query per document.
    ctx.states.prefetch(item.doc_id for item in items if isinstance(item, Document))
    if ctx.manifest is not None:
        ctx.manifest.flush(ctx)
    for item in items:
        if isinstance(item, Unchanged):
            counts.files_unchanged += 1
            counts.docs_seen += item.n_docs
            counts.docs_unchanged += item.n_docs
            ctx.manifest.note(item)
            continue
        if isinstance(item, FileRead):
            counts.files_read += 1
            ctx.manifest.note(item)
            continue
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
                  donors: Iterable[ChunkStore] = (), recent: RecentVectors | None = None) -> EmbeddedBatch:
    """Vectors for every distinct content hash in the batch: reused when the same text
    was embedded before (this run's ``recent`` map, the table ``store``, the ``donors``,
    tables of the same model), embedded otherwise; the batch's vectors then go into
    ``recent``."""
    t0 = time.perf_counter()
    wanted: dict[str, Chunk] = {}
    for cd in batch.docs:
        for c in cd.chunks:
            wanted.setdefault(c.content_hash, c)
    known = known_vectors(store, donors, recent, set(wanted))
    vectors = {h: v for h, (v, _) in known.items()}
    n_windows = {h: nw for h, (_, nw) in known.items()}
    todo = [c for h, c in wanted.items() if h not in vectors]
    counts = batch.counts
    if todo:
        vecs, nws = embedder.embed_chunks(todo)
        for c, v, nw in zip(todo, vecs, nws):
            vectors[c.content_hash] = v
            n_windows[c.content_hash] = nw
    if recent is not None:
        recent.put_many({h: (vectors[h], n_windows[h]) for h in wanted})
    counts.chunks_embedded += len(todo)
    counts.chunks_reused += sum(1 for cd in batch.docs for c in cd.chunks) - len(todo)
    counts.add_time("embed", time.perf_counter() - t0)
    return EmbeddedBatch(batch.docs, vectors, n_windows, counts)


def process_docs(spec: WorkSpec, docs: list[tuple[Document, str]]) -> EmbeddedBatch:
    """Chunk and embed documents in any process: what a distributed worker runs. The
    model is loaded once per process; the table is read (for vector reuse) as it was
    when the run started, opened once per process."""
    embedder = get_embedder(spec.settings.embedder)
    if spec.choices is not None:
        embedder.follow(*spec.choices)
    chunked = chunk_docs(spec.plans, docs, ChunkContext.default(embedder.window), spec.settings.reader.max_chunks_per_doc)
    return embed_spec(spec, embedder, chunked)


def embed_spec(spec: WorkSpec, embedder: Embedder, chunked: ChunkedBatch) -> EmbeddedBatch:
    """Embed a chunked batch of the run ``spec`` describes, reusing what it can."""
    dim = embedder.identity.dim
    store = snapshot_store(spec.settings.db, spec.table, dim, spec.reuse_version, spec.run_id) if spec.run_id else \
        ChunkStore(spec.settings.db, spec.table, dim)
    return embed_chunked(embedder, store, chunked, donor_stores(spec.settings, dim),
                         recent_vectors(spec.run_id) if spec.run_id else None)


def donor_stores(settings: IngestSettings, dim: int) -> list[ChunkStore]:
    """The ``reuse_from`` tables, opened for reading vectors by content hash."""
    return [ChunkStore(settings.db, name, dim) for name in settings.reuse_from]


def chunk_batch(ctx: RunContext, items: list[Document | Failure]) -> ChunkedBatch:
    """Triage and chunk a batch in this process."""
    todo, counts = triage(ctx, items)
    batch = chunk_todo(ctx, todo)
    counts.merge(batch.counts)
    batch.counts = counts
    return batch


def chunk_todo(ctx: RunContext, todo: list[tuple[Document, str]]) -> ChunkedBatch:
    """Chunk the documents :func:`triage` found to need work, in this process."""
    return chunk_docs(ctx.plans, todo, ChunkContext.default(ctx.embedder.window), ctx.settings.reader.max_chunks_per_doc)


def embed_batch(ctx: RunContext, batch: ChunkedBatch) -> EmbeddedBatch:
    """Embed a chunked batch in this process."""
    return embed_spec(ctx.spec, ctx.embedder, batch)


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
        replaced = [k for p in ctx.plans for k in p.replaces]
        res = ctx.store.write_documents([(cd.doc, cd.chunks) for cd in batch.docs], batch.vectors, batch.n_windows,
                                        stamp, keys + replaced, all_new=all(cd.status == "added" for cd in batch.docs))
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
        if ctx.manifest is None or not ctx.manifest.collects:
            # Asked for again by no one (the manifest lets go of its files' documents
            # once their entries are written): what a run holds does not grow with it.
            ctx.states.evict(cd.doc.doc_id for cd in batch.docs)
    counts.add_time("write", time.perf_counter() - t0)
    return counts
