"""Parquet export of a table, one tree per table (``<db>/parquet/<table>/``), so the
glob ``<db>/parquet/<table>/*/*.parquet`` never mixes schemas. Hive-partitioned by
strategy (``strategy=paragraph/part-0.parquet``), with ``strategy`` also stored in the
files, so a reader that ignores the path still has it. Vectors are Arrow fixed-size
lists (Polars and pyarrow read ``Array(Float32, dim)``); Parquet itself has no
fixed-size list, so DuckDB reads ``FLOAT[]``: ``_duckdb.sql`` in the export defines a
view with ``vector`` as ``FLOAT[dim]`` and ``metadata`` as ``JSON``."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

# Written inside an export, last: which table version the export holds. Readers skip
# it (pyarrow ignores names starting with '_'; DuckDB and Polars glob *.parquet).
MARKER = "_grainline_export.json"
# A DuckDB view over the export with typed columns (see the module docstring).
DUCKDB_VIEW = "_duckdb.sql"
# Rows read from the table per query, and rows per Parquet row group.
PAGE_ROWS = 16_384
ROW_GROUP_ROWS = 16_384


def default_export_dir(db_uri: str, table_name: str) -> str:
    """``<db>/parquet/<table>``: beside the tables, on the same storage."""
    return f"{db_uri.rstrip('/')}/parquet/{table_name}"


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def filesystem(uri: str) -> tuple[Any, str]:
    """pyarrow's filesystem and path for an object-store URI, configured from the same
    environment as LanceDB: pyarrow reads ``AWS_ENDPOINT_URL`` itself, but not the
    ``AWS_ENDPOINT`` that LanceDB (object_store) also accepts."""
    import pyarrow.fs as pafs

    endpoint = os.environ.get("AWS_ENDPOINT")
    if uri.startswith(("s3://", "s3a://")) and endpoint and not os.environ.get("AWS_ENDPOINT_URL"):
        scheme, _, host = endpoint.rpartition("://")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        fs = pafs.S3FileSystem(endpoint_override=host.rstrip("/"), scheme=scheme or "https", region=region)
        return fs, uri.split("://", 1)[1].rstrip("/")
    return pafs.FileSystem.from_uri(uri)


def _marker_text(table: Any, version: int | None, rows: int) -> str:
    return json.dumps({"table": getattr(table, "name", None), "version": version, "rows": rows,
                       "exported_at": datetime.now(timezone.utc).isoformat()})


def exported_version(out_dir: str) -> int | None:
    """The table version an export was made from, or None when there is no complete
    export (never made, interrupted, or made before versions were recorded)."""
    try:
        if _is_local(out_dir):
            text = (Path(out_dir.removeprefix("file://")) / MARKER).read_text()
        else:
            import pyarrow.fs as pafs

            fs, path = filesystem(out_dir)
            with fs.open_input_stream(f"{path}/{MARKER}") as f:
                text = f.read().decode()
        return json.loads(text).get("version")
    except (OSError, ValueError):
        return None


def _clear_leftovers(final: Path) -> None:
    """Remove the temporary and replaced exports of writers that died mid-export. Only
    called while holding the export lock, so no live writer owns them."""
    for p in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in final.parent.glob(f".{final.name}.old-*"):
        shutil.rmtree(p, ignore_errors=True)


def export_table(table: Any, out_dir: str, batch_size: int = 4096) -> int:
    """Write every row of a LanceDB table to Parquet under ``out_dir``, streaming in
    batches, with a marker naming the table version it holds (:func:`exported_version`).

    A local export is written beside the old one and swapped in under a file lock, so
    readers never see half an export and a writer killed mid-way leaves the previous
    export (or none) in place. Returns the number of rows written."""

    schema: pa.Schema = table.schema
    version = getattr(table, "version", None)
    count = 0

    def batches():
        # Page by page: one unbounded scan buffers most of the table (peak RSS grew
        # with it: 1.1 GiB for a 200k-row table against 0.5 GiB paged).
        nonlocal count
        total = table.count_rows()
        for offset in range(0, total, PAGE_ROWS):
            page = table.search().limit(PAGE_ROWS).offset(offset).to_arrow()
            for b in page.to_batches(batch_size):
                b = pa.RecordBatch.from_arrays([b.column(n) for n in schema.names], schema=schema)
                count += b.num_rows
                yield b
        if count != total:
            raise RuntimeError(f"export read {count} rows of a {total}-row table; the table changed during the export")

    if _is_local(out_dir):
        from filelock import FileLock

        final = Path(out_dir.removeprefix("file://"))
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final.with_name(f".{final.name}.lock")), thread_local=False):
            _clear_leftovers(final)
            tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
            try:
                _write_partitioned(batches(), tmp, schema)
                (tmp / DUCKDB_VIEW).write_text(duckdb_view_sql(table, str(final.resolve()), schema))
                marker = tmp / MARKER
                marker.write_text(_marker_text(table, version, count))
                with open(marker, "rb+") as f:
                    os.fsync(f.fileno())
            except BaseException:
                # A full disk, say: the half-written export goes now, not at the next run.
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            # Two renames: in between there is no export at all (never half of one).
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
    else:
        # Object stores cannot swap a folder: drop the marker first and write it last,
        # so an export interrupted mid-way is known to be incomplete and redone.
        import pyarrow.fs as pafs

        fs, path = filesystem(out_dir)
        try:
            fs.delete_file(f"{path}/{MARKER}")
        except (OSError, FileNotFoundError):
            pass
        for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
            if info.type == pafs.FileType.Directory and info.base_name.startswith("strategy="):
                fs.delete_dir(info.path)  # partitions of the old export (a strategy may be gone)
        _write_partitioned(batches(), path, schema, fs)
        with fs.open_output_stream(f"{path}/{DUCKDB_VIEW}") as f:
            f.write(duckdb_view_sql(table, out_dir, schema).encode())
        with fs.open_output_stream(f"{path}/{MARKER}") as f:
            f.write(_marker_text(table, version, count).encode())
    return count


def duckdb_view_sql(table: Any, out_dir: str, schema: pa.Schema) -> str:
    """``CREATE OR REPLACE VIEW <table>`` over the export, with ``vector`` as
    ``FLOAT[dim]`` (so ``array_cosine_similarity(vector, ?::FLOAT[dim])`` needs no
    cast) and ``metadata`` as ``JSON`` (``metadata->>'$.topic'``)."""
    name = str(getattr(table, "name", None) or Path(out_dir).name)
    casts = []
    if "vector" in schema.names:
        vt = schema.field("vector").type
        dim = getattr(vt, "list_size", None)
        if dim:
            casts.append(f"CAST(vector AS FLOAT[{dim}]) AS vector")
    if "metadata" in schema.names:
        casts.append("CAST(metadata AS JSON) AS metadata")
    replace = f" REPLACE ({', '.join(casts)})" if casts else ""
    glob = out_dir.rstrip("/") + "/*/*.parquet"
    return (f"-- grainline: the export of table {name}; in duckdb: .read {out_dir.rstrip('/')}/{DUCKDB_VIEW}\n"
            f"CREATE OR REPLACE VIEW \"{name}\" AS SELECT *{replace} FROM read_parquet('{glob.replace(chr(39), chr(39) * 2)}');\n")


def _write_partitioned(batches: Any, folder: Path | str, schema: pa.Schema, fs: Any = None) -> None:
    """Hive partitions by strategy (``strategy=x/part-0.parquet``), written as the
    batches come: a writer per strategy, no queue (pyarrow's dataset writer queues
    batches it has not written yet, hundreds of MiB on a big table). ``strategy``
    stays in the files too: Polars, or DuckDB without hive_partitioning, read it there."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    file_schema = schema
    writers: dict[str, Any] = {}
    try:
        for b in batches:
            strategies = b.column("strategy")
            for strategy in pc.unique(strategies).to_pylist():
                part = pa.Table.from_batches([b.filter(pc.equal(strategies, strategy))])
                w = writers.get(strategy)
                if w is None:
                    d = f"{folder}/strategy={strategy}"
                    if fs is None:
                        Path(d).mkdir(parents=True, exist_ok=True)
                    else:
                        fs.create_dir(d)
                    w = writers[strategy] = pq.ParquetWriter(f"{d}/part-0.parquet", file_schema, filesystem=fs)
                w.write_table(part, row_group_size=ROW_GROUP_ROWS)
    finally:
        for w in writers.values():
            w.close()
    if fs is None:
        Path(folder).mkdir(parents=True, exist_ok=True)  # an empty table still gets a (complete) export


def read_export(out_dir: str, columns: list[str] | None = None) -> pa.Table:
    """Read an export back (every Parquet file under it; ``strategy`` is in the files),
    all columns or only ``columns``."""
    import pyarrow.dataset as ds

    if _is_local(out_dir):
        return ds.dataset(out_dir.removeprefix("file://"), format="parquet", exclude_invalid_files=False,
                          ignore_prefixes=[".", "_"]).to_table(columns=columns)
    fs, path = filesystem(out_dir)
    return ds.dataset(path, filesystem=fs, format="parquet", exclude_invalid_files=False,
                      ignore_prefixes=[".", "_"]).to_table(columns=columns)
