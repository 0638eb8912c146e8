"""The ingestion flow: discover -> read -> chunk -> embed in batches -> write.

Thin wiring over :mod:`grainline.ingest`; every step is a task so the Prefect UI shows
where time goes and I/O steps retry transient errors."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from grainline import ingest as core
from grainline.documents import Document, Failure
from grainline.embedding import DEFAULT_MODEL, EmbedderSettings
from grainline.readers import ReaderSettings
from grainline.storage.chunks import DEFAULT_DB
from grainline.storage.ledger import RunCounts

from .retry import retry_transient

# Run contexts hold a loaded model and open tables; tasks get the run id and look the
# context up, so task inputs stay small and Prefect never tries to inspect a model.
_CONTEXTS: dict[str, core.RunContext] = {}


@task(name="prepare", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def prepare_task(settings: core.IngestSettings, run_id: str | None = None) -> str:
    ctx = core.prepare(settings, run_id)
    _CONTEXTS[ctx.run_id] = ctx
    return ctx.run_id


@task(name="chunk", cache_policy=NO_CACHE)
def chunk_task(run_id: str, items: list[Document | Failure]) -> core.ChunkedBatch:
    return core.chunk_batch(_CONTEXTS[run_id], items)


@task(name="embed", retries=1, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def embed_task(run_id: str, batch: core.ChunkedBatch) -> core.EmbeddedBatch:
    return core.embed_batch(_CONTEXTS[run_id], batch)


@task(name="write", retries=3, retry_delay_seconds=[1, 4, 15], retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def write_task(run_id: str, batch: core.EmbeddedBatch) -> RunCounts:
    return core.write_batch(_CONTEXTS[run_id], batch)


@task(name="finish", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def finish_task(run_id: str, counts: RunCounts, error: str | None = None) -> dict[str, Any]:
    ctx = _CONTEXTS[run_id]
    rec = core.finish(ctx, counts, RuntimeError(error) if error else None)
    return {
        "run_id": rec.run_id,
        "status": rec.status,
        "table": rec.table_name,
        "model_id": rec.model_id,
        "version_before": rec.version_before,
        "version_after": rec.version_after,
        "counts": rec.counts.as_dict(),
        "summary": core.summary_markdown(rec),
    }


@flow(name="grainline-ingest", description="Ingest documents into sentence/paragraph/article chunk vectors in LanceDB and Parquet.")
def ingest_flow(
    source: str,
    strategies: str | list[str] = "sentence,paragraph,article",
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    batch_size: int = 64,
    db: str = DEFAULT_DB,
    sync: str = "incremental",
    long_article: str = "pool",
    batch_docs: int = 64,
    export_parquet: bool = True,
    show_progress: bool = False,
    reader: dict[str, Any] | None = None,
    chunker_overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Ingest ``source`` (folder, file or glob) with the given strategies; returns the
    run's ledger record as a dict and publishes its counts as a Markdown artifact."""
    logger = get_run_logger()
    settings = core.IngestSettings(
        source=source,
        strategies=strategies,
        db=db,
        sync=sync,
        long_article=long_article,
        batch_docs=batch_docs,
        export_parquet=export_parquet,
        chunker_overrides=chunker_overrides or {},
        embedder=EmbedderSettings(model=model, device=device, batch_size=batch_size, show_progress=show_progress),
        reader=ReaderSettings(**(reader or {})),
    )
    run_id = prepare_task(settings)
    counts = RunCounts()
    error: BaseException | None = None
    t_read = time.perf_counter()
    try:
        for items in core.read_batches(settings):
            counts.add_time("read", time.perf_counter() - t_read)
            chunked = chunk_task(run_id, items)
            embedded = embed_task(run_id, chunked)
            counts.merge(write_task(run_id, embedded))
            t_read = time.perf_counter()
    except BaseException as exc:  # recorded in the ledger, then re-raised
        error = exc
    try:
        result = finish_task(run_id, counts, None if error is None else f"{type(error).__name__}: {error}")
    finally:
        _CONTEXTS.pop(run_id, None)
    if error is not None:
        raise error
    c = result["counts"]
    logger.info(
        "run %s: %d documents seen, %d added, %d updated, %d unchanged, %d deleted, %d failed; %d chunks written",
        run_id, c["docs_seen"], c["docs_added"], c["docs_updated"], c["docs_unchanged"], c["docs_deleted"],
        c["docs_failed"], c["chunks_written"],
    )
    for f in c["failures"]:
        logger.warning("failed: %s (%s): %s", f["where"], f["stage"], f["reason"])
    create_markdown_artifact(markdown=result["summary"], key="grainline-ingest-summary", description=f"grainline ingestion {run_id}")
    return result
