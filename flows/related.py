"""Precompute the related-documents table of a collection (thin wiring over
:mod:`grainline.related`); schedule it after ingestion."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from grainline.embedding import DEFAULT_MODEL
from grainline.related import RelatedSettings, precompute_related
from grainline.storage.chunks import DEFAULT_DB

from .retry import retry_transient


@task(name="precompute-related", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def precompute_task(settings: RelatedSettings) -> dict[str, Any]:
    # Re-running is safe: every block is an upsert on (table, strategy, doc, rank).
    return precompute_related(settings)


@flow(name="grainline-related", description="Top-k related documents of every document, into the related_docs table.")
def related_flow(
    db: str = DEFAULT_DB,
    table: str | None = None,
    model: str = DEFAULT_MODEL,
    strategy: str = "paragraph",
    k: int = 10,
    block_size: int = 1024,
) -> Any:
    """Compute and store; the final state's message gives the counts."""
    settings = RelatedSettings(db=db, table=table, model=model, strategy=strategy, k=k, block_size=block_size)
    out = precompute_task(settings)
    message = (f"related_docs: {out['documents']} documents x k={out['k']} from {out['table']} v{out['table_version']} "
               f"({out['strategy']}): {out['inserted']} inserted, {out['updated']} updated, {out['deleted']} deleted")
    get_run_logger().info(message)
    create_markdown_artifact(
        markdown="| " + " | ".join(out) + " |\n|" + "---|" * len(out) + "\n| " + " | ".join(str(v) for v in out.values()) + " |",
        key="grainline-related", description=message,
    )
    return Completed(message=message, data=out)
