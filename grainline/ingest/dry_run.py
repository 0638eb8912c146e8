"""What an ingestion would do, without embedding or writing anything."""

from __future__ import annotations

from typing import Any

from grainline.chunkers import ChunkContext
from grainline.readers import open_source, sync_scope
from grainline.storage.chunks import ChunkStore
from grainline.storage.doc_states import DocStates
from grainline.storage.ledger import RunCounts

from .batch import chunk_docs, read_batches, triage
from .context import RunContext
from .manifest import ManifestRun
from grainline.embedding import get_embedder
from .plan import WorkSpec, follow_alias, make_plans, table_name_for
from .run import legacy_ids, source_root, sync_gone
from .settings import IngestSettings


def dry_run(settings: IngestSettings) -> dict[str, Any]:
    """What an ingestion would do, without embedding or writing anything (and without
    the table lock or a ledger row): documents that would be added, updated, unchanged
    or (with ``sync=full``) deleted, failures and skipped files, and how many chunks
    would be written and how many of them embedded (texts with no stored vector)."""
    settings = follow_alias(settings)
    manifest = ManifestRun(rehash=settings.rehash, writable=False)  # loaded below, before anything is read
    found, documents = open_source(settings.source, settings.reader, manifest.unchanged)
    root = source_root(found)
    embedder = get_embedder(settings.embedder)
    table = table_name_for(settings)
    store = ChunkStore(settings.db, table, embedder.identity.dim)
    states = DocStates(store)
    plans = make_plans(settings, embedder)
    # A context like prepare()'s, read-only: nothing here commits or records.
    ctx = RunContext(settings=settings, run_id="dry-run", embedder=embedder, store=store, ledger=None,  # type: ignore[arg-type]
                     spec=WorkSpec(settings, table, plans), root=root, states=states, record=None,  # type: ignore[arg-type]
                     documents=documents, scope=sync_scope(settings.source, settings.reader),
                     legacy_ids=legacy_ids(store, root))
    manifest.load(ctx)
    ctx.manifest = manifest
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
        "files_read": counts.files_read, "files_unchanged": counts.files_unchanged,
    }
