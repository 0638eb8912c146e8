"""Evaluation of chunk granularities and retrieval methods on labelled queries.

It holds the datasets and query sets (``datasets``, ``querysets``, ``queryimport``,
``queryformats``: the query-file formats, ``llmgen``, ``corpus``), the scoring (``metrics``, ``retrieval``, ``stats``), the run's model
(``model``: settings, run record, recommendation rules), its steps (``runner``), the
stored results (``results``), the report (``report``) and the whole run in one process
(``pipeline``). It may import the base modules, chunkers, readers, storage, embedding,
ingestion and search; never flows, the API, the server or the CLI. The names below are
re-exported lazily: importing one submodule (the CLI's argument checks read
``datasets``) does not import numpy, LanceDB and ingestion with it.

May import: chunkers, documents, embedding, errors, ingest, redact, registry, storage, tokens.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "DatasetError": "datasets", "EvalDataset": "datasets", "Query": "datasets", "load_dataset": "datasets",
    "QuerySetError": "querysets", "read_queryset": "querysets",
    "Config": "model", "EvalRun": "model", "EvalSettings": "model", "HEADLINE_METRICS": "model",
    "TIE_ALPHA": "model", "parse_methods": "model", "primary_metric": "model", "recommendation_line": "model",
    "check_queryset": "runner", "state_message": "runner",
    "compare_models_markdown": "report", "write_report": "report",
    "run_eval": "pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
