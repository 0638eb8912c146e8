"""The ``eval_results`` table: its schema, and the one write to it (appending a run's
rows), made under the table's write lock."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .chunks import connect
from .commits import retry_commit
from .locks import TableLock
from .schema import add_missing_columns
from .tables import open_or_create

# Evaluations take seconds to append; one stuck longer than this is named in the error.
LOCK_TIMEOUT_S = 300.0

EVAL_TABLE = "eval_results"

EVAL_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("time", pa.timestamp("us", tz="UTC")),
        pa.field("dataset", pa.string()),
        pa.field("dataset_spec", pa.string()),
        pa.field("split", pa.string()),
        pa.field("strategy", pa.string()),
        pa.field("chunker_key", pa.string()),
        pa.field("params", pa.string()),
        pa.field("method", pa.string()),
        pa.field("model_id", pa.string()),
        pa.field("metric", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("ci_low", pa.float64()),
        pa.field("ci_high", pa.float64()),
        pa.field("n_queries", pa.int64()),
        pa.field("n_skipped", pa.int64()),
        pa.field("table_name", pa.string()),
        pa.field("table_version", pa.int64()),
        pa.field("sample", pa.int64()),
        pa.field("table_tag", pa.string()),  # tag on (table_name, table_version); pruning keeps it
        pa.field("config", pa.string()),  # the chunking as the report names it (strategy, or with swept settings)
    ]
)


def append_eval_results(db_uri: str, rows: list[dict[str, Any]]) -> Any:
    """Append one evaluation run's ``rows`` (in :data:`EVAL_SCHEMA`) to ``eval_results``,
    created when missing and given the columns a table from an older grainline lacks.
    Returns the table. Evaluations on one database append at the same time; they take
    turns on the table's lock."""
    data = pa.Table.from_pylist(rows, schema=EVAL_SCHEMA)
    run = rows[0]["run_id"] if rows else None
    with TableLock(db_uri, EVAL_TABLE, LOCK_TIMEOUT_S, run_id=run):
        # Created empty, then appended to: create_table(data=...) drops the data when
        # another evaluation created the table a moment before.
        table = open_or_create(connect(db_uri), db_uri, EVAL_TABLE, EVAL_SCHEMA)
        add_missing_columns(table, EVAL_SCHEMA)
        retry_commit(lambda: table.add(data), f"eval_results rows of run {run}")
    return table
