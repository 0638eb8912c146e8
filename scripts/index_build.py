"""Bench of the vector index build: peak memory, time, and the recall@10 of the indexed
search against exact search.

Builds (or reuses) a table of ROWS clustered, unit-length 384-d vectors (the shape of
grainline's chunk vectors; no model), then, each in a fresh process so peaks do not mix:

* ``grainline``: this checkout's ``storage.maintenance.build_vector_index`` (IVF and PQ
  trained on samples through pylance, then the build with the trained model), on the
  table opened as grainline opens a local one (``storage.chunks.connect``: glibc's
  malloc arenas and Lance's I/O threads one per CPU, ``grainline/memory.py``);
* ``lancedb``: LanceDB's own ``create_index(IvfPq(...))`` with the same partitions and
  sub-vectors (what grainline did before).

Each prints its peak RSS (sampled every 20 ms, and the kernel's ru_maxrss), the RSS
before the build, seconds, and the recall@10 over QUERIES queries (table rows with a
little noise) of grainline's indexed query (its nprobes and refine factor) against an
exact top-10 computed here with numpy, batch by batch.

    .venv/bin/python scripts/index_build.py --rows 2000000 --db /tmp/ix2m [--methods grainline,lancedb]
    .venv/bin/python scripts/index_build.py --db path/to/lancedb --table chunks   # a real table
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DIM = 384
FRAGMENT_ROWS = 131_072


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def make_table(db: str, table: str, rows: int) -> None:
    """``rows`` vectors around 2,000 random centres, unit length, in 128k-row fragments."""
    import lance
    import pyarrow as pa

    rng = np.random.default_rng(7)
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    schema = pa.schema([pa.field("chunk_id", pa.string()), pa.field("vector", pa.list_(pa.float32(), DIM))])

    def batches():
        for s in range(0, rows, FRAGMENT_ROWS):
            m = min(FRAGMENT_ROWS, rows - s)
            v = centres[rng.integers(0, len(centres), m)] + 0.6 * rng.standard_normal((m, DIM)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            yield pa.record_batch([pa.array([f"c{i}" for i in range(s, s + m)]),
                                   pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), DIM)], schema=schema)

    lance.write_dataset(pa.RecordBatchReader.from_batches(schema, batches()), f"{db}/{table}.lance",
                        max_rows_per_file=FRAGMENT_ROWS, mode="overwrite")


def exact_top(ds, queries: np.ndarray, k: int) -> list[set]:
    """The chunk ids of each query's ``k`` nearest rows by cosine, over every row."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    pos = 0
    for batch in ds.to_batches(columns=["vector"], batch_size=65_536):
        col = batch.column(0)
        v = col.values.to_numpy(zero_copy_only=False).reshape(-1, DIM)
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        s = queries @ v.T
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate([best_i, np.arange(pos, pos + len(v))[None, :].repeat(len(queries), 0)], axis=1)
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(cand_s, top, 1)
        best_i = np.take_along_axis(cand_i, top, 1)
        pos += len(v)
    ids = ds.take(np.unique(best_i).tolist(), columns=["chunk_id"]).column(0).to_pylist()
    by_pos = dict(zip(np.unique(best_i).tolist(), ids))
    return [{by_pos[int(i)] for i in row} for row in best_i]


def child(method: str, db: str, table_name: str, queries_n: int) -> dict:
    import lancedb

    from grainline.search import NPROBES, REFINE_FACTOR
    from storage import maintenance

    if method == "grainline":
        # As grainline opens a local table: its bounds on glibc's arenas and Lance's I/O threads.
        from storage.chunks import connect

        table = connect(db).open_table(table_name)
    else:
        table = lancedb.connect(db).open_table(table_name)
    rows = table.count_rows()
    base = rss_mib()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    if method == "grainline":
        name = maintenance.build_vector_index(table, rows)
    else:
        from lancedb.index import IvfPq

        partitions, sub_vectors = maintenance.index_params(rows, DIM)
        name = f"{maintenance.VECTOR_INDEX_PREFIX}_{rows}"
        table.create_index("vector", config=IvfPq(distance_type="cosine", num_partitions=partitions,
                                                  num_sub_vectors=sub_vectors), replace=True, name=name)
    seconds = time.perf_counter() - t0
    done.set()
    out = {"method": method, "rows": rows, "index": name, "partitions": maintenance.index_params(rows, DIM)[0],
           "rss_before_mib": round(base), "peak_rss_mib": round(peak[0]), "added_mib": round(peak[0] - base),
           "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "build_s": round(seconds, 1)}
    # Queries: table rows with noise, so each has near neighbours but is not a row itself.
    ds = table.to_lance()
    rng = np.random.default_rng(11)
    picks = sorted(rng.choice(rows, size=min(queries_n, rows), replace=False).tolist())
    q = ds.take(picks, columns=["vector"]).column(0).combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, DIM).copy()
    q += 0.02 * rng.standard_normal(q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    t1 = time.perf_counter()
    truth = exact_top(ds, q, 10)
    hits, q_s = 0, 0.0
    for vec, want in zip(q, truth):
        t2 = time.perf_counter()
        got = (table.search(vec, vector_column_name="vector").distance_type("cosine")
               .minimum_nprobes(NPROBES).maximum_nprobes(0).refine_factor(REFINE_FACTOR)
               .select(["chunk_id"]).limit(10).to_list())
        q_s += time.perf_counter() - t2
        hits += len(want & {r["chunk_id"] for r in got})
    out.update({"queries": len(q), "recall_at_10": round(hits / (10 * len(q)), 4),
                "indexed_query_ms": round(1000 * q_s / len(q), 1), "exact_s": round(time.perf_counter() - t1 - q_s, 1),
                "nprobes": NPROBES, "refine_factor": REFINE_FACTOR})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000, help="rows of the synthetic table (made if absent)")
    ap.add_argument("--db", required=True, help="LanceDB folder (a synthetic table is written there if absent)")
    ap.add_argument("--table", default="vectors")
    ap.add_argument("--methods", default="grainline,lancedb")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.db, args.table, args.queries)))
        return
    import lancedb

    from storage.tables import table_names

    if args.table not in table_names(lancedb.connect(args.db)):
        t0 = time.perf_counter()
        make_table(args.db, args.table, args.rows)
        print(f"wrote {args.rows:,} vectors to {args.db}/{args.table} in {time.perf_counter() - t0:.0f} s", flush=True)
    for method in args.methods.split(","):
        res = subprocess.run([sys.executable, __file__, "--db", args.db, "--table", args.table, "--queries",
                              str(args.queries), "--child", method], capture_output=True, text=True)
        if res.returncode:
            sys.exit(f"{method}: exit {res.returncode}\n{res.stderr[-2000:]}")
        print(res.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
