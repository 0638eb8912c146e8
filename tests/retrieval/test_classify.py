"""Nearest-centroid classification: obvious cases on tiny fixtures, from files and from
an ingested table's metadata, and clear errors for bad label files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from grainline.classify import Centroids, embed_records
from grainline.cli import app
from grainline.documents import Document
from grainline.embedding import EmbedderSettings
from grainline.evaluation.datasets import DatasetError
from grainline.ingest import IngestSettings, run_ingest
from grainline.labels import read_records, table_records
from grainline.related import RelatedSettings

TRAIN = [
    ("cooking", "Simmer the onions in butter until they turn golden."),
    ("cooking", "Knead the dough and let it rise for an hour before baking."),
    ("cooking", "Season the soup with salt, pepper and fresh herbs."),
    ("astronomy", "The telescope revealed the rings of Saturn and its moons."),
    ("astronomy", "A supernova is the explosion of a dying massive star."),
    ("astronomy", "Galaxies contain billions of stars bound by gravity."),
    ("football", "The striker scored a goal in the final minute of the match."),
    ("football", "The goalkeeper saved the penalty kick."),
    ("football", "The referee showed the defender a red card."),
]
NEW = [
    ("n1", "Roast the chicken in the oven with garlic and lemon.", "cooking"),
    ("n2", "Astronomers found a new planet orbiting a distant star.", "astronomy"),
    ("n3", "The team won the league after a penalty shootout.", "football"),
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_centroids_are_renormalised_means():
    v = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    c = Centroids.fit(v, ["a", "a", "b"])
    assert c.classes == ["a", "b"] and c.counts == [2, 1]
    np.testing.assert_allclose(c.vectors[0], [2 ** -0.5, 2 ** -0.5, 0], atol=1e-6)
    (p,) = c.predict(np.array([[0.6, 0.8, 0.0]], dtype=np.float32))
    assert (p.label, p.runner_up) == ("a", "b")
    assert p.score == pytest.approx(1.4 / 2 ** 0.5, abs=1e-5) and p.margin == pytest.approx(p.score, abs=1e-6)


def test_obvious_cases_from_files(tmp_path, embedder):
    train = _jsonl(tmp_path / "train.jsonl", [{"text": t, "label": lab} for lab, t in TRAIN])
    new = tmp_path / "new.csv"
    new.write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t, _ in NEW))
    fit = embed_records(read_records(train), embedder)
    cents = Centroids.fit(fit.vectors, fit.labels)
    recs = embed_records(read_records(new, require_labels=False), embedder)
    preds = cents.predict(recs.vectors)
    assert recs.ids == ["n1", "n2", "n3"]
    assert [p.label for p in preds] == [lab for _, _, lab in NEW]
    assert all(p.margin > 0 and -1 <= p.score <= 1 for p in preds)


def test_command_writes_jsonl_and_reports_accuracy(tmp_path, embedder):
    train = _jsonl(tmp_path / "train.jsonl", [{"text": t, "topic": lab} for lab, t in TRAIN])
    new = _jsonl(tmp_path / "new.jsonl", [{"id": i, "text": t, "topic": lab} for i, t, lab in NEW])
    out = tmp_path / "pred.jsonl"
    res = CliRunner().invoke(app, ["classify", "--train", str(train), "--input", str(new), "--label-field", "topic",
                                   "--device", "cpu", "--format", "jsonl", "-o", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["label"]) for r in rows] == [(i, lab) for i, _, lab in NEW]
    assert "3 classes from 9 labelled records" in res.output and "accuracy on the 3 with a label: 1.000" in res.output


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n', r"missing.jsonl:2: field 'label' is missing or empty"),
    ("broken.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", "label"\n', r"broken.jsonl:3: malformed JSON"),
    ("empty_text.csv", "text,label\nhello,x\n,y\n", r"empty_text.csv:3: field 'text' is missing or empty"),
    ("nested.jsonl", '{"text": "a", "label": ["x"]}\n', r"nested.jsonl:1: field 'label' must be a string, got list"),
    ("labels.txt", "a\tb\n", r"labels.txt: unsupported file type '.txt'"),
])
def test_bad_label_file_names_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_records(path)
    res = CliRunner().invoke(app, ["classify", "--train", str(path), "--input", str(path), "--device", "cpu"])
    assert res.exit_code == 2 and name in res.output


def test_unlabelled_documents_of_a_table_get_the_nearest_class(tmp_path, embedder):
    db = str(tmp_path / "db")
    docs = [Document(doc_id=f"t{i}", text=t, source="test", metadata={"topic": lab}) for i, (lab, t) in enumerate(TRAIN)]
    docs += [Document(doc_id=i, text=t, source="test") for i, t, _ in NEW]
    rec = run_ingest(IngestSettings(source="test", strategies=["paragraph"], db=db, export_parquet=False,
                                    embedder=EmbedderSettings(device="cpu")), documents=docs)
    records = table_records(RelatedSettings(db=db, table=rec.table_name), "topic")
    fit, new = records.labelled(), records.unlabelled()
    assert len(fit.ids) == 9 and new.ids == ["n1", "n2", "n3"]
    preds = Centroids.fit(fit.vectors, fit.labels).predict(new.vectors)
    assert [p.label for p in preds] == [lab for _, _, lab in NEW]
    res = CliRunner().invoke(app, ["classify", "--db", db, "--table", rec.table_name, "--label-field", "topic"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[1].split()[:2] == ["n1", "cooking"]
    with pytest.raises(ValueError, match="has metadata field 'colour'"):
        table_records(RelatedSettings(db=db, table=rec.table_name), "colour")


def test_squad_article_label_study_on_a_small_file(tmp_path, embedder):
    squad = {"data": [{"title": title, "paragraphs": [{"context": t, "qas": []} for t in texts]}
                      for title, texts in {
                          "Cooking": [t for lab, t in TRAIN if lab == "cooking"],
                          "Astronomy": [t for lab, t in TRAIN if lab == "astronomy"],
                          "Football": [t for lab, t in TRAIN if lab == "football"]}.items()]}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad))
    res = CliRunner().invoke(app, ["classify", "--evaluate", f"squad:{path}", "--per-class", "1,2", "--seeds", "2",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rows = {line.split("|")[1].strip(): line for line in res.output.splitlines() if line.startswith("| ") and line[2].isdigit()}
    assert set(rows) == {"1", "2"}
    assert rows["2"].split("|")[2:4] == [" 6 ", " 3 "] and "| 1.000 (1.000-1.000) |" in rows["2"]
    res = CliRunner().invoke(app, ["classify", "--evaluate", f"beir:{path}"])
    assert res.exit_code == 2 and "--evaluate expects squad:PATH, got 'beir:" in res.output
