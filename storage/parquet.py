"""Parquet export of a chunks table: hive-partitioned by strategy
(``strategy=paragraph/part-0.parquet``), readable by DuckDB, Polars and pyarrow."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa


def default_export_dir(db_uri: str, table_name: str) -> str:
    """``<db>/parquet/<table>``: beside the tables, on the same storage."""
    return f"{db_uri.rstrip('/')}/parquet/{table_name}"


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def export_table(table: Any, out_dir: str, batch_size: int = 4096) -> int:
    """Write every row of a LanceDB table to Parquet under ``out_dir``, streaming in
    batches. A local export is written beside the old one and swapped in, so readers
    never see half an export. Returns the number of rows written."""
    import pyarrow.dataset as ds

    schema: pa.Schema = table.schema
    count = 0

    def batches():
        nonlocal count
        for b in table.search().limit(None).to_batches(batch_size):
            b = pa.RecordBatch.from_arrays([b.column(n) for n in schema.names], schema=schema)
            count += b.num_rows
            yield b

    partitioning = ds.partitioning(pa.schema([schema.field("strategy")]), flavor="hive")
    if _is_local(out_dir):
        final = Path(out_dir.removeprefix("file://"))
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        ds.write_dataset(
            batches(), tmp, schema=schema, format="parquet", partitioning=partitioning,
            basename_template="part-{i}.parquet", max_rows_per_file=1_000_000, max_rows_per_group=16_384,
        )
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        ds.write_dataset(
            batches(), out_dir, schema=schema, format="parquet", partitioning=partitioning,
            basename_template="part-{i}.parquet", existing_data_behavior="delete_matching",
        )
    return count


def read_export(out_dir: str) -> pa.Table:
    """Read an export back with the strategy column restored from the paths."""
    import pyarrow.dataset as ds

    return ds.dataset(out_dir, format="parquet", partitioning="hive").to_table()
