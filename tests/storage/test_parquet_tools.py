"""The Parquet export read directly by DuckDB and Polars, with the globs and queries
docs/storage.md documents, next to an eval_results export in the same database."""

from __future__ import annotations

import os

import lancedb
import pyarrow as pa

from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.storage.maintenance import MaintenanceSettings
from grainline.storage.parquet import DUCKDB_VIEW, default_export_dir, export_table

from tests.conftest import write_files

CPU = EmbedderSettings(device="cpu")
FILES = {
    "bees.md": "---\ntopic: insects\nyear: 2024\n---\n# Bees\n\nHoneybees dance to show their sisters where the flowers are.\n",
    "tides.md": "---\ntopic: sea\nyear: 2023\n---\n# Tides\n\nThe Moon's gravity raises a bulge of water on the near side of the Earth.\n",
}


def test_duckdb_and_polars_read_the_export_directly(tmp_path, embedder):
    import duckdb
    import polars as pl

    src = write_files(tmp_path / "src", FILES)
    db = str(tmp_path / "db")
    rec = run_ingest(IngestSettings(source=str(src), db=db, embedder=CPU, strategies=["sentence", "paragraph"],
                                    maintenance=MaintenanceSettings(enabled=False)))
    # An evaluation's results table, also partitioned by strategy, in the same db.
    ev = lancedb.connect(db).create_table("eval_results", pa.table({"strategy": ["paragraph"], "metric": ["ndcg@10"], "value": [0.9]}))
    export_table(ev, default_export_dir(db, "eval_results"))

    chunks_glob = f"{db}/parquet/{rec.table_name}/*/*.parquet"
    eval_glob = f"{db}/parquet/eval_results/*/*.parquet"
    con = duckdb.connect()
    # Each table's glob reads alone, hive partitioning or not; strategy is in the files.
    for hive in ("true", "false"):
        rows = con.sql(f"select strategy, count(*) from read_parquet('{chunks_glob}', hive_partitioning={hive}) "
                       "group by 1 order by 1").fetchall()
        assert [s for s, _ in rows] == ["paragraph", "sentence"]
    assert con.sql(f"select metric, value from read_parquet('{eval_glob}')").fetchall() == [("ndcg@10", 0.9)]
    # The view the export ships: vector as FLOAT[384], metadata as JSON.
    con.execute(open(f"{db}/parquet/{rec.table_name}/{DUCKDB_VIEW}").read()).fetchall()
    qv = embedder.embed_queries(["how do bees tell each other where flowers are"])[0].tolist()
    top = con.execute(
        f'select doc_id, array_cosine_similarity(vector, ?::FLOAT[384]) as score from "{rec.table_name}" '
        "where strategy = 'paragraph' order by score desc limit 1", [qv]).fetchall()[0]
    assert top[0] == os.path.realpath(src / "bees.md") and top[1] > 0.5
    assert con.sql(f"""select distinct metadata->>'$.topic' from "{rec.table_name}" where doc_id like '%tides.md'""").fetchall() == [("sea",)]
    # Without the view: list_cosine_similarity works on the plain list column.
    raw = con.execute(f"select doc_id from read_parquet('{chunks_glob}') where strategy = 'paragraph' "
                      "order by list_cosine_similarity(vector, ?) desc limit 1", [qv]).fetchall()[0]
    assert raw[0] == top[0]

    frame = pl.read_parquet(chunks_glob)
    assert set(frame["strategy"].unique()) == {"sentence", "paragraph"}
    assert frame.schema["vector"] == pl.Array(pl.Float32, 384)
    topics = frame.select(pl.col("metadata").str.json_path_match("$.topic").alias("topic"))["topic"].unique().sort().to_list()
    assert topics == ["insects", "sea"]
    assert pl.read_parquet(eval_glob).columns == ["strategy", "metric", "value"]
