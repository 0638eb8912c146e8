"""What a run fixes before its first batch: the table it writes and each strategy's
plan (settings, parameters, chunker key), and the picklable :class:`WorkSpec` a worker
chunks and embeds from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grainline.chunkers import ChunkContext, ChunkerSettings, chunker_key, chunker_params, superseded_keys
from grainline.embedding import Embedder

from grainline.embedding import get_embedder
from .settings import IngestSettings


@dataclass(frozen=True)
class Plan:
    """One strategy with its settings, parameters and key, fixed for a run."""

    strategy: str
    settings: ChunkerSettings
    params: str
    key: str
    # Keys of rows this plan's chunks replace when it re-chunks a document (rows cut
    # before a setting existed: chunkers.superseded_keys).
    replaces: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkSpec:
    """Everything a worker needs to chunk and embed a batch, and nothing that cannot
    be pickled: a worker on another machine rebuilds the model and table from it."""

    settings: IngestSettings
    table: str
    plans: tuple[Plan, ...]
    # The run (its recent-vector map) and the table version it started from: vectors
    # are reused from that version, whose rows the content_hash index covers.
    run_id: str = ""
    reuse_version: int | None = None
    # What the writing process's model chose for auto (Embedder.choices): workers
    # follow it, so one run's vectors come from one backend at one precision. None
    # until the run first has documents to embed.
    choices: tuple[Any, Any] | None = None


def table_name_for(settings: IngestSettings) -> str:
    """The chunks table this run writes: the model's own, unless overridden. Settings
    that still ask to follow the alias are refused: the table and the model that
    embeds for it must come from the same :func:`follow_alias`."""
    if settings.follow_alias:
        raise ValueError("internal: resolve the alias with grainline.ingest.plan.follow_alias(settings) before the run")
    return settings.table or get_embedder(settings.embedder).identity.table_name


def follow_alias(settings: IngestSettings) -> IngestSettings:
    """``settings`` with the table and model the database's alias names (one small
    read, ``storage/alias.py``) when ``follow_alias`` is set and there is an alias:
    the run then writes to the promoted table with the model that made its vectors.
    Without an alias, the default model's table as before. The result no longer
    follows (resolving twice changes nothing)."""
    if not settings.follow_alias:
        return settings
    from grainline.storage.alias import read_alias

    alias = read_alias(settings.db)
    update: dict = {"follow_alias": False}
    if alias is not None and settings.table is None:
        t = alias.target
        update["table"] = t.table
        update["embedder"] = settings.embedder.model_copy(update={"model": t.model, "head": t.head, **(
            {"precision": t.precision} if t.precision != "auto" else {})})
    return settings.model_copy(update=update)


def make_plans(settings: IngestSettings, embedder: Embedder) -> tuple[Plan, ...]:
    """Each requested strategy with its settings, parameters and chunker key."""
    chunk_ctx = ChunkContext.default(embedder.window)
    plans = []
    for strategy, cs in settings.chunker_settings().items():
        params = chunker_params(strategy, cs, chunk_ctx)
        plans.append(Plan(strategy, cs, params, chunker_key(strategy, params), superseded_keys(strategy, cs, chunk_ctx)))
    return tuple(plans)
