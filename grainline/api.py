"""grainline from Python: the main jobs as plain functions, run in this process
without a Prefect server (the CLI's ``ingest`` and ``eval`` run the same code as
Prefect flows: ``grainline.flows.ingest.ingest_flow``, ``grainline.flows.evaluate``).

    from grainline.api import Document, evaluate, ingest, ingest_documents, search

Each function validates its arguments with the same settings objects the CLI uses
and raises ``ValueError`` naming a bad value."""

from __future__ import annotations

from typing import Any, Iterable

from grainline.defaults import DEFAULT_DB, DEFAULT_MODEL
from grainline.documents import Document

__all__ = ["Document", "evaluate", "ingest", "ingest_documents", "search"]

_STRATEGIES = ("sentence", "paragraph", "article")


def _embedder(model: str, device: str, precision: str = "auto", backend: str = "torch") -> Any:
    from grainline.embedding import EmbedderSettings

    return EmbedderSettings(model=model, device=device, precision=precision, backend=backend)


def ingest(source: str, db: str = DEFAULT_DB, strategies: Iterable[str] | str = _STRATEGIES, *, sync: str = "incremental",
           model: str = DEFAULT_MODEL, device: str = "auto", export_parquet: bool = True, **settings: Any) -> Any:
    """Ingest a folder (recursively), a file or a glob into ``db``; returns the run's
    ledger record (``.status``, ``.counts``, ``.table_name``, versions). Further
    :class:`grainline.ingest.IngestSettings` fields go in ``settings``."""
    from grainline.ingest import IngestSettings, run_ingest

    return run_ingest(IngestSettings(source=str(source), db=db, strategies=strategies, sync=sync,
                                     embedder=_embedder(model, device), export_parquet=export_parquet, **settings))


def ingest_documents(documents: Iterable[Document | dict[str, Any]], db: str = DEFAULT_DB, *, source: str = "python",
                     strategies: Iterable[str] | str = _STRATEGIES, sync: str = "incremental", model: str = DEFAULT_MODEL,
                     device: str = "auto", export_parquet: bool = True, **settings: Any) -> Any:
    """Ingest documents held in memory: :class:`Document` values or dicts with
    ``doc_id`` and ``text`` (optional ``title``, ``metadata``, ``source``). Their ids
    are kept as given; ``source`` labels them (``sync="full"`` deletes the documents of
    that label that are not passed again)."""
    from grainline.ingest import IngestSettings, run_ingest

    docs = [d if isinstance(d, Document) else Document(**d) for d in documents]
    return run_ingest(IngestSettings(source=source, db=db, strategies=strategies, sync=sync, embedder=_embedder(model, device),
                                     export_parquet=export_parquet, **settings), documents=docs)


def search(query: str, db: str = DEFAULT_DB, *, strategy: str = "paragraph", k: int = 5, method: str = "dense",
           metadata: list[str] | None = None, where: str | None = None, model: str = DEFAULT_MODEL,
           device: str = "auto") -> list[Any]:
    """The ``k`` best chunks of ``strategy`` for ``query``: ``method`` dense, bm25 or
    hybrid; ``metadata`` ``KEY=VALUE`` pairs the document metadata must hold; ``where``
    a SQL filter on the table's columns. Hits have ``rank``, ``score`` and ``row``."""
    from grainline.search import search as _search

    return _search(query, db, strategy, k, _embedder(model, device), where=where, method=method, metadata=metadata)


def evaluate(dataset: str, db: str = DEFAULT_DB, *, strategies: Iterable[str] | str = _STRATEGIES,
             methods: Iterable[str] | str = ("dense", "bm25", "hybrid"), sample: int | None = None,
             reports_dir: str = "reports", model: str = DEFAULT_MODEL, device: str = "auto", **settings: Any) -> Any:
    """Evaluate the strategies and methods on a labelled dataset (``squad:PATH``,
    ``beir:PATH``, ``scifact:PATH`` or ``spans:PATH``); returns the run, whose
    ``.results`` are the ``eval_results`` rows (strategy, method, metric, value) and
    whose report lands in ``reports_dir``."""
    from grainline.evaluation import EvalSettings, parse_methods, run_eval

    return run_eval(EvalSettings(dataset=dataset, db=db, strategies=strategies, methods=parse_methods(methods),
                                 sample=sample, reports_dir=reports_dir, embedder=_embedder(model, device), **settings))
