"""Query files as people already have them, through the CLI in subprocesses on a real
ingested table: several evidence passages per question (each its own gold span, a
question counted only when all are found), offsets checked first, bad rows one line
each, and the formats other tools write (Ragas, LlamaIndex, BEIR) from fixtures
written here. The journey: questions whose passages are copied from the documents,
many with several, all resolve."""

from __future__ import annotations

import csv
import json
import random
import re

import pytest

from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest

from tests.conftest import write_files
from tests.evaluation.test_queries import _read_set, cli

TOPICS = {
    "bees.md": ("Honeybees", ["hive", "queen", "forager", "comb", "nectar", "swarm"]),
    "tides.md": ("Tides", ["moon", "estuary", "sandbar", "current", "harbour", "lagoon"]),
    "bread.md": ("Sourdough", ["starter", "crumb", "crust", "levain", "oven", "flour"]),
    "lava.md": ("Volcanoes", ["vent", "caldera", "basalt", "pumice", "fissure", "ash"]),
    "rivers.md": ("Rivers", ["delta", "meander", "levee", "tributary", "rapids", "silt"]),
}


def _corpus() -> tuple[dict[str, str], dict[str, list[str]]]:
    """Five Markdown files (wrapped lines, bold, links, a list) and each one's sentences
    as they stand in the file (line breaks and markup included)."""
    rng = random.Random(7)
    files, sentences = {}, {}
    for name, (title, words) in TOPICS.items():
        parts, sents = [f"---\ntitle: {title}\n---\n\n# {title}\n"], []
        for s in range(3):
            parts.append(f"\n## Part {s + 1}\n")
            for p in range(3):
                para = []
                for k in range(3):
                    a, b = rng.sample(words, 2)
                    sent = f"Note {len(sents)} of {title.lower()}: the {a} turns the {b} over {rng.randint(2, 99)} slow days."
                    if k == 1:
                        sent = sent.replace(f"the {a}", f"the **{a}**", 1)
                    if k == 2 and p == 0:
                        sent = sent.replace(f"the {b}", f"the [{b}](https://example.org/{b})", 1)
                    para.append(sent)
                    sents.append(sent)
                if p == 2:
                    parts.append("\n" + "".join(f"- {x}\n" for x in para))
                else:
                    text = " ".join(para)
                    wrapped = re.sub(r"(.{1,60})(?: |$)", lambda m: m.group(1) + "\n", text)
                    parts.append("\n" + wrapped)
        files[name] = "".join(parts)
        sentences[name] = [re.search(r"\s+".join(map(re.escape, x.split(" "))), files[name]).group(0) for x in sents]
    return files, sentences


FILES, SENTENCES = _corpus()
TWINS = {"a/notes.md": "# Notes\n\nThe first notes file talks about the garden shed and its tools.\n",
         "b/notes.md": "# Notes\n\nThe second notes file talks about the kitchen and its knives.\n"}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("qformats")
    src = write_files(root / "src", {**FILES, **TWINS})
    db = str(root / "db")
    rec = run_ingest(IngestSettings(source=str(src), db=db, embedder=EmbedderSettings(device="cpu"), export_parquet=False))
    assert rec.status == "completed" and rec.counts.docs_added == 7
    return root, db


def _stored(root, doc_id: str) -> str:
    """A document's stored text: the Markdown body after its front matter."""
    return re.sub(r"\A---\n.*?\n---\n\n", "", FILES[doc_id], flags=re.S)


def _import(root, db, tmp_path, qfile, *extra):
    out = tmp_path / "set.jsonl"
    res = cli("queries", "import", str(qfile), "--db", db, "--out", str(out), *extra, home=str(tmp_path / "ph"))
    return res, out


def _rel(root, doc_id):
    return doc_id.removeprefix(str((root / "src").resolve()) + "/")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_journey_questions_with_several_copied_passages_all_resolve(ingested, tmp_path):
    root, db = ingested
    rng = random.Random(25)
    rows = []
    for name, sents in SENTENCES.items():
        for i in range(8):
            k = 1 if i < 3 else rng.randint(2, 5)
            picks = rng.sample(sents, k)
            rows.append({"question": f"what do notes {i} of {name} say", "doc_id": name,
                         "evidence": picks[0] if k == 1 and i == 0 else picks})
    res, out = _import(root, db, tmp_path, _write_jsonl(tmp_path / "journey.jsonl", rows))
    assert res.returncode == 0, res.stderr + res.stdout
    header, queries = _read_set(out)
    assert len(queries) == len(rows) == 40 and header["unresolved"] == []
    n_passages = sum(len(r["evidence"]) if isinstance(r["evidence"], list) else 1 for r in rows)
    assert header["matches"]["exact"] == n_passages and header["matches"]["fuzzy"] == 0
    for row, q in zip(rows, queries):
        ev = row["evidence"] if isinstance(row["evidence"], list) else [row["evidence"]]
        assert [_stored(root, _rel(root, s["doc_id"]))[s["start"]:s["end"]] for s in q["spans"]] == ev
        assert {s["match"] for s in q["spans"]} == {"exact"} and q["match"] == "exact"
    per_doc = {_rel(root, d): c for d, c in header["matches"]["by_document"].items()}
    assert set(per_doc) == set(FILES) and all(c["unresolved"] == 0 for c in per_doc.values())
    assert f"matches (grainline format): {n_passages} exact, 0 normalised, 0 fuzzy; 0 unresolved rows" in res.stdout
    assert f"{len(rows)} queries, 0 unresolved" in res.stdout


def test_offsets_partial_questions_and_bad_rows_one_line_each(ingested, tmp_path):
    root, db = ingested
    bees = _stored(root, "bees.md")
    s0, s1, s2 = SENTENCES["bees.md"][:3]
    k0, k2 = bees.index(s0), bees.index(s2)
    rows = [
        # offsets that hold: checked, not searched
        {"id": "offsets", "question": "q offsets", "doc_id": "bees.md",
         "evidence": [{"text": s0, "start": k0, "end": k0 + len(s0)}, {"text": s2, "start": k2, "end": k2 + len(s2)}]},
        # offsets pointing at other text: found by search, and said so
        {"id": "moved", "question": "q moved", "doc_id": "bees.md", "evidence": [{"text": s1, "start": 0, "end": len(s1)}]},
        # offsets outside the document, text not in it
        {"id": "outside", "question": "q outside", "doc_id": "bees.md",
         "evidence": [{"text": "A passage that is nowhere in the bee document at all.", "start": 90000, "end": 90050}]},
        {"id": "partial", "question": "q partial", "doc_id": "bees.md",
         "evidence": [s0, "Pyroclastic flows move at hurricane speed down the slopes."]},
        {"id": "empty", "question": "q empty", "doc_id": "bees.md", "evidence": []},
        {"id": "short", "question": "q short", "doc_id": "bees.md", "evidence": ["tiny wasp"]},
        {"id": "number", "question": 42, "doc_id": "bees.md", "evidence": [s0]},
        {"id": "nested", "question": "q nested", "doc_id": "bees.md", "evidence": [[s0, s1]]},
        {"id": "dict", "question": "q dict", "doc_id": "bees.md", "evidence": [s0, {"start": 1, "end": 5}]},
        {"id": "numev", "question": "q numev", "doc_id": "bees.md", "evidence": [s0, 17]},
        {"id": "twins", "question": "q twins", "doc_id": "notes.md", "evidence": ["talks about the garden shed and its tools"]},
        {"user_input": "a Ragas row in a grainline file", "reference_contexts": [s0]},
    ]
    res, out = _import(root, db, tmp_path, _write_jsonl(tmp_path / "bad.jsonl", rows))
    assert res.returncode == 0, res.stderr + res.stdout
    header, queries = _read_set(out)
    by = {q["id"]: q for q in queries}
    assert sorted(by) == ["moved", "offsets"]
    assert [(s["start"], s["end"]) for s in by["offsets"]["spans"]] == [(k0, k0 + len(s0)), (k2, k2 + len(s2))]
    k1 = bees.index(s1)
    assert [(s["start"], s["end"]) for s in by["moved"]["spans"]] == [(k1, k1 + len(s1))]
    notes = {n["row"]: n["reason"] for n in header["notes"]}
    assert notes == {"bad.jsonl:2": f"evidence[0]: offsets 0-{len(s1)} point at other text in the stored document; "
                                    f"found by search instead (exact, at {k1}-{k1 + len(s1)})"}
    assert f"note bad.jsonl:2: evidence[0]: offsets 0-{len(s1)} point at other text" in res.stdout
    reasons = {u["row"]: u["reason"] for u in header["unresolved"]}
    expect = {
        3: "evidence[0] (offsets 90000-90050 are outside the stored document (",
        4: "partly resolved, 1 of 2 passages found; evidence[1] not found in document 'bees.md' (best fuzzy score ",
        5: "evidence list is empty",
        6: "evidence[0] not found in document 'bees.md' exactly or up to whitespace and case, and at 9 characters "
           "it is shorter than the fuzzy minimum (24)",
        7: "field 'question' is a number, expected text",
        8: "evidence[0] is a list, expected text or {text, start, end}",
        9: "evidence[1] is an object without 'text'",
        10: "evidence[1] is a number, expected text or {text, start, end}",
        11: "document 'notes.md' is ambiguous: it matches 2 stored documents (",
        12: "a ragas row ('user_input' field) in a file read as grainline rows ('question' field): two formats mixed in one file",
    }
    assert sorted(reasons) == sorted(f"bad.jsonl:{n}" for n in expect)
    for n, start in expect.items():
        assert reasons[f"bad.jsonl:{n}"].startswith(start), (n, reasons[f"bad.jsonl:{n}"])
        assert "['" not in reasons[f"bad.jsonl:{n}"]  # nothing printed as a Python value
        line = [x for x in res.stdout.splitlines() if x.startswith(f"unresolved bad.jsonl:{n}: ")]
        assert len(line) == 1
    # The counts: per document, and in all.
    m = header["matches"]
    assert (m["exact"], m["normalised"], m["fuzzy"], m["unresolved"]) == (3, 0, 0, 10)
    assert (m["offsets_checked"], m["offsets_differ"]) == (4, 2)
    per_doc = {_rel(root, d): c for d, c in m["by_document"].items()}
    assert per_doc["bees.md"] == {"exact": 3, "normalised": 0, "fuzzy": 0, "document": 0, "unresolved": 8}
    assert per_doc["notes.md"]["unresolved"] == 1 and per_doc["(any document)"]["unresolved"] == 1
    assert "matches (grainline format): 3 exact, 0 normalised, 0 fuzzy; 10 unresolved rows" in res.stdout


def test_csv_with_repeated_evidence_columns_and_list_cells(ingested, tmp_path):
    root, db = ingested
    t = SENTENCES["tides.md"]
    qfile = tmp_path / "q.csv"
    with open(qfile, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "doc_id", "evidence", "evidence", "evidence"])
        w.writerow(["three columns", "tides.md", t[0], t[1], t[2]])
        w.writerow(["a JSON list in a cell", "tides.md", json.dumps([t[3], t[4]]), "", ""])
        w.writerow(["a Markdown link opens the passage", "", "[sandbar](https://example.org/sandbar)", "", ""])
        w.writerow(["a list of numbers", "tides.md", "[1, 2]", "", ""])
    res, out = _import(root, db, tmp_path, qfile)
    assert res.returncode == 0, res.stderr + res.stdout
    header, queries = _read_set(out)
    tides = _stored(root, "tides.md")
    by = {q["text"]: q for q in queries}
    assert [tides[s["start"]:s["end"]] for s in by["three columns"]["spans"]] == t[:3]
    assert [tides[s["start"]:s["end"]] for s in by["a JSON list in a cell"]["spans"]] == t[3:5]
    # A cell that starts with '[' but is no list is a passage (the link is in the file as written);
    # a list of numbers is refused, naming the item. (Rows start on the line their record does.)
    link = by["a Markdown link opens the passage"]["spans"][0]
    assert tides[link["start"]:link["end"]] == "[sandbar](https://example.org/sandbar)"
    ((row, reason),) = [(u["row"], u["reason"]) for u in header["unresolved"]]
    assert reason == "evidence[0] is a number, expected text or {text, start, end}"
    assert row == f"q.csv:{5 + (t[0] + t[1] + t[2]).count(chr(10))}"  # the JSON cell escapes its line breaks


def test_ragas_testsets_jsonl_and_csv(ingested, tmp_path):
    root, db = ingested
    b, r = SENTENCES["bread.md"], SENTENCES["rivers.md"]
    samples = [
        {"user_input": "what does the starter do", "reference_contexts": [b[0], b[1]], "reference": "it turns",
         "synthesizer_name": "single_hop_specific_query_synthesizer"},
        {"user_input": "what about deltas and bread", "reference_contexts": [b[2], r[0]], "reference": "both",
         "synthesizer_name": "multi_hop_abstract_query_synthesizer"},
        {"user_input": [{"content": "hi", "type": "human"}], "reference": "x", "synthesizer_name": "multi_turn"},
        {"user_input": "no contexts, an answer only", "reference": "slow days", "synthesizer_name": "s"},
    ]
    res, out = _import(root, db, tmp_path, _write_jsonl(tmp_path / "ragas.jsonl", samples), "--format", "ragas")
    assert res.returncode == 0, res.stderr + res.stdout
    header, queries = _read_set(out)
    assert header["provenance"]["input_format"] == "ragas" and header["matches"]["format"] == "ragas"
    by = {q["text"]: q for q in queries}
    assert sorted(by) == ["no contexts, an answer only", "what about deltas and bread", "what does the starter do"]
    hop = by["what about deltas and bread"]
    assert sorted(_rel(root, s["doc_id"]) for s in hop["spans"]) == ["bread.md", "rivers.md"]
    assert by["what does the starter do"]["answers"] == ["it turns"]
    assert [u["row"] for u in header["unresolved"]] == ["ragas.jsonl:3"]
    assert "multi-turn" in header["unresolved"][0]["reason"]
    # The CSV Ragas writes (a list cell in Python's form), detected without --format.
    qfile = tmp_path / "ragas.csv"
    with open(qfile, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["user_input", "reference_contexts", "reference", "synthesizer_name"])
        w.writeheader()
        w.writerow({**samples[0], "reference_contexts": str(samples[0]["reference_contexts"])})
    res, out = _import(root, db, tmp_path, qfile)
    assert res.returncode == 0, res.stderr + res.stdout
    header, queries = _read_set(out)
    bread = _stored(root, "bread.md")
    assert [bread[s["start"]:s["end"]] for s in queries[0]["spans"]] == b[:2]
    assert header["matches"]["format"] == "ragas"


def test_llamaindex_dataset_json(ingested, tmp_path):
    root, db = ingested
    v = SENTENCES["lava.md"]
    data = {"queries": {"q-a": "which vent", "q-b": "which caldera", "q-c": 7, "q-d": "orphan"},
            "corpus": {"n1": v[0] + " " + v[1], "n2": v[5], "n3": "A node of some other corpus entirely, never ingested here."},
            "relevant_docs": {"q-a": ["n1", "n2"], "q-b": ["n3"], "q-c": ["n2"], "q-d": ["n9"]},
            "mode": "text"}
    qfile = tmp_path / "qa_dataset.json"
    qfile.write_text(json.dumps(data, indent=4), encoding="utf-8")
    res, out = _import(root, db, tmp_path, qfile)
    assert res.returncode == 0, res.stderr + res.stdout
    header, queries = _read_set(out)
    assert header["matches"]["format"] == "llamaindex"
    (qa,) = queries
    lava = _stored(root, "lava.md")
    assert qa["id"] == "q-a" and [lava[s["start"]:s["end"]] for s in qa["spans"]][1] == v[5]
    reasons = {u["row"]: u["reason"] for u in header["unresolved"]}
    assert reasons["qa_dataset.json:queries['q-b']"].startswith("corpus['n3'] not found in any document (best fuzzy score ")
    assert reasons["qa_dataset.json:queries['q-c']"] == "queries['q-c'] is a number, expected text"
    assert reasons["qa_dataset.json:queries['q-d']"] == "relevant_docs['q-d'] names 'n9', which is not a corpus node id"


def test_beir_folder_document_labels(ingested, tmp_path):
    root, db = ingested
    folder = tmp_path / "mybeir"
    write_files(folder, {
        "queries.jsonl": "".join(json.dumps(q) + "\n" for q in [
            {"_id": "1", "text": "bees and hives"}, {"_id": "2", "text": "tides"}, {"_id": "3", "text": "unjudged"},
            {"_id": "4", "text": "a document that is not there"}, {"_id": "5", "text": 5}]),
        "qrels/test.tsv": "query-id\tcorpus-id\tscore\n1\tbees.md\t2\n1\ttides.md\t0\n2\ttides.md\t1\n2\trivers.md\t1\n"
                          "3\tbees.md\t0\n4\tmissing.md\t1\n9\tbees.md\t1\n",
        "corpus.jsonl": '{"_id": "bees.md", "title": "", "text": "not read"}\n',
    })
    res, out = _import(root, db, tmp_path, folder)
    assert res.returncode == 0, res.stderr + res.stdout
    header, queries = _read_set(out)
    assert header["matches"]["format"] == "beir"
    by = {q["id"]: q for q in queries}
    assert sorted(by) == ["1", "2"]
    assert {_rel(root, d): g for d, g in by["1"]["relevant"].items()} == {"bees.md": 2}
    assert sorted(_rel(root, d) for d in by["2"]["relevant"]) == ["rivers.md", "tides.md"]
    assert by["1"]["spans"] == [] and by["1"]["match"] == "document"
    reasons = {u["row"]: u["reason"] for u in header["unresolved"]}
    assert reasons == {"queries.jsonl:5": "field 'text' is a number, expected text",
                       "qrels/test.tsv:8": "query-id '9' is not in queries.jsonl",
                       "queries.jsonl:3": "no positive judgement in qrels/test.tsv",
                       "queries.jsonl:4": "corpus-id 'missing.md' is not in the table"}
    assert header["matches"]["document"] == 3 and "3 document-level" in res.stdout


def test_unknown_format_and_mixed_files_are_one_line_errors(ingested, tmp_path):
    root, db = ingested
    qfile = _write_jsonl(tmp_path / "mix.jsonl", [{"question": "a", "doc_id": "bees.md"},
                                                   {"user_input": "b", "reference": "c"}])
    res, _ = _import(root, db, tmp_path, qfile)
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "mixes formats (" in res.stderr and "pass --format" in res.stderr
    res, _ = _import(root, db, tmp_path, qfile, "--format", "csvish")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "unknown query file format 'csvish'; known: beir, grainline, llamaindex, ragas" in res.stderr


@pytest.mark.slow
def test_eval_repeats_the_match_counts(ingested, tmp_path):
    root, db = ingested
    rows = [{"question": f"notes of {n}", "doc_id": n, "evidence": s[:2]} for n, s in SENTENCES.items()]
    res, out = _import(root, db, tmp_path, _write_jsonl(tmp_path / "few.jsonl", rows))
    assert res.returncode == 0, res.stderr + res.stdout
    res = cli("eval", "--queries", str(out), "--db", db, "--device", "cpu", "--reports", str(tmp_path / "reports"),
              "--method", "bm25", "--strategy", "paragraph", home=str(tmp_path / "ph"))
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    assert f"query set {out}: 5 queries" in res.stdout
    assert "matches (grainline format): 10 exact, 0 normalised, 0 fuzzy; 0 unresolved rows" in res.stdout
