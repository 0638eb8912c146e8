"""Bench of the Parquet export after a small change: builds a chunks table of ROWS rows
straight with LanceDB (random 384-dim vectors, the chunks schema; no model), exports it,
upserts CHANGED rows (new text and vectors for existing chunk ids, as an edited document
does), and times the export that follows, with the bytes it wrote (/proc/self/io wchar),
for this checkout's export and for the whole-table export of a git revision.

    .venv/bin/python scripts/export_speed.py [--rows 100000] [--changed 10] [--old-rev b3a7999]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def rows(start: int, n: int, dim: int, rng: np.random.Generator, tag: str = "") -> pa.Table:
    from storage.schema import chunks_schema

    schema = chunks_schema(dim)
    ids = range(start, start + n)
    cols: dict = {}
    for f in schema:
        if f.name == "vector":
            cols[f.name] = pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * dim, dtype=np.float32)), dim)
        elif f.name == "strategy":
            cols[f.name] = pa.array(["paragraph" if i % 3 else "sentence" for i in ids])
        elif f.name == "chunk_id":
            cols[f.name] = pa.array([f"chunk-{i:08d}" for i in ids])
        elif f.name == "doc_id":
            cols[f.name] = pa.array([f"/data/doc-{i // 20:06d}.txt" for i in ids])
        elif f.name == "text":
            cols[f.name] = pa.array([f"{tag}chunk {i} " + "lorem ipsum dolor sit amet " * 20 for i in ids])
        elif pa.types.is_string(f.type):
            cols[f.name] = pa.array([f"{f.name}-{i % 97}" for i in ids])
        elif pa.types.is_timestamp(f.type):
            cols[f.name] = pa.array([1_700_000_000_000_000] * n, pa.int64()).cast(f.type)
        elif pa.types.is_boolean(f.type):
            cols[f.name] = pa.array([False] * n)
        else:
            cols[f.name] = pa.array(list(ids), pa.int64()).cast(f.type)
    return pa.table(cols, schema=schema)


def old_module(rev: str):
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:storage/parquet.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_parquet.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_parquet", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--changed", type=int, default=10)
    ap.add_argument("--batch", type=int, default=10_000, help="rows per append (a fragment each)")
    ap.add_argument("--old-rev", default="b3a7999")
    ap.add_argument("--compact", action="store_true", help="optimize() the table first (one big fragment)")
    args = ap.parse_args()
    import lancedb

    from storage import parquet

    old = old_module(args.old_rev)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        db = lancedb.connect(f"{tmp}/db")
        table = None
        for start in range(0, args.rows, args.batch):
            t = rows(start, min(args.batch, args.rows - start), 384, rng)
            if table is None:
                table = db.create_table("chunks", t)
            else:
                table.add(t)
        if args.compact:
            table.optimize()
        print(f"table: {table.count_rows()} rows, {table.stats()['fragment_stats']['num_fragments']} fragments")
        for name, export in (("old", old.export_table), ("new", parquet.export_table)):
            out = f"{tmp}/parquet-{name}"
            t0, w0 = time.perf_counter(), wchar()
            export(table, out)
            first = (time.perf_counter() - t0, wchar() - w0)
            # the change: CHANGED existing chunks get new text and vectors (an upsert)
            at = int(rng.integers(0, args.rows - args.changed))
            table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all().execute(
                rows(at, args.changed, 384, rng, tag=f"edited {name} "))
            t0, w0 = time.perf_counter(), wchar()
            rep = export(table, out)
            again = (time.perf_counter() - t0, wchar() - w0)
            scan = ""
            if not isinstance(rep, int):
                from storage.export_segments import live_segments

                t0 = time.perf_counter()
                live_segments(table, "x")
                scan = f"; of which the row-address scan {time.perf_counter() - t0:.2f} s"
            extra = "" if isinstance(rep, int) else f" (rows_written {rep.rows_written}, files_written {rep.files_written}, files_kept {rep.files_kept}, files_deleted {rep.files_deleted})"
            print(f"{name}: first export {first[0]:.2f} s, {first[1] / 1e6:.1f} MB written; "
                  f"after a {args.changed}-row change {again[0]:.2f} s, {again[1] / 1e6:.1f} MB written{extra}{scan}")


if __name__ == "__main__":
    main()
