"""Labelled records for classification-style evaluations.

The SQuAD article-label task: every paragraph of SQuAD v1.1 dev labelled by the
title of its article (48 classes). It needs no annotation beyond the file itself, the
classes are topical (Super_Bowl_50, Normans, Amazon_rainforest, ...) and uneven in
size, which makes it a fair test of "do records of one class sit together".
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .datasets import DatasetError, _squad_file


@dataclass(frozen=True)
class LabelledTexts:
    """Parallel lists: ``texts[i]`` has class ``labels[i]``; ``ids[i]`` is a stable id
    (``<title>#<paragraph index>`` for SQuAD)."""

    ids: list[str]
    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> list[str]:
        """The distinct labels, sorted."""
        return sorted(set(self.labels))

    def subset(self, indices: Sequence[int]) -> "LabelledTexts":
        """The records at ``indices``, in that order."""
        return LabelledTexts([self.ids[i] for i in indices], [self.texts[i] for i in indices],
                             [self.labels[i] for i in indices])


def squad_paragraph_labels(path: str | Path) -> LabelledTexts:
    """Every paragraph context of a SQuAD v1.1 file, labelled by its article title.

    Paragraphs are kept in file order; ids are ``<title>#<index within the article>``.
    A folder holding one ``.json`` file is accepted. A malformed file raises
    :class:`DatasetError` naming the file and the bad entry."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "SQuAD file does not exist")
    path = _squad_file(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(path, f"malformed JSON ({exc.msg} at column {exc.colno})", exc.lineno) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise DatasetError(path, "not a SQuAD file: expected an object with a 'data' list")
    ids: list[str] = []
    texts: list[str] = []
    labels: list[str] = []
    for a_i, article in enumerate(raw["data"]):
        try:
            title = str(article["title"])
            paragraphs = article["paragraphs"]
        except (KeyError, TypeError):
            raise DatasetError(path, f"data[{a_i}]: article needs 'title' and 'paragraphs'") from None
        for p_i, para in enumerate(paragraphs):
            context = para.get("context") if isinstance(para, dict) else None
            if not isinstance(context, str) or not context.strip():
                raise DatasetError(path, f"data[{a_i}].paragraphs[{p_i}]: paragraph needs a non-empty 'context'")
            ids.append(f"{title}#{p_i}")
            texts.append(context)
            labels.append(title)
    return LabelledTexts(ids, texts, labels)


def split_per_class(labels: Sequence[str], per_class: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """A seeded split: ``per_class`` indices of every class for training, the rest for
    testing. A class with no more than ``per_class`` records keeps one back for testing
    so every class is scored (a class of one record goes to training)."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    rng = random.Random(seed)
    train: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        take = min(per_class, max(len(members) - 1, 1))
        train += rng.sample(members, take)
    chosen = set(train)
    test = [i for i in range(len(labels)) if i not in chosen]
    return sorted(train), test
