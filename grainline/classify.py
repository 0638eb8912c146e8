"""Nearest-centroid classification on stored or freshly embedded vectors.

Each class's centroid is the re-normalised mean of its records' unit vectors; a record
gets the class of the most similar centroid (cosine), with that cosine as its score and
the gap to the runner-up class as its margin (a small margin: an uncertain call).

Labelled records (:mod:`grainline.labels`) come from a JSONL or CSV file of text +
label (embedded here, each text truncated at the model window as a query is), or from
an ingested table: a key of the documents' metadata names the class, and each
document's vector is the one :mod:`grainline.related` builds from its chunks.

May import: labels, related, storage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from grainline.labels import LabelledRecords, split_per_class
# The classify command reaches its readers through this module until it imports them
# from grainline.labels, where they live.

@dataclass
class Centroids:
    """Unit class centroids, row ``i`` for ``classes[i]``, and how many records made each."""

    classes: list[str]
    vectors: np.ndarray
    counts: list[int]

    @classmethod
    def fit(cls, vectors: np.ndarray, labels: Sequence[str]) -> "Centroids":
        """Centroids of unit ``vectors`` grouped by ``labels``."""
        if len(vectors) != len(labels):
            raise ValueError(f"{len(vectors)} vectors but {len(labels)} labels")
        if len(labels) == 0:
            raise ValueError("no labelled records to fit centroids on")
        classes, inverse, counts = np.unique(np.asarray(labels, dtype=object), return_inverse=True, return_counts=True)
        sums = np.zeros((len(classes), vectors.shape[1]))
        np.add.at(sums, inverse, np.asarray(vectors, dtype=np.float64))
        sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        return cls([str(c) for c in classes], sums.astype(np.float32), [int(c) for c in counts])

    def predict(self, vectors: np.ndarray) -> list["Prediction"]:
        """The nearest centroid of each vector, with its cosine and the margin to the
        runner-up (0 when there is only one class)."""
        sims = np.asarray(vectors, dtype=np.float32) @ self.vectors.T
        order = np.argsort(-sims, axis=1, kind="stable")
        out = []
        for row, o in zip(sims, order):
            second = o[1] if len(o) > 1 else None
            out.append(Prediction(
                label=self.classes[o[0]], score=float(row[o[0]]),
                margin=float(row[o[0]] - row[second]) if second is not None else 0.0,
                runner_up=self.classes[second] if second is not None else None,
            ))
        return out


@dataclass
class Prediction:
    label: str
    score: float
    margin: float
    runner_up: str | None


def embed_records(records: LabelledRecords, embedder: Any) -> LabelledRecords:
    """The same records with their vectors (texts past the model window are truncated)."""
    assert records.texts is not None
    records.vectors = embedder.encode(records.texts, desc="records")
    return records


@dataclass
class AccuracyRow:
    per_class: int
    seed: int
    n_train: int
    n_test: int
    accuracy: float
    knn1_accuracy: float


def centroid_accuracy(labelled: LabelledRecords, vectors: np.ndarray, per_class: Sequence[int], seeds: Sequence[int]) -> list[AccuracyRow]:
    """For each label count and seed: fit centroids on ``per_class`` records of every
    class, classify the rest; also the 1-nearest-neighbour accuracy on the same split,
    as a baseline that uses the same labelled records."""
    labels = np.asarray(labelled.labels, dtype=object)
    out = []
    for n in per_class:
        for seed in seeds:
            train, test = split_per_class(labelled.labels, n, seed)
            cents = Centroids.fit(vectors[train], labels[train])
            pred = np.array([p.label for p in cents.predict(vectors[test])], dtype=object)
            nn = np.argmax(vectors[test] @ vectors[train].T, axis=1)
            out.append(AccuracyRow(n, seed, len(train), len(test), float(np.mean(pred == labels[test])),
                                   float(np.mean(labels[train][nn] == labels[test]))))
    return out


def format_predictions(records: LabelledRecords, preds: Sequence[Prediction], fmt: str = "table") -> list[str]:
    """Predictions as aligned text lines (``table``) or JSON lines (``jsonl``)."""
    if fmt == "jsonl":
        return [json.dumps({"id": i, "label": p.label, "score": round(p.score, 4), "margin": round(p.margin, 4),
                            "runner_up": p.runner_up, **({"true_label": t} if t is not None else {})}, ensure_ascii=False)
                for i, p, t in zip(records.ids, preds, records.labels)]
    width = max([len(i) for i in records.ids] + [2])
    lines = [f"{'id':<{width}}  {'label':<24} {'score':>6} {'margin':>7}  runner-up"]
    for i, p, t in zip(records.ids, preds, records.labels):
        mark = "" if t is None else ("  ok" if t == p.label else f"  WRONG (labelled {t})")
        lines.append(f"{i:<{width}}  {p.label:<24} {p.score:6.3f} {p.margin:7.3f}  {p.runner_up or '-'}{mark}")
    return lines


def squad_centroid_study(path: str | Path, embedder: Any, per_class: Sequence[int], seeds: Sequence[int]) -> list[AccuracyRow]:
    """The SQuAD article-label task: every dev paragraph embedded once, then
    :func:`centroid_accuracy` at each label count and seed."""
    from grainline.labels import squad_paragraphs

    labelled = squad_paragraphs(path)
    return centroid_accuracy(labelled, embedder.encode(labelled.texts, desc="paragraphs"), per_class, seeds)


def format_study(rows: Sequence[AccuracyRow]) -> str:
    """Mean (min-max over seeds) accuracy per label count, as a Markdown table."""
    lines = ["| labelled per class | train | test | centroid accuracy | 1-NN accuracy | seeds |",
             "|---|---|---|---|---|---|"]
    for n in sorted({r.per_class for r in rows}):
        rs = [r for r in rows if r.per_class == n]
        acc = [r.accuracy for r in rs]
        nn = [r.knn1_accuracy for r in rs]
        lines.append(f"| {n} | {rs[0].n_train} | {rs[0].n_test} | {np.mean(acc):.3f} ({min(acc):.3f}-{max(acc):.3f}) "
                     f"| {np.mean(nn):.3f} ({min(nn):.3f}-{max(nn):.3f}) | {len(rs)} |")
    return "\n".join(lines)
