"""Fault injection: an ingestion process is SIGKILLed at seeded random moments over the
whole run (before its first commit, between commits, mid-commit, during the Parquet
export after its last commit), re-run to completion, and compared with a clean run.

GRAINLINE_FAULT_TRIALS (default 10) and GRAINLINE_FAULT_SEED (default 0) choose the
trials; each trial's kill point and outcome is printed (pytest -s shows them)."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.storage.chunks import ChunkStore
from grainline.storage.ledger import Ledger
from grainline.storage.parquet import MARKER, exported_version, read_export

from tests.forked import ForkedWorker, stop_fork_server

pytestmark = pytest.mark.slow

TRIALS = int(os.environ.get("GRAINLINE_FAULT_TRIALS", "10"))
SEED = int(os.environ.get("GRAINLINE_FAULT_SEED", "0"))
N_DOCS, BATCH_DOCS = 200, 16
WORDS = ("river mountain engine protein orbit harvest signal glacier membrane violin copper lantern meadow "
         "falcon quartz canyon harbor pepper thunder marble cedar beacon saddle ember willow comet").split()
# Columns that legitimately differ between two runs that wrote the same chunks.
PER_RUN = ("run_id", "ingested_at")


@pytest.fixture(scope="module", autouse=True)
def _fork_server():
    yield
    stop_fork_server()


def write_corpus(root: Path, seed: int) -> Path:
    """N_DOCS small documents of 2-4 sentences: one or two paragraphs drawn from a
    shared pool, so the same sentences and paragraphs occur in many documents (and
    batches) and vectors are reused by content hash, as in real corpora."""
    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(9, 12))).capitalize() + "."

    pool = [f"{sentence()} {sentence()}" for _ in range(60)]
    root.mkdir(parents=True)
    for i in range(N_DOCS):
        (root / f"doc-{i:03d}.txt").write_text("\n\n".join(rng.sample(pool, rng.randint(1, 2))) + "\n")
    return root


def settings(src: Path, db: Path) -> IngestSettings:
    return IngestSettings(source=str(src), db=str(db), strategies="sentence,paragraph", batch_docs=BATCH_DOCS,
                          embedder=EmbedderSettings(device="cpu"))


def rows_by_id(store: ChunkStore) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for b in store.scan([f.name for f in store.schema]):
        for r in b.to_pylist():
            assert r["chunk_id"] not in out, f"duplicate chunk_id {r['chunk_id']}"
            out[r["chunk_id"]] = r
    return out


def n_versions(db: Path, table: str) -> int:
    """Committed versions of a table, read from its manifests (one per version)."""
    d = db / f"{table}.lance" / "_versions"
    try:
        return sum(1 for n in os.listdir(d) if n.endswith(".manifest"))
    except FileNotFoundError:
        return 0


def kill_when(worker: ForkedWorker, db: Path, table: str, commits: int, delay: float) -> bool:
    """SIGKILL the worker ``delay`` seconds after the table shows ``commits`` data
    commits (version 1 is the empty table prepare creates). False if it ended first."""
    while n_versions(db, table) < 1 + commits:
        if not worker.running():
            return worker.kill()
        time.sleep(0.002)
    time.sleep(delay)
    return worker.kill()


def assert_same_rows(got: dict[str, dict], ref: dict[str, dict], label: str) -> None:
    assert got.keys() == ref.keys(), (label, len(got), len(ref), sorted(set(ref) ^ set(got))[:5])
    for cid, r in ref.items():
        g = got[cid]
        np.testing.assert_allclose(np.asarray(g["vector"]), np.asarray(r["vector"]), atol=1e-5, err_msg=f"{label} {cid}")
        diff = {k for k in r if k not in PER_RUN and k != "vector" and g[k] != r[k]}
        assert not diff, (label, cid, {k: (g[k], r[k]) for k in diff})


def test_sigkill_at_random_points_then_rerun_matches_a_clean_run(tmp_path, embedder):
    t_start = time.monotonic()
    rng = random.Random(SEED)
    src = write_corpus(tmp_path / "src", SEED)
    table = embedder.identity.table_name

    # The clean run, in a process of its own like the killed ones, watched to learn when
    # each commit lands (the table's version count) and when the run ends.
    ref_db = tmp_path / "ref"
    ref_worker = ForkedWorker(settings(src, ref_db), "clean")
    ref_worker.wait_ready()
    ref_worker.go()
    commit_times: list[float] = []  # [c] = when the table showed c data commits
    while ref_worker.running():
        while n_versions(ref_db, table) > len(commit_times):
            commit_times.append(time.monotonic())
        time.sleep(0.002)
    clean = ref_worker.result()
    ref_store = ChunkStore(str(ref_db), table, embedder.identity.dim)
    ref = rows_by_id(ref_store)
    ref_hashes = {r["content_hash"] for r in ref.values()}
    # One data commit per batch; table maintenance (compaction, indexes) commits a few
    # more versions after the last one.
    n_commits = -(-N_DOCS // BATCH_DOCS)
    assert len(commit_times) - 1 >= n_commits and clean["version_after"] >= 1 + n_commits
    assert clean["counts"]["chunks_embedded"] == len(ref_hashes)
    # gaps[c]: from data commit c to the next one; after the last, to the end of the run
    # (maintenance, the export and the ledger row)
    ends = commit_times[1 : n_commits + 1] + [ref_worker.go_at + clean["seconds"]]
    gaps = [b - a for a, b in zip(commit_times[: n_commits + 1], ends)]

    # Kill points stratified over the commits 0..n (0: the empty table exists, nothing
    # committed; n: after the last commit, while finishing), each at a random moment of
    # the gap that follows that commit in the clean run.
    plan = []
    for i in range(TRIALS):
        commits = round(i * n_commits / max(1, TRIALS - 1)) if TRIALS > 1 else rng.randint(0, n_commits)
        commits = min(n_commits, max(0, commits + rng.choice((-1, 0, 0, 1)) * (0 < i < TRIALS - 1)))
        # Before the first commit: the first quarter of that gap only, so that a trial run
        # faster than the clean one (which ran beside other tests) still dies before it.
        share = 0.25 if commits == 0 else 1.0
        plan.append((commits, rng.random() * share * max(0.0, gaps[commits])))

    outcomes = Counter()
    log = []
    nxt = ForkedWorker(settings(src, tmp_path / "trial-0" / "db"), "killed-0")
    for i, (commits, delay) in enumerate(plan):
        db = tmp_path / f"trial-{i}" / "db"
        worker = nxt
        worker.wait_ready()
        worker.go()
        killed = kill_when(worker, db, table, commits, delay)
        if i + 1 < TRIALS:  # the next worker starts while this trial re-runs
            nxt = ForkedWorker(settings(src, tmp_path / f"trial-{i + 1}" / "db"), f"killed-{i + 1}")

        store = ChunkStore(str(db), table, embedder.identity.dim)
        after_kill = rows_by_id(store)
        present = {r["content_hash"] for r in after_kill.values()}
        # every document is all there or not there at all: commits are document-atomic
        per_doc = Counter(r["doc_id"] for r in after_kill.values())
        ref_per_doc = Counter(r["doc_id"] for r in ref.values())
        assert all(per_doc[d] == ref_per_doc[d] for d in per_doc), f"trial {i}: a half-written document"
        before = {r["run_id"]: r for r in Ledger(str(db)).runs()}.get(f"killed-{i}")
        if not killed or (before is not None and before["status"] == "completed"):
            outcome = "after completion (kill missed)"
        elif not after_kill:
            outcome = "before the first commit"
        elif len(after_kill) < len(ref):
            outcome = "between commits"
        else:
            outcome = "after the last commit"
        outcomes[outcome] += 1
        export_before = exported_version(str(db / "parquet" / table))

        rerun = run_ingest(settings(src, db))
        c = rerun.counts
        got = rows_by_id(ChunkStore(str(db), table, embedder.identity.dim))
        assert_same_rows(got, ref, f"trial {i}")
        # work committed before the kill is not embedded again
        assert c.chunks_embedded == len(ref_hashes - present), (i, c.chunks_embedded, len(ref_hashes - present))
        assert c.docs_unchanged == len(per_doc) and c.docs_added == N_DOCS - len(per_doc)
        # the ledger: the killed run (if it got as far as its first row) is no longer 'running'
        runs = {r["run_id"]: r for r in Ledger(str(db)).runs()}
        assert runs[rerun.run_id]["status"] == "completed"
        if f"killed-{i}" in runs:
            assert runs[f"killed-{i}"]["status"] in ("interrupted", "completed"), runs[f"killed-{i}"]
            if outcome != "after completion (kill missed)":
                assert "interrupted" in runs[f"killed-{i}"]["error"]
        # the Parquet export holds exactly the table, and says which version it is
        export_dir = db / "parquet" / table
        assert exported_version(str(export_dir)) == rerun.version_after
        exported = read_export(str(export_dir)).to_pylist()
        assert len(exported) == len(got)
        assert_same_rows({r["chunk_id"]: r for r in exported}, got, f"trial {i} export")
        assert (export_dir / MARKER).exists()
        log.append(f"trial {i}: kill {delay:.3f}s after commit {commits}/{n_commits} -> {outcome}; "
                   f"{len(after_kill)}/{len(ref)} chunks kept, export v{export_before}; re-run embedded {c.chunks_embedded}")
    print("\n".join(["", *log, f"outcomes: {dict(outcomes)}; {TRIALS} trials in {time.monotonic() - t_start:.1f}s"]))
    if TRIALS >= 3:
        assert outcomes["before the first commit"] and outcomes["between commits"], outcomes
