"""Related documents on a tiny corpus ingested for real, and the precompute flow."""

from __future__ import annotations

import numpy as np
import pytest

from grainline.documents import Document
from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.storage.ledger import Ledger
from grainline.related import RelatedSettings, document_vectors, precompute_related, related, resolve_table
from grainline.storage.chunks import connect
from grainline.storage.related_docs import RELATED_TABLE

# Two documents per topic; each document has two paragraphs.
DOCS = {
    "bees-1": "Honeybees dance to tell foragers where flowers are.\n\nThe waggle run points toward the nectar.",
    "bees-2": "A beehive holds a queen, workers and drones.\n\nWorker bees collect pollen and make honey.",
    "tides-1": "Tides rise and fall twice a day.\n\nThe Moon's gravity pulls the oceans into a bulge.",
    "tides-2": "Spring tides come at full and new moon.\n\nNeap tides are weaker, at the quarter moons.",
    "bread-1": "Sourdough is leavened by a starter of wild yeast.\n\nBakers feed the starter flour and water.",
    "bread-2": "Kneading dough develops gluten in the bread.\n\nThe loaf rises while the yeast makes gas.",
    "chess-1": "Chess openings such as the Sicilian Defence are studied deeply.\n\nGrandmasters memorise opening lines.",
    "chess-2": "A chess endgame with king and rook against king is a win.\n\nCheckmate ends the chess game.",
}
TOPIC = {d: d.split("-")[0] for d in DOCS}


def _ingest(db: str, docs: dict[str, str]) -> str:
    settings = IngestSettings(source="test", strategies=["paragraph"], db=db, export_parquet=False,
                              embedder=EmbedderSettings(device="cpu"))
    documents = [Document(doc_id=d, text=t, source="test", title=d.upper()) for d, t in docs.items()]
    return run_ingest(settings, documents=documents).table_name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, embedder):
    db = str(tmp_path_factory.mktemp("related") / "db")
    return db, _ingest(db, DOCS)


def test_topic_mate_comes_first(corpus):
    db, table = corpus
    s = RelatedSettings(db=db, table=table, k=3)
    for doc_id in DOCS:
        hits = related(doc_id, s)
        assert hits[0].doc_id != doc_id and TOPIC[hits[0].doc_id] == TOPIC[doc_id], (doc_id, hits)
        assert [h.rank for h in hits] == [1, 2, 3] and hits[0].score > hits[1].score
        assert doc_id not in {h.doc_id for h in hits}
    assert related("bees-1", s)[0].title == "BEES-2"


def test_document_vector_is_the_weighted_mean_of_its_chunks(corpus):
    db, table = corpus
    t = resolve_table(RelatedSettings(db=db, table=table))
    dv = document_vectors(t, "paragraph")
    rows = t.search().where("doc_id = 'tides-2'").select(["n_tokens", "vector"]).to_arrow()
    vecs = np.array(rows.column("vector").to_pylist())
    w = np.array(rows.column("n_tokens").to_pylist(), dtype=float)[:, None]
    mean = (vecs * w).sum(0)
    np.testing.assert_allclose(dv.vectors[dv.position("tides-2")], mean / np.linalg.norm(mean), atol=1e-5)


def test_unknown_document_and_strategy_are_named(corpus):
    db, table = corpus
    with pytest.raises(ValueError, match=r"unknown document id 'tides-3' in table .* \(8 documents\); did you mean 'tides-2', 'tides-1'\?"):
        related("tides-3", RelatedSettings(db=db, table=table))
    with pytest.raises(ValueError, match=r"has no 'sentence' chunks \(strategies there: paragraph\)"):
        related("bees-1", RelatedSettings(db=db, table=table, strategy="sentence"))
    with pytest.raises(ValueError, match="no table 'nope'"):
        related("bees-1", RelatedSettings(db=db, table="nope"))


def _stored(db: str):
    return connect(db).open_table(RELATED_TABLE).to_arrow().to_pylist()


def test_precompute_twice_gives_k_rows_per_document(tmp_path, embedder):
    db = str(tmp_path / "db")
    table = _ingest(db, DOCS)
    s = RelatedSettings(db=db, table=table, k=3, block_size=3)  # several blocks
    first = precompute_related(s)
    assert first["documents"] == 8 and first["rows"] == 24 and first["inserted"] == 24
    again = precompute_related(s)
    assert again["inserted"] == 0 and again["rows"] == 24
    rows = _stored(db)
    assert len(rows) == 24
    assert len({(r["doc_id"], r["rank"]) for r in rows}) == 24
    for d in DOCS:
        mine = sorted((r for r in rows if r["doc_id"] == d), key=lambda r: r["rank"])
        assert [r["rank"] for r in mine] == [1, 2, 3]
        assert TOPIC[mine[0]["related_doc_id"]] == TOPIC[d] and mine[0]["related_doc_id"] != d
        assert mine[0]["model_id"] and mine[0]["table_version"] is not None
    # fewer neighbours and a document gone: its rows and the extra ranks disappear
    connect(db).open_table(table).delete("doc_id = 'chess-2'")
    third = precompute_related(s.model_copy(update={"k": 2}))
    rows = _stored(db)
    assert third["documents"] == 7 and len(rows) == 14
    assert "chess-2" not in {r["doc_id"] for r in rows} | {r["related_doc_id"] for r in rows}

    # each precomputation is a run in the ledger, on related_docs, with its counts
    runs = Ledger(db).runs("related")
    assert [r["run_id"] for r in runs] == [first["run_id"], again["run_id"], third["run_id"]]
    assert {(r["status"], r["table_name"], r["source"]) for r in runs} == {("completed", RELATED_TABLE, table)}
    assert [(r["chunks_written"], r["chunks_deleted"]) for r in runs] == [(24, 0), (24, 0), (14, 10)]
    assert [r["version_before"] for r in runs[1:]] == [r["version_after"] for r in runs[:-1]]


@pytest.mark.usefixtures("prefect_harness")
def test_related_flow(corpus):
    from grainline.flows.related import related_flow

    db, table = corpus
    state = related_flow(db=db, table=table, k=2, return_state=True)
    assert state.is_completed()
    out = state.result()
    assert out["documents"] == 8 and out["rows"] == 16
    assert "8 documents" in state.message


def test_related_command(corpus):
    from typer.testing import CliRunner

    from grainline.cli import app

    db, table = corpus
    res = CliRunner().invoke(app, ["related", "bread-2", "-k", "2", "--db", db, "--table", table])
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[0].split()
    assert first[0] == "1." and first[2] == "bread-1" and 0 < float(first[1]) <= 1
    res = CliRunner().invoke(app, ["related", "bread-9", "--db", db, "--table", table])
    assert res.exit_code == 2 and "unknown document id 'bread-9'" in res.output


def test_related_all_from_the_command_line_is_a_run_in_the_ledger(corpus, tmp_path):
    """The path users run: `grainline related --all` in its own process (a flow run on a
    Prefect server), then `grainline runs` shows it as a completed run on related_docs."""
    import json
    import os
    import subprocess
    import sys

    db, table = corpus
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"))
    out = subprocess.run([sys.executable, "-m", "grainline.cli", "related", "--all", "-k", "2", "--db", db, "--table", table],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    listed = subprocess.run([sys.executable, "-m", "grainline.cli", "runs", "--db", db, "--json"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    runs = [r for r in map(json.loads, listed.stdout.splitlines()) if r["flow"] == "related"]  # one JSON object a line
    assert runs and runs[-1]["status"] == "completed" and runs[-1]["table_name"] == RELATED_TABLE
    assert runs[-1]["source"] == table and runs[-1]["chunks_written"] == 16  # 8 documents x k=2
    assert len(_stored(db)) == 16
