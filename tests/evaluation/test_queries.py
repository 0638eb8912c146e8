"""Query sets on your own documents, through the CLI in subprocesses: import a
hand-written CSV (evidence resolved exactly, up to whitespace and case, fuzzily, or
listed as unresolved with its reason), generate offline from headings, and evaluate
the production table as ingested (no re-ingestion, only the queries embedded)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.storage.chunks import connect

from tests.conftest import write_files

BEES = """# Honeybee dances

Honeybees tell their sisters where flowers are with dances on the comb.

## The waggle run

The angle of the waggle run relative to vertical matches the angle between the food and the sun.
Longer waggle runs tell the other foragers that the food is further away from the hive.

## Summary

Dancing bees recruit foragers to rich patches of flowers.
"""
TIDES = """# Ocean tides

Tides are the daily rise and fall of the sea.

## Spring and neap tides

Spring tides happen when the Sun and the Moon line up at new and full moon.
Neap tides are weaker and come when the Sun and Moon are at right angles.

## Summary

The Moon's gravity drives most of the tidal range on Earth.
"""
VOLCANO = """<html><head><title>Volcanoes</title></head><body>
<h1>Volcanoes</h1>
<p>A volcano is an opening in the crust where molten rock escapes.</p>
<h2>Lava flows</h2>
<p>Basaltic lava is runny and travels far from the vent before it cools into rock.</p>
<h2>Ash clouds</h2>
<p>Explosive eruptions throw fine ash high into the atmosphere, where it can ground aircraft.</p>
</body></html>
"""
CORPUS = {"guide/bees.md": BEES, "guide/tides.md": TIDES, "web/volcano.html": VOLCANO,
          "notes.txt": "Sourdough starters are cultures of wild yeast.\n\nBakers feed them flour and water every day.\n"}

ENV = dict(os.environ, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300")


def cli(*args: str, home: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(ENV, PREFECT_HOME=home)
    return subprocess.run([sys.executable, "-m", "grainline.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """The little corpus ingested once with all three strategies (the production table)."""
    root = tmp_path_factory.mktemp("queries")
    src = write_files(root / "src", CORPUS)
    db = str(root / "db")
    rec = run_ingest(IngestSettings(source=str(src), db=db, embedder=EmbedderSettings(device="cpu"), export_parquet=False))
    assert rec.status == "completed" and rec.counts.docs_added == 4
    return root, db, rec.table_name


def _read_set(path):
    lines = [json.loads(x) for x in open(path, encoding="utf-8")]
    return lines[0], lines[1:]


def test_import_resolves_evidence_and_lists_every_unresolved_row(ingested, tmp_path):
    root, db, table = ingested
    rows = [
        {"question": "what does the waggle angle show", "doc_id": "guide/bees.md",
         "evidence": "The angle of the waggle run relative to vertical matches the angle between the food and the sun."},
        # Other line breaks and case, no doc_id: found up to whitespace and case.
        {"question": "when are spring tides", "evidence": "SPRING tides happen when the Sun\nand the Moon   line up"},
        # Two typos: only the fuzzy match finds it.
        {"question": "how far does basaltic lava go", "doc_id": "web/volcano.html",
         "evidence": "Basaltic lava is runy and travels far from the vent befor it cools into rock."},
        {"question": "what grounds aircraft", "doc_id": "web/volcano.html", "evidence": "Pyroclastic flows move at hurricane speed."},
        {"question": "   ", "doc_id": "guide/bees.md"},
        {"question": "what feeds a starter", "doc_id": "missing.txt"},
        {"question": "what is a starter", "answer": "wild yeast"},
        {"question": "a question with nothing to score against"},
    ]
    qfile = tmp_path / "questions.csv"
    with open(qfile, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["question", "doc_id", "answer", "evidence"])
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "mine.jsonl"
    res = cli("queries", "import", str(qfile), "--db", db, "--out", str(out), home=str(tmp_path / "ph"))
    assert res.returncode == 0, res.stderr + res.stdout
    header, queries = _read_set(out)
    prov = header["provenance"]
    assert (prov["table"], prov["generator"], header["version"]) == (table, "import", 1)
    assert prov["model_id"].startswith("sentence-transformers/all-MiniLM-L6-v2@") and prov["created"]
    # Files are stored under their real paths; the set names them so.
    base = str((root / "src").resolve()) + "/"
    for q in queries:
        for s in q.get("spans", []):
            s["doc_id"] = s["doc_id"].removeprefix(base)
    by = {q["text"]: q for q in queries}
    texts = {"guide/bees.md": BEES, "guide/tides.md": TIDES}
    exact = by["what does the waggle angle show"]
    sp = exact["spans"][0]
    assert exact["match"] == "exact" and texts["guide/bees.md"][sp["start"]:sp["end"]] == rows[0]["evidence"]
    norm = by["when are spring tides"]
    sp = norm["spans"][0]
    assert norm["match"] == "normalised" and sp["doc_id"] == "guide/tides.md"
    assert TIDES[sp["start"]:sp["end"]] == "Spring tides happen when the Sun and the Moon line up"
    fuzzy = by["how far does basaltic lava go"]
    assert fuzzy["match"].startswith("fuzzy:") and float(fuzzy["match"][6:]) >= 90
    assert by["what is a starter"]["answers"] == ["wild yeast"]
    assert len(queries) == 4
    # Every other row is listed, with its line in the file and the reason, on stdout and in the header.
    reasons = {u["row"]: u["reason"] for u in header["unresolved"]}
    # (The second row's evidence spans two lines of the file.)
    assert sorted(reasons) == ["questions.csv:10", "questions.csv:6", "questions.csv:7", "questions.csv:8"]
    assert reasons["questions.csv:6"].startswith("evidence not found in document 'web/volcano.html' (best fuzzy score ")
    assert reasons["questions.csv:6"].endswith(" < 90)")
    assert reasons["questions.csv:7"] == "empty question"
    assert reasons["questions.csv:8"] == "document 'missing.txt' is not in the table"
    assert reasons["questions.csv:10"] == "nothing to score against: give doc_id, answer or evidence"
    for row in reasons:
        assert f"unresolved {row}: " in res.stdout
    # Writing the set again keeps the first as a version of its own.
    res = cli("queries", "import", str(qfile), "--db", db, "--out", str(out), home=str(tmp_path / "ph"))
    assert res.returncode == 0 and _read_set(out)[0]["version"] == 2 and (tmp_path / "mine.v1.jsonl").exists()


def test_bad_query_files_are_one_line_errors(ingested, tmp_path):
    root, db, _ = ingested
    bad = tmp_path / "bad.csv"
    bad.write_text("query,doc_id\nx,y\n", encoding="utf-8")
    res = cli("queries", "import", str(bad), "--db", db, home=str(tmp_path / "ph"))
    assert res.returncode == 2 and "no 'question' column" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = cli("queries", "import", str(tmp_path / "nope.jsonl"), "--db", db, home=str(tmp_path / "ph"))
    assert res.returncode == 2 and "does not exist" in res.stderr


@pytest.mark.slow
def test_headings_set_and_evaluation_of_the_production_table(ingested, tmp_path):
    root, db, table = ingested
    out = tmp_path / "headings.jsonl"
    res = cli("queries", "generate", "--from", "headings", "--db", db, "--out", str(out), home=str(tmp_path / "ph"))
    assert res.returncode == 0, res.stderr + res.stdout
    header, queries = _read_set(out)
    base = str((root / "src").resolve()) + "/"
    by = {(q["text"], q["spans"][0]["doc_id"].removeprefix(base)): q for q in queries}
    waggle = by[("The waggle run", "guide/bees.md")]["spans"][0]
    assert BEES[waggle["start"]:waggle["end"]].startswith("The angle of the waggle run")
    assert BEES[waggle["start"]:waggle["end"]].endswith("away from the hive.")
    lava = by[("Lava flows", "web/volcano.html")]
    assert ("Volcanoes", "web/volcano.html") in by and ("Ocean tides", "guide/tides.md") in by
    assert lava["match"] == "heading"
    # "Summary" heads a section in two documents: ambiguous, listed, not asked.
    assert not any(t == "Summary" for t, _ in by)
    assert any("ambiguous" in u["reason"] and "Summary" in u["row"] for u in header["unresolved"])

    conn = connect(db)
    version_before = conn.open_table(table).version
    reports = tmp_path / "reports"
    # The production table as it is, plus a sweep of paragraph sizes: 256 is the
    # production setting, 80 is not and goes to an evaluation table of its own.
    res = cli("eval", "--queries", str(out), "--db", db, "--device", "cpu", "--reports", str(reports),
              "--method", "dense,bm25,hybrid", "--chunk", "paragraph.max_tokens=80,256", home=str(tmp_path / "ph"))
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("recommendation: ") and "span_recall@200tok" in last
    for step in ("embedding", "retrieving and scoring sentence/dense", "retrieving and scoring article/hybrid",
                 "ingesting 4 documents as paragraph(max_tokens=80)"):
        assert f"[eval] {step}" in res.stderr
    rows = connect(db).open_table("eval_results").to_arrow().to_pylist()
    configs = ("sentence", "paragraph(max_tokens=80)", "paragraph(max_tokens=256)", "article")
    assert {(r["config"], r["method"]) for r in rows} == {(c, m) for c in configs for m in ("dense", "bm25", "hybrid")}
    prod = [r for r in rows if r["config"] != "paragraph(max_tokens=80)"]
    assert {r["table_name"] for r in prod} == {table} and {r["table_version"] for r in prod} == {version_before}
    (swept,) = {r["table_name"] for r in rows if r["config"] == "paragraph(max_tokens=80)"}
    assert swept.startswith(f"{table}__eval__paragraph_")
    # The production table was not written; the one ingestion, into the sweep's table,
    # reused the stored vectors (these paragraphs are all under 80 tokens).
    from grainline.storage.ledger import Ledger

    runs = Ledger(db).runs("ingest")
    assert [r["table_name"] for r in runs] == [table, swept]
    assert runs[-1]["chunks_embedded"] == 0 and runs[-1]["chunks_reused"] > 0
    assert connect(db).open_table(table).version == version_before
    report = next(reports.glob("*/report.md")).read_text(encoding="utf-8")
    assert "## Recommendation" in report and "span_iou_summed@5" in report

    # A set made for another table or model is refused in one line.
    other = tmp_path / "other.jsonl"
    lines = out.read_text(encoding="utf-8").splitlines()
    head = json.loads(lines[0])
    head["provenance"]["table"] = "chunks_someone_else"
    other.write_text("\n".join([json.dumps(head)] + lines[1:]) + "\n", encoding="utf-8")
    res = cli("eval", "--queries", str(other), "--db", db, "--device", "cpu", "--reports", str(reports), home=str(tmp_path / "ph"))
    assert res.returncode == 2 and "made for table 'chunks_someone_else'" in res.stderr and "Traceback" not in res.stderr


def test_search_with_the_evaluation_methods(ingested, tmp_path):
    root, db, _ = ingested
    for method in ("bm25", "hybrid", "svm"):
        res = cli("search", "basaltic lava vent", "--method", method, "--strategy", "paragraph", "-k", "2",
                  "--db", db, "--device", "cpu", "--json", home=str(tmp_path / "ph"))
        assert res.returncode == 0, res.stderr
        hits = [json.loads(x) for x in res.stdout.strip().splitlines()]
        assert hits[0]["doc_id"].endswith("/web/volcano.html") and "Basaltic lava" in hits[0]["text"], (method, hits)
        assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1)) and len(hits) <= 2 and {h["strategy"] for h in hits} == {"paragraph"}
    res = cli("search", "x", "--method", "svd", "--db", db, home=str(tmp_path / "ph"))
    assert res.returncode == 2 and "--method 'svd' is not valid; valid: bm25, dense, hybrid, svm" in res.stderr


def test_search_small_to_big_returns_each_enclosing_chunk_once(ingested, tmp_path):
    """`grainline search --strategy sentence --return paragraph`: the paragraphs that hold
    the best sentences, each once, with the sentence that matched; a strategy the table
    does not store, or one that is not coarser, is one line."""
    root, db, _ = ingested
    for method in ("dense", "bm25"):  # hybrid fuses the two lists the same way before the parents are found
        res = cli("search", "basaltic lava vent", "--method", method, "--strategy", "sentence", "--return", "paragraph",
                  "-k", "3", "--db", db, "--device", "cpu", "--json", home=str(tmp_path / "ph"))
        assert res.returncode == 0, res.stderr
        hits = [json.loads(x) for x in res.stdout.strip().splitlines()]
        assert 1 <= len(hits) <= 3 and [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
        assert {h["strategy"] for h in hits} == {"paragraph"} and len({h["chunk_id"] for h in hits}) == len(hits)
        for h in hits:
            m = h["matched"]
            assert m["strategy"] == "sentence" and h["start"] <= m["start"] and m["end"] <= h["end"]
            assert h["text"][m["start"] - h["start"]:m["end"] - h["start"]] == m["text"]
        assert hits[0]["doc_id"].endswith("/web/volcano.html") and "Basaltic lava" in hits[0]["matched"]["text"], (method, hits)
    res = cli("search", "basaltic lava", "--strategy", "paragraph", "--return", "article", "-k", "2", "--db", db,
              "--device", "cpu", home=str(tmp_path / "ph"))
    assert res.returncode == 0 and "article chunks for" in res.stdout and "via paragraph [" in res.stdout, res.stdout

    res = cli("search", "lava", "--strategy", "paragraph", "--return", "sentence", "--db", db, home=str(tmp_path / "ph"))
    assert res.returncode == 2 and "--return sentence: paragraph chunks can only return a coarser strategy (article)" in res.stderr
    assert "Traceback" not in res.stderr
    only = str(tmp_path / "only")
    rec = run_ingest(IngestSettings(source=str(root / "src"), db=only, strategies=["sentence", "paragraph"],
                                    embedder=EmbedderSettings(device="cpu"), export_parquet=False))
    res = cli("search", "lava", "--strategy", "sentence", "--return", "article", "--db", only, "--device", "cpu",
              home=str(tmp_path / "ph"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert f"--return article: table {rec.table_name} holds no article chunks (strategies stored: paragraph, sentence)" in res.stderr
