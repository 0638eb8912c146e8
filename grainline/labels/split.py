"""Which labelled records train and which test, seeded: a fixed number per class
(:func:`split_per_class`, the centroid study) or a fixed total drawn so that every
sampled class has a pair to learn from (:func:`labelled_subset`, head tuning)."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Sequence

import numpy as np


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


def labelled_subset(labels: list[str], n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` records to label, the rest being held out; seeded.

    Contrastive training needs two records of a class to learn anything about it, so
    a sampled class always gets at least two. With fewer than two per class to give
    (``n < 2 * classes``) ``n // 2`` classes are drawn at random and two records of
    each (plus one more record when ``n`` is odd). Otherwise every class gets two,
    and the remaining ``n - 2 * classes`` are shared in proportion to each class's
    size minus two (largest remainders), so the held-out records keep the classes'
    proportions; every class keeps at least one record held out. Records within a
    class are drawn at random."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels))
    members = {c: rng.permutation([i for i, lab in enumerate(labels) if lab == c]) for c in classes}
    usable = [c for c in classes if len(members[c]) >= 3]  # two to label, one to hold out
    cap = sum(len(members[c]) - 1 for c in usable)
    if n < 2 or n > cap:
        raise ValueError(f"cannot label {n} records: between 2 and {cap} possible here (classes of 3+ records, one held out each)")
    take: dict[str, int] = {}
    if n < 2 * len(usable):
        order = [usable[i] for i in rng.permutation(len(usable))]
        for c in order[: n // 2]:
            take[c] = 2
        if n % 2:
            take[order[n // 2]] = 1
    else:
        take = {c: 2 for c in usable}
        rest = n - 2 * len(usable)
        room = np.array([len(members[c]) - 3 for c in usable], dtype=float)
        share = rest * room / room.sum() if room.sum() else np.zeros(len(usable))
        extra = np.minimum(np.floor(share).astype(int), room.astype(int))
        left = rest - int(extra.sum())
        order = np.argsort(-(share - extra), kind="stable")
        while left > 0:  # n <= cap, so there is always room somewhere
            for j in order:
                if left and extra[j] < room[j]:
                    extra[j] += 1
                    left -= 1
        for c, e in zip(usable, extra):
            take[c] += int(e)
    return np.sort(np.concatenate([members[c][:k] for c, k in take.items()]))
