"""Table maintenance on real LanceDB tables in tmp_path: compaction, pruning (keeping
tagged versions), the IVF_PQ index only from 256 rows, search through it, the BM25
index, the ledger figures and the migration of a runs table from the old schema."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from grainline.search import dense_query, dense_search
from grainline.storage.chunks import ChunkStore
from grainline.storage.ledger import RUNS_TABLE, Ledger, RunRecord
from grainline.storage.maintenance import (
    FTS_INDEX,
    MaintenanceSettings,
    figures,
    index_params,
    maintain,
    vector_index,
)
from grainline.storage.schema import RUNS_SCHEMA, chunks_schema

from tests.conftest import write_files

DIM = 32
AGGRESSIVE = MaintenanceSettings(prune_older_than_days=0, keep_versions=1)


def clustered(n: int, seed: int = 0, centres: int = 12) -> np.ndarray:
    """Unit vectors around a few centres, like embeddings of a few topics."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, DIM))
    v = c[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def chunk_rows(start: int, vecs: np.ndarray, strategy: str = "paragraph") -> pa.Table:
    n = len(vecs)
    schema = chunks_schema(DIM)
    data = {f.name: [None] * n for f in schema}
    ids = [f"c{start + i}" for i in range(n)]
    data.update(
        chunk_id=ids, doc_id=[f"d{start}-{i // 4}" for i in range(n)], strategy=[strategy] * n,
        chunker_key=[f"{strategy}-1"] * n, text=[f"chunk number {start + i} about topic {(start + i) % 7}" for i in range(n)],
        content_hash=ids, doc_hash=["h"] * n, source_root=["/r"] * n, n_windows=[1] * n,
    )
    data["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), DIM)
    return pa.Table.from_pydict(data, schema=schema)


def put(store: ChunkStore, start: int, vecs: np.ndarray) -> None:
    """One commit of rows c<start>... (documents of their own)."""
    rows = chunk_rows(start, vecs)
    store.upsert_documents(rows, sorted(set(rows.column("doc_id").to_pylist())), ["paragraph-1"])


def fill(store: ChunkStore, vecs: np.ndarray, batches: int) -> None:
    """Write ``vecs`` in several commits (several small fragments, several versions)."""
    for part in np.array_split(np.arange(len(vecs)), batches):
        put(store, int(part[0]), vecs[part])


def test_index_parameters_follow_rows_and_dimension():
    assert index_params(256, 384) == (1, 48)  # PQ needs 256 rows: one partition at the threshold
    assert index_params(10_000, 384) == (39, 48)  # at least 256 rows per partition
    assert index_params(1_000_000, 128) == (1000, 16)  # sqrt(rows) once there are plenty
    assert index_params(5000, 6) == (19, 1)  # odd-sized dimension: one sub-vector


def test_maintenance_compacts_prunes_and_builds_indexes(tmp_path):
    store = ChunkStore(str(tmp_path / "db"), "chunks_t", DIM)
    vecs = clustered(300)
    fill(store, vecs, 6)
    table = store.table
    before = figures(table)
    assert before.rows == 300 and before.fragments == 6 and before.vector_index is None
    assert before.unindexed_rows == 300  # no index: every row is searched exactly
    time.sleep(1.2)  # older than the prune window's clock margin
    rep = maintain(table, AGGRESSIVE)
    after = rep.after
    assert after.fragments == 1 and after.rows == 300
    assert after.vector_index is not None and after.unindexed_rows == 0
    assert any("pruned" in a and "pruned 0" not in a for a in rep.actions)
    assert after.versions < before.versions + 3  # the old write versions are gone
    assert FTS_INDEX in {ix.name for ix in table.list_indices()}
    # the same rows, same vectors, after compaction
    got = table.search().select(["chunk_id", "vector"]).limit(None).to_arrow().sort_by("chunk_id")
    want = {f"c{i}": vecs[i] for i in range(300)}
    for cid, v in zip(got.column("chunk_id").to_pylist(), got.column("vector").to_pylist()):
        np.testing.assert_array_equal(np.asarray(v, dtype=np.float32), want[cid])

    # rows added later are still found (searched exactly) until maintenance folds them in
    more = clustered(40, seed=1)
    put(store, 1000, more)
    assert figures(table).unindexed_rows == 40
    hit = dense_search(table, more[3], "paragraph", 1)[0]
    assert hit.row["chunk_id"] == "c1003" and hit.score == pytest.approx(1.0, abs=1e-3)
    rep = maintain(table, MaintenanceSettings())
    assert rep.after.unindexed_rows == 0 and rep.after.vector_index == rep.before.vector_index  # folded in, not retrained


def test_small_tables_get_no_vector_index_and_search_exactly(tmp_path):
    store = ChunkStore(str(tmp_path / "db"), "chunks_t", DIM)
    fill(store, clustered(100), 2)
    rep = maintain(store.table)
    assert rep.after.vector_index is None and vector_index(store.table) is None
    assert any("no vector index: 100 rows < 256" in a for a in rep.actions)
    plan = dense_query(store.table, clustered(1, seed=5)[0], "paragraph", 5).explain_plan()
    assert "ANN" not in plan and "KNNVectorDistance" in plan


def test_index_is_retrained_when_the_table_has_doubled(tmp_path):
    store = ChunkStore(str(tmp_path / "db"), "chunks_t", DIM)
    fill(store, clustered(260), 1)
    first = maintain(store.table).after.vector_index
    put(store, 5000, clustered(280, seed=2))
    rep = maintain(store.table)
    assert rep.after.rows == 540 and rep.after.vector_index != first and rep.after.unindexed_rows == 0
    assert [ix.name for ix in store.table.list_indices() if "vector" in ix.columns] == [rep.after.vector_index]


def test_search_through_the_index_finds_what_exact_search_finds(tmp_path):
    store = ChunkStore(str(tmp_path / "db"), "chunks_t", DIM)
    vecs = clustered(1200, centres=20)
    fill(store, vecs, 3)
    maintain(store.table)
    queries = clustered(30, seed=9, centres=20)
    plan = dense_query(store.table, queries[0], "paragraph", 10).explain_plan()
    assert "ANNIvfPartition" in plan
    recall = []
    for q in queries:
        exact = {f"c{i}" for i in np.argsort(-(vecs @ q))[:10]}
        got = {h.row["chunk_id"] for h in dense_search(store.table, q, "paragraph", 10)}
        recall.append(len(exact & got) / 10)
    assert np.mean(recall) >= 0.95, recall


def test_a_table_that_needs_nothing_gets_no_new_version(tmp_path):
    store = ChunkStore(str(tmp_path / "db"), "chunks_t", DIM)
    fill(store, clustered(520), 3)
    table = store.table
    assert index_params(520, DIM)[0] == 2  # LanceDB's optimize() re-commits an index of 2+ partitions
    maintain(table)
    v = table.version
    again = maintain(table)
    assert table.version == again.version_after == v
    assert any("needs nothing" in a for a in again.actions), again.actions
    # rows written since are folded in as before
    put(store, 5000, clustered(40, seed=3))
    rep = maintain(table)
    assert rep.after.unindexed_rows == 0 and rep.after.rows == 560 and table.version > v + 1


def test_tagged_versions_survive_aggressive_pruning(tmp_path):
    store = ChunkStore(str(tmp_path / "db"), "chunks_t", DIM)
    fill(store, clustered(60), 3)
    time.sleep(1.2)  # the versions before the tagged one fall outside the clock margin
    put(store, 60, clustered(8, seed=4))
    table = store.table
    tagged = table.version
    table.tags.create("eval-run-1", tagged)
    rows_then = table.to_arrow().sort_by("chunk_id")
    store.delete("doc_id = 'd0-0'")
    put(store, 100, clustered(20, seed=3))
    time.sleep(1.2)
    rep = maintain(table, AGGRESSIVE)
    versions = [v["version"] for v in table.list_versions()]
    assert tagged in versions and min(versions) == tagged  # older ones pruned, the tagged one kept
    assert any("tagged version 'eval-run-1'" in a for a in rep.actions)
    table.checkout("eval-run-1")
    assert table.to_arrow().sort_by("chunk_id").equals(rows_then)
    table.checkout_latest()

    # once evaluation tags may go (after N days), pruning passes them too
    rep = maintain(table, AGGRESSIVE.model_copy(update={"drop_eval_tags_older_than_days": 0}))
    assert table.tags.list() == {} and tagged not in [v["version"] for v in table.list_versions()]
    assert any("deleted 1 evaluation tags" in a for a in rep.actions)


def test_ledger_migrates_a_runs_table_from_the_old_schema(tmp_path):
    import lancedb

    db = str(tmp_path / "db")
    new_cols = {"fragments", "versions", "unindexed_rows", "maintenance"}
    old_schema = pa.schema([f for f in RUNS_SCHEMA if f.name not in new_cols])
    old_row = {f.name: None for f in old_schema} | {
        "run_id": "old-run", "flow": "ingest", "status": "completed", "started": datetime(2024, 1, 1, tzinfo=timezone.utc)}
    lancedb.connect(db).create_table(RUNS_TABLE, data=pa.Table.from_pylist([old_row], schema=old_schema))

    rec = RunRecord(run_id="new-run", flow="ingest", source="s", table_name="t", model_id="m", parameters={})
    rec.fragments, rec.versions, rec.unindexed_rows, rec.maintenance = 3, 7, 0, {"actions": ["x"]}
    Ledger(db).write(rec)
    runs = {r["run_id"]: r for r in Ledger(db).runs()}
    assert runs["old-run"]["fragments"] is None and runs["old-run"]["maintenance"] is None
    assert (runs["new-run"]["fragments"], runs["new-run"]["versions"], runs["new-run"]["unindexed_rows"]) == (3, 7, 0)
    assert runs["new-run"]["maintenance"] == {"actions": ["x"]}
    assert set(lancedb.connect(db).open_table(RUNS_TABLE).schema.names) == set(RUNS_SCHEMA.names)


def test_ingestion_runs_maintenance_and_records_it(tmp_path, embedder):
    from grainline.embedding import EmbedderSettings
    from grainline.ingest import IngestSettings, run_ingest

    src = write_files(tmp_path / "src", {f"d{i}.txt": f"Note {i}.\n\nThe river {i} floods in spring." for i in range(3)})
    db = str(tmp_path / "db")
    settings = IngestSettings(source=str(src), strategies=["paragraph"], db=db, export_parquet=False,
                              embedder=EmbedderSettings(device="cpu"))
    rec = run_ingest(settings)
    assert rec.status == "completed" and rec.fragments >= 1 and rec.versions >= 2
    rows = rec.counts.chunks_written
    assert rec.unindexed_rows == rows  # too few rows for an index: all searched exactly
    assert any(f"no vector index: {rows} rows" in a for a in rec.maintenance["actions"])
    assert "maintain" in rec.counts.stage_seconds
    stored = Ledger(db).runs()[-1]
    assert stored["fragments"] == rec.fragments and stored["maintenance"]["table"] == rec.table_name
    off = run_ingest(settings.model_copy(update={"maintenance": MaintenanceSettings(enabled=False)}))
    assert off.maintenance is None and Ledger(db).runs()[-1]["fragments"] is None


def test_unchanged_rerun_of_an_indexed_table_commits_nothing_and_keeps_the_export(tmp_path, embedder):
    from grainline.embedding import EmbedderSettings
    from grainline.ingest import IngestSettings, run_ingest
    from grainline.embedding import get_embedder
    from grainline.storage.parquet import MARKER

    # 130 documents of 4 sentences drawn from 40: 520 sentence rows (an index of two
    # partitions) while only 40 texts are embedded
    pool = [f"Sentence {i} tells of the {w} near the old mill." for i, w in enumerate(["river", "falcon", "cedar", "lantern"] * 10)]
    src = write_files(tmp_path / "src", {f"d{i:03d}.txt": " ".join(pool[(i * 7 + k) % 40] for k in range(4)) for i in range(130)})
    db = tmp_path / "db"
    settings = IngestSettings(source=str(src), strategies=["sentence"], db=str(db), embedder=EmbedderSettings(device="cpu"))
    first = run_ingest(settings)
    assert first.counts.chunks_written >= 512 and first.maintenance["after"]["vector_index"]
    # the model was freed before the index was trained (nothing needs it there) ...
    assert not get_embedder(settings.embedder).loaded
    marker = db / "parquet" / first.table_name / MARKER
    exported = marker.read_text()
    second = run_ingest(settings)
    assert second.counts.docs_unchanged == 130 and second.version_before == second.version_after == first.version_after
    assert marker.read_text() == exported and "export" not in second.counts.stage_seconds
    assert any("needs nothing" in a for a in second.maintenance["actions"])
    # ... and comes back when a run has text to embed again
    write_files(src, {"new.txt": "A heron waited by the weir at dawn."})
    third = run_ingest(settings)
    assert third.counts.chunks_embedded == 1 and get_embedder(settings.embedder).loaded


def test_evaluation_tags_the_versions_it_read_and_pruning_keeps_them(tmp_path, embedder):
    from grainline.embedding import EmbedderSettings
    from grainline.evaluation import EvalSettings, run_eval
    from grainline.storage.chunks import connect

    from tests.evaluation.test_evaluate import write_spans_fixture

    db = str(tmp_path / "db")
    run = run_eval(EvalSettings(
        dataset=f"spans:{write_spans_fixture(tmp_path / 'spans')}", strategies=["sentence"], methods=["dense", "bm25"],
        db=db, reports_dir=str(tmp_path / "reports"), n_bootstrap=100, n_permutations=100,
        embedder=EmbedderSettings(device="cpu"),
    ))
    (cfg,) = {(c.table_name, c.table_version, c.table_tag) for c in run.configs}
    name, version, tag = cfg
    assert tag == run.run_id and tag.startswith("eval-")
    stored = connect(db).open_table("eval_results").to_arrow().to_pylist()
    assert {(r["table_name"], r["table_version"], r["table_tag"]) for r in stored} == {cfg}
    table = connect(db).open_table(name)
    assert table.tags.list()[tag]["version"] == version
    table.checkout(tag)
    read_then = table.to_arrow().sort_by("chunk_id")
    table.checkout_latest()

    table.delete("doc_id = 'bees'")  # the table moves on after the evaluation
    time.sleep(1.2)
    maintain(table, AGGRESSIVE)
    assert table.count_rows() < read_then.num_rows
    assert version in [v["version"] for v in table.list_versions()]
    table.checkout(tag)
    assert table.to_arrow().sort_by("chunk_id").equals(read_then)


def test_a_big_tables_index_is_trained_on_samples_with_the_recall_of_a_full_training(tmp_path, caplog):
    """From 32,768 rows the IVF and PQ models are trained on samples through pylance and
    handed to the build (a bounded-memory build); the index is a cosine IVF_PQ that
    search uses, its recall@10 against exact search as good as that of LanceDB's own
    build trained on every sampled-at-256 row, and a retrain replaces it."""
    from lancedb.index import IvfPq

    from grainline.storage.maintenance import build_vector_index, training_samples

    rows = 33_000
    partitions, sub_vectors = index_params(rows, DIM)
    assert training_samples(rows, partitions) == (64 * partitions, 64 * 256)
    assert training_samples(20_000, index_params(20_000, DIM)[0]) is None  # the sample would be the table
    store = ChunkStore(str(tmp_path / "db"), "chunks_t", DIM)
    vecs = clustered(rows, centres=40)
    fill(store, vecs, 2)
    queries = clustered(40, seed=9, centres=40)
    truth = [{f"c{i}" for i in np.argsort(-(vecs @ q))[:10]} for q in queries]

    def recall() -> float:
        assert "ANNIvfPartition" in dense_query(store.table, queries[0], "paragraph", 10).explain_plan()
        return float(np.mean([len(want & {h.row["chunk_id"] for h in dense_search(store.table, q, "paragraph", 10)}) / 10
                              for q, want in zip(queries, truth)]))

    store.table.create_index("vector", config=IvfPq(distance_type="cosine", num_partitions=partitions,
                                                     num_sub_vectors=sub_vectors), name="reference")
    reference = recall()
    store.table.drop_index("reference")
    with caplog.at_level("INFO", logger="grainline.maintenance"):
        name = build_vector_index(store.table, rows)
    assert f"IVF trained on {64 * partitions} sampled rows, PQ on 16384, of {rows}" in caplog.text
    stats = store.table.index_stats(name)
    assert stats.index_type == "IVF_PQ" and stats.distance_type == "cosine" and stats.num_indexed_rows == rows
    assert figures(store.table).vector_index == name and figures(store.table).unindexed_rows == 0
    sampled = recall()
    assert sampled >= min(reference, 0.95) - 0.05 and sampled >= 0.8, (sampled, reference)

    put(store, 90_000, clustered(40, seed=3, centres=40))
    again = build_vector_index(store.table, rows + 40)
    assert again != name
    assert [ix.name for ix in store.table.list_indices() if "vector" in ix.columns] == [again]
    assert store.table.index_stats(again).num_indexed_rows == rows + 40


def test_small_fragments_under_different_index_deltas_are_not_work(tmp_path):
    """Lance does not merge fragments that different index deltas cover: a table whose
    only small fragments are such needs nothing, so an unchanged run's pass is the cheap
    check and commits nothing (it was a whole pass, every run)."""
    from grainline.storage.maintenance import compactable_fragments

    store = ChunkStore(str(tmp_path / "db"), "chunks_t", DIM)
    fill(store, clustered(300), 3)
    maintain(store.table)
    for start in (5000, 6000):
        put(store, start, clustered(10, seed=start))
        rep = maintain(store.table, wrote=True)
        assert any("as a delta" in a for a in rep.actions), rep.actions
    assert figures(store.table).fragments == 3 and compactable_fragments(store.table, 131_072) == 0
    version = store.table.version
    rep = maintain(store.table)
    assert rep.actions == ["nothing to compact, index or prune: the table needs nothing"]
    assert store.table.version == version
    # A fragment with a third of its rows deleted is work: compaction materialises them.
    store.table.delete("chunk_id IN ('c5000', 'c5001', 'c5002', 'c5003')")
    assert compactable_fragments(store.table, 131_072) == 1
    rep = maintain(store.table)
    assert rep.actions != ["nothing to compact, index or prune: the table needs nothing"]
    assert compactable_fragments(store.table, 131_072) == 0 and store.table.count_rows() == 316


def test_no_version_old_enough_to_prune_is_settled_without_the_version_list(tmp_path):
    """The version list opens every version's manifest (1.2 s at 1,600 versions of a
    450k-row table); a listing of the manifests settles that none is old enough."""
    from datetime import timedelta

    store = ChunkStore(str(tmp_path / "db"), "chunks_t", DIM)
    fill(store, clustered(60), 4)
    time.sleep(1.5)  # the versions maintenance writes fall outside the older ones' clock margin
    table = store.table
    reads = []
    real = table.list_versions
    table.list_versions = lambda *a, **k: reads.append(1) or real(*a, **k)  # counts the reads, changes nothing
    settings = MaintenanceSettings(prune_older_than_days=7, keep_versions=2)
    rep = maintain(table, settings, wrote=True)
    assert reads == [] and "nothing to prune (no version older than 7 days)" in rep.actions, rep.actions
    assert rep.before.versions == 5 and rep.after.versions == len(real())  # counted from the listing
    again = maintain(table, settings)
    assert reads == [] and any("needs nothing" in a for a in again.actions), again.actions
    # Eight days on, the oldest versions may be prunable: the list is read, and the
    # pass prunes (Lance's own clock decides what goes, so nothing does today).
    later = maintain(table, settings, now=datetime.now() + timedelta(days=8))
    assert reads and any(a.startswith("pruned ") for a in later.actions), later.actions
