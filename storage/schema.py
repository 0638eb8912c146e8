"""Arrow schemas of grainline's tables. The Parquet export uses the chunks schema too."""

from __future__ import annotations

import pyarrow as pa

CHUNK_COLUMNS_NO_VECTOR = [
    pa.field("chunk_id", pa.string(), nullable=False),
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("strategy", pa.string(), nullable=False),
    pa.field("chunker_key", pa.string(), nullable=False),
    pa.field("params", pa.string()),  # canonical JSON of the chunker parameters
    pa.field("ordinal", pa.int32()),
    pa.field("start", pa.int64()),
    pa.field("end", pa.int64()),
    pa.field("text", pa.string()),
    pa.field("n_tokens", pa.int32()),  # cl100k tokens
    pa.field("n_model_tokens", pa.int32()),  # the embedding model's tokens
    pa.field("exceeds_model_limit", pa.bool_()),
    pa.field("handling", pa.string()),  # plain | split | pool | truncate
    pa.field("n_windows", pa.int32()),  # model windows embedded for this vector
    pa.field("content_hash", pa.string()),
    pa.field("doc_hash", pa.string()),
    pa.field("source", pa.string()),
    pa.field("source_root", pa.string()),
    pa.field("title", pa.string()),
    pa.field("metadata", pa.string()),  # JSON
    pa.field("model_id", pa.string()),
    pa.field("model_max_seq_length", pa.int32()),
]
TAIL = [
    pa.field("run_id", pa.string()),
    pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
]


def chunks_schema(dim: int) -> pa.Schema:
    """Schema of a chunks table whose vectors have ``dim`` dimensions."""
    return pa.schema(
        CHUNK_COLUMNS_NO_VECTOR
        + [pa.field("vector", pa.list_(pa.float32(), dim))]
        + TAIL
    )


RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("flow", pa.string()),  # ingest | eval
        pa.field("status", pa.string()),  # running | completed | failed
        pa.field("started", pa.timestamp("us", tz="UTC")),
        pa.field("finished", pa.timestamp("us", tz="UTC")),
        pa.field("source", pa.string()),
        pa.field("table_name", pa.string()),
        pa.field("model_id", pa.string()),
        pa.field("parameters", pa.string()),  # JSON
        pa.field("docs_seen", pa.int64()),
        pa.field("docs_added", pa.int64()),
        pa.field("docs_updated", pa.int64()),
        pa.field("docs_unchanged", pa.int64()),
        pa.field("docs_deleted", pa.int64()),
        pa.field("docs_failed", pa.int64()),
        pa.field("chunks_written", pa.int64()),
        pa.field("chunks_deleted", pa.int64()),
        pa.field("chunks_embedded", pa.int64()),
        pa.field("chunks_reused", pa.int64()),
        pa.field("stage_seconds", pa.string()),  # JSON {stage: seconds}
        pa.field("failures", pa.string()),  # JSON [{where, reason, stage}]
        pa.field("version_before", pa.int64()),
        pa.field("version_after", pa.int64()),
        pa.field("error", pa.string()),
        # Table maintenance after the run (storage/maintenance.py); null in rows
        # written before these columns existed.
        pa.field("fragments", pa.int64()),
        pa.field("versions", pa.int64()),
        pa.field("unindexed_rows", pa.int64()),
        pa.field("maintenance", pa.string()),  # JSON: what was done, figures before/after, seconds
        # Files of the source that no reader reads, and which (JSON [{where, reason}]).
        pa.field("docs_skipped", pa.int64()),
        pa.field("skipped", pa.string()),
        # Files read, and skipped unread by the source manifest (storage/manifest.py).
        pa.field("files_read", pa.int64()),
        pa.field("files_unchanged", pa.int64()),
    ]
)


def add_missing_columns(table, schema: pa.Schema) -> list[str]:
    """Give an existing table the nullable columns of ``schema`` it lacks (a table
    created by an older grainline); returns their names. Existing rows read null."""
    have = set(table.schema.names)
    missing = [f for f in schema if f.name not in have]
    if missing:
        table.add_columns([f.with_nullable(True) for f in missing])
    return [f.name for f in missing]
