"""Parquet export of a table, one tree per table (``<db>/parquet/<table>/``), so the
glob ``<db>/parquet/<table>/*/*.parquet`` never mixes schemas. Hive-partitioned by
strategy (``strategy=paragraph/frag-000012-0000-<fingerprint>.parquet``: a file per
strategy and segment of a lance fragment, see storage/export_segments.py, so that an
export rewrites only what changed), with ``strategy`` also stored in the files, so a
reader that ignores the path still has it. Vectors are Arrow fixed-size
lists (Polars and pyarrow read ``Array(Float32, dim)``); Parquet itself has no
fixed-size list, so DuckDB reads ``FLOAT[]``: ``_duckdb.sql`` in the export defines a
view with ``vector`` as ``FLOAT[dim]`` and ``metadata`` as ``JSON``."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from .export_segments import (FORMAT, SEGMENT_ROWS, Plan, Segment, live_segments, marker_segments, plan, schema_fingerprint,
                              with_row_ids)

# Written inside an export, last: which table version the export holds, and the files
# of each segment (what the next export compares with). Readers skip
# it (pyarrow ignores names starting with '_'; DuckDB and Polars glob *.parquet).
MARKER = "_grainline_export.json"
# A DuckDB view over the export with typed columns (see the module docstring).
DUCKDB_VIEW = "_duckdb.sql"
# Rows taken from the table per query, and rows per Parquet row group.
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


@dataclass
class ExportReport:
    """What one export did: the rows it holds, and the work it took (files and rows
    written against files kept from the previous export)."""

    version: int | None
    rows: int = 0
    rows_written: int = 0
    files_written: int = 0
    files_kept: int = 0
    files_deleted: int = 0
    # Why every file was written (no previous export, an old format, ...); None when
    # the export only wrote what changed.
    full: str | None = None


def _marker_text(table: Any, version: int | None, rows: int, schema_fp: str, segments: list[dict],
                 fragments: dict[str, str] | None) -> str:
    # ``fragments``: each fragment's metadata hash, so the next export scans only the
    # fragments that changed (storage/export_segments.py).
    return json.dumps({"format": FORMAT, "table": getattr(table, "name", None), "version": version, "rows": rows,
                       "exported_at": datetime.now(timezone.utc).isoformat(), "schema": schema_fp,
                       "segment_rows": SEGMENT_ROWS, "segments": segments, "fragments": fragments})


def read_marker(out_dir: str) -> dict | None:
    """The marker of the export in ``out_dir`` (None: no complete export, or unreadable)."""
    try:
        if _is_local(out_dir):
            text = (Path(out_dir.removeprefix("file://")) / MARKER).read_text()
        else:
            fs, path = filesystem(out_dir)
            with fs.open_input_stream(f"{path}/{MARKER}") as f:
                text = f.read().decode()
        marker = json.loads(text)
        return marker if isinstance(marker, dict) else None
    except (OSError, ValueError):
        return None


def exported_version(out_dir: str) -> int | None:
    """The table version an export was made from, or None when there is no complete
    export (never made, interrupted, or made before versions were recorded)."""
    marker = read_marker(out_dir)
    return marker.get("version") if marker else None


def exported_files(out_dir: str) -> list[str] | None:
    """The export's Parquet files as its marker lists them (paths relative to
    ``out_dir``), or None for an export whose marker lists none (older format)."""
    marker = read_marker(out_dir)
    if not marker or marker.get("format") != FORMAT:
        return None
    return sorted(f for s in marker.get("segments", []) for f in s.get("files", []))


def _clear_leftovers(final: Path) -> None:
    """Remove the temporary and replaced exports of writers that died mid-export. Only
    called while holding the export lock, so no live writer owns them."""
    for p in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in final.parent.glob(f".{final.name}.old-*"):
        shutil.rmtree(p, ignore_errors=True)


def export_table(table: Any, out_dir: str, batch_size: int = 4096) -> ExportReport:
    """Bring the Parquet export under ``out_dir`` to the table's current version,
    rewriting only the segments of fragments that changed since the previous export
    (storage/export_segments.py), with a marker naming the table version it holds
    (:func:`exported_version`) and the files each segment is in.

    A local export is built beside the old one (its unchanged files hard-linked, the
    changed ones written) and swapped in under a file lock, so readers never see half
    an export and a writer killed mid-way leaves the previous export (or none) in place.
    On an object store the new files are written under new names, then the marker and
    the DuckDB view listing the exact files, then the files no longer listed are
    deleted. A first export, one of an older format, or one whose table was recreated
    or had its columns changed is written whole. ``batch_size`` is the rows per batch
    taken from the table."""
    schema: pa.Schema = table.schema
    version = getattr(table, "version", None)
    schema_fp = schema_fingerprint(schema)
    report = ExportReport(version=version)
    if _is_local(out_dir):
        from filelock import FileLock

        final = Path(out_dir.removeprefix("file://"))
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final.with_name(f".{final.name}.lock")), thread_local=False):
            _clear_leftovers(final)
            before = read_marker(str(final))
            segments, fps = live_segments(table, schema_fp, before)
            todo = plan(segments, before, schema_fp, version)
            report.full = todo.full
            tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
            try:
                tmp.mkdir()
                done = _link_kept(final, tmp, todo, report)
                for seg in with_row_ids(table, schema_fp, todo.write):
                    done.append((seg, _write_segment(table, seg, str(tmp), schema, batch_size, report)))
                _check_unchanged(table, version)
                (tmp / DUCKDB_VIEW).write_text(duckdb_view_sql(table, str(final.resolve()), schema))
                report.rows = sum(s.rows for s in segments)
                marker = tmp / MARKER
                marker.write_text(_marker_text(table, version, report.rows, schema_fp, marker_segments(done), fps))
                with open(marker, "rb+") as f:
                    os.fsync(f.fileno())
            except BaseException:
                # A full disk, say: the half-written export goes now, not at the next run.
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            if final.exists():
                report.files_deleted = len(set(_parquet_files_local(final)) - set(_parquet_files_local(tmp)))
            # Two renames: in between there is no export at all (never half of one).
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
    else:
        _export_object_store(table, out_dir, schema, schema_fp, version, batch_size, report)
    return report


def _parquet_files_local(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.glob("*/*.parquet")]


def _link_kept(final: Path, tmp: Path, todo: Plan, report: ExportReport) -> list[tuple[Segment, list[str]]]:
    """Hard-link the kept segments' files into the new tree (O(files), not O(bytes)); a
    segment whose files are gone (deleted by hand) moves to the segments to write."""
    done = []
    for seg, files in todo.keep:
        linked = []
        try:
            for rel in files:
                dst = tmp / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(final / rel, dst)
                except FileNotFoundError:
                    raise
                except OSError:  # a filesystem without hard links: a copy, O(bytes) but right
                    shutil.copy2(final / rel, dst)
                linked.append(dst)
        except FileNotFoundError:
            for dst in linked:  # never written into: the rewrite gets new files of its own
                dst.unlink()
            todo.write.append(seg)
            continue
        report.files_kept += len(files)
        done.append((seg, files))
    return done


def _check_unchanged(table: Any, version: int | None) -> None:
    now = getattr(table, "version", None)
    if now != version:
        raise RuntimeError(f"the table changed during the export (version {version} -> {now})")


def _write_segment(table: Any, seg: Segment, folder: str, schema: pa.Schema, batch_size: int,
                   report: ExportReport, fs: Any = None) -> list[str]:
    """Write one segment's rows, a file per strategy (``strategy`` stays in the files
    too: Polars, or DuckDB without hive_partitioning, read it there); returns the
    files' paths relative to ``folder``."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    writers: dict[str, Any] = {}
    ids = np.sort(seg.row_ids)
    try:
        for start in range(0, len(ids), max(1, min(batch_size, PAGE_ROWS))):
            want = ids[start:start + max(1, min(batch_size, PAGE_ROWS))]
            got = table.take_row_ids(want.tolist()).with_row_id().to_arrow()
            if not np.array_equal(np.sort(got.column("_rowid").to_numpy().astype(np.uint64)), want):
                raise RuntimeError(f"the table changed during the export: fragment {seg.fragment} "
                                   f"returned {got.num_rows} of its {len(want)} rows")
            page = pa.Table.from_arrays([got.column(n) for n in schema.names], schema=schema)
            strategies = page.column("strategy")
            for strategy in pc.unique(strategies).to_pylist():
                part = page.filter(pc.equal(strategies, strategy))
                w = writers.get(strategy)
                if w is None:
                    rel = seg.file_name(strategy)
                    d = f"{folder}/{rel.rsplit('/', 1)[0]}"
                    if fs is None:
                        Path(d).mkdir(parents=True, exist_ok=True)
                    else:
                        fs.create_dir(d)
                    w = writers[strategy] = pq.ParquetWriter(f"{folder}/{rel}", schema, filesystem=fs)
                w.write_table(part, row_group_size=ROW_GROUP_ROWS)
            report.rows_written += page.num_rows
    finally:
        for w in writers.values():
            w.close()
    report.files_written += len(writers)
    return [seg.file_name(s) for s in writers]


def _export_object_store(table: Any, out_dir: str, schema: pa.Schema, schema_fp: str, version: int | None,
                         batch_size: int, report: ExportReport) -> None:
    """Object stores cannot swap a folder: new files go under new names beside the
    current ones, then the marker (one PUT) switches to them, then the files it no
    longer lists are deleted. A reader of the marker's list (:func:`read_export`, the
    view) always sees one complete export; a reader that globs the folder may, while an
    export runs, see the new files beside the old ones."""
    import pyarrow.fs as pafs

    fs, path = filesystem(out_dir)
    present = {info.path[len(path) + 1:] for info in
               fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
               if info.type == pafs.FileType.File}
    before = read_marker(out_dir)
    segments, fps = live_segments(table, schema_fp, before)
    todo = plan(segments, before, schema_fp, version)
    report.full = todo.full
    done = []
    for seg, files in todo.keep:
        if all(f in present for f in files):
            report.files_kept += len(files)
            done.append((seg, files))
        else:
            todo.write.append(seg)
    for seg in with_row_ids(table, schema_fp, todo.write):
        done.append((seg, _write_segment(table, seg, path, schema, batch_size, report, fs)))
    _check_unchanged(table, version)
    listed = sorted(f for _, files in done for f in files)
    report.rows = sum(s.rows for s in segments)
    with fs.open_output_stream(f"{path}/{DUCKDB_VIEW}") as f:
        f.write(duckdb_view_sql(table, out_dir, schema, files=listed).encode())
    with fs.open_output_stream(f"{path}/{MARKER}") as f:
        f.write(_marker_text(table, version, report.rows, schema_fp, marker_segments(done), fps).encode())
    keep = set(listed)
    for rel in sorted(present):
        if rel.startswith("strategy=") and rel not in keep:
            fs.delete_file(f"{path}/{rel}")
            report.files_deleted += rel.endswith(".parquet")


def duckdb_view_sql(table: Any, out_dir: str, schema: pa.Schema, files: list[str] | None = None) -> str:
    """``CREATE OR REPLACE VIEW <table>`` over the export, with ``vector`` as
    ``FLOAT[dim]`` (so ``array_cosine_similarity(vector, ?::FLOAT[dim])`` needs no
    cast) and ``metadata`` as ``JSON`` (``metadata->>'$.topic'``). Over the glob
    ``<out_dir>/*/*.parquet``, or over exactly ``files`` (relative to ``out_dir``: an
    object-store export, where the glob may see files of an export under way)."""
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
    def quote(path: str) -> str:
        return "'" + path.replace("'", "''") + "'"

    base = out_dir.rstrip("/")
    source = quote(base + "/*/*.parquet")
    if files:
        source = "[" + ", ".join(quote(f"{base}/{f}") for f in files) + "]"
    return (f"-- grainline: the export of table {name}; in duckdb: .read {base}/{DUCKDB_VIEW}\n"
            f"CREATE OR REPLACE VIEW \"{name}\" AS SELECT *{replace} FROM read_parquet({source});\n")


def read_export(out_dir: str, columns: list[str] | None = None) -> pa.Table:
    """Read an export back (the files its marker lists, or every Parquet file under it
    for an export of an older format; ``strategy`` is in the files), all columns or
    only ``columns``."""
    import pyarrow.dataset as ds

    files = exported_files(out_dir)
    if _is_local(out_dir):
        fs, path = None, out_dir.removeprefix("file://")
    else:
        fs, path = filesystem(out_dir)
    if files:
        return ds.dataset([f"{path}/{f}" for f in files], filesystem=fs, format="parquet").to_table(columns=columns)
    return ds.dataset(path, filesystem=fs, format="parquet", exclude_invalid_files=False,
                      ignore_prefixes=[".", "_"]).to_table(columns=columns)
