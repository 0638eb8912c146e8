"""Ingestion, step by step, without Prefect: read -> triage -> chunk -> embed -> write.

A run is :func:`prepare` (the table's write lock, its state, the ledger row), then
:func:`run_batches` (the one batch loop: the Prefect flow in ``flows/ingest.py`` drives
it with its tasks, :func:`run_ingest` and the tests with plain calls), then
:func:`finish` (deletions, maintenance, the export, how the run ended). Each step takes
and returns plain values, so a test or another orchestrator can drive them.

May import the base (``grainline.documents``, ``errors``, ``redact``, ``memory``),
chunkers, readers, storage and embedding; never evaluation, flows, the CLI or the API.

May import: chunkers, defaults, documents, embedding, errors, memory, readers, redact, storage.
"""

from .batch import (ChunkedBatch, ChunkedDoc, EmbeddedBatch, TooManyChunks, chunk_batch, chunk_docs, chunk_todo,
                    donor_stores, embed_batch, embed_chunked, process_docs, read_batches, triage, write_batch)
from .context import RunContext, active_run
from .dry_run import dry_run
from .ends import ExportFailed, LedgerWriteFailed, RunInterrupted, interrupt_signal, record_end, record_precision, undo_command
from .plan import Plan, WorkSpec, follow_alias, make_plans, table_name_for
from .run import export_dir, finish, prepare, run_batches, run_ingest, sync_gone
from .settings import STRATEGIES, IngestSettings, parse_strategies
from .summary import summary_markdown

__all__ = [
    "STRATEGIES", "active_run", "ChunkedBatch", "ChunkedDoc", "EmbeddedBatch", "ExportFailed", "IngestSettings", "LedgerWriteFailed",
    "Plan", "RunContext", "RunInterrupted", "TooManyChunks", "WorkSpec", "chunk_batch", "chunk_docs", "chunk_todo", "donor_stores",
    "dry_run", "embed_batch", "embed_chunked", "export_dir", "finish", "follow_alias", "interrupt_signal",
    "make_plans", "parse_strategies", "prepare", "process_docs", "read_batches", "record_end", "record_precision",
    "run_batches", "run_ingest", "summary_markdown", "sync_gone", "table_name_for", "triage", "undo_command",
    "write_batch",
]
