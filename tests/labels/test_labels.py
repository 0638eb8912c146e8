"""Labelled SQuAD paragraphs and the seeded per-class split."""

from __future__ import annotations

import json

import pytest

from grainline.evaluation.datasets import DatasetError
from grainline.labels import split_per_class, squad_paragraphs

from tests.conftest import SHARED_DATA


def test_squad_paragraph_labels_from_a_small_file(tmp_path):
    path = tmp_path / "mini.json"
    data = {"data": [
        {"title": "Bees", "paragraphs": [{"context": "Bees dance.", "qas": []}, {"context": "Hives hum.", "qas": []}]},
        {"title": "Tides", "paragraphs": [{"context": "The Moon pulls.", "qas": []}]},
    ]}
    path.write_text(json.dumps(data))
    d = squad_paragraphs(path)
    assert d.ids == ["Bees#0", "Bees#1", "Tides#0"]
    assert d.labels == ["Bees", "Bees", "Tides"] and d.texts[2] == "The Moon pulls."
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"title": "X", "paragraphs": [{"qas": []}]}]}))
    with pytest.raises(DatasetError, match=r"bad.json: data\[0\].paragraphs\[0\]: paragraph needs"):
        squad_paragraphs(bad)


def test_split_per_class_is_seeded_and_keeps_one_back():
    labels = ["a"] * 6 + ["b"] * 2 + ["c"]
    train, test = split_per_class(labels, 3, seed=1)
    assert split_per_class(labels, 3, seed=1) == (train, test)
    assert sorted(train + test) == list(range(9))
    counts = {c: sum(labels[i] == c for i in train) for c in "abc"}
    assert counts == {"a": 3, "b": 1, "c": 1}  # b keeps one back; c has nothing to keep back
    with pytest.raises(ValueError, match="per_class must be at least 1, got 0"):
        split_per_class(labels, 0)


SQUAD = SHARED_DATA / "squad-v1.1" / "dev-v1.1.json"


@pytest.mark.dataset
@pytest.mark.skipif(not SQUAD.exists(), reason=f"SQuAD not found at {SQUAD}")
def test_squad_dev_has_48_articles():
    d = squad_paragraphs(SQUAD)
    assert len(d.classes) == 48 and len(d) == 2067
