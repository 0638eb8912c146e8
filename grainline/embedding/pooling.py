"""Long texts and the model window: which window-sized pieces of each chunk go through
the model, and how a pooled chunk's window vectors become one vector."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from grainline.chunkers import ModelWindow
from grainline.documents import Chunk


@dataclass
class WindowPlan:
    """The texts to embed for a list of chunks: ``owners[i]`` is the chunk that text
    ``i`` belongs to, ``counts[i]`` its known model token count (None: to be counted),
    ``n_windows[j]`` how many texts chunk ``j`` became."""

    texts: list[str] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)
    counts: list[int | None] = field(default_factory=list)
    n_windows: list[int] = field(default_factory=list)


def first_window(counter: Any, text: str, size: int, overlap: int) -> list[tuple[int, int]]:
    """The first window of ``text`` only, tokenizing a growing prefix: truncating a
    megabyte-long article should not tokenize all of it. When a prefix still holds
    three windows, the cut is far past the first one, so that window is the full
    text's first window too."""
    n = size * 16
    while n < len(text):
        spans = counter.windows(text[:n], size, overlap)
        if len(spans) >= 3:
            return spans[:1]
        n *= 4
    return counter.windows(text, size, overlap)[:1]


def plan_windows(chunks: Sequence[Chunk], win: ModelWindow, pool_overlap: int) -> WindowPlan:
    """``pool`` chunks become windows covering the whole text, ``truncate`` chunks their
    first window, everything else itself (with its stored token count)."""
    plan = WindowPlan()
    for i, c in enumerate(chunks):
        if c.handling in ("pool", "truncate"):
            overlap = min(pool_overlap, win.max_tokens // 4)
            if c.handling == "truncate":
                spans = first_window(win.counter, c.text, win.max_tokens, overlap)
            else:
                spans = win.counter.windows(c.text, win.max_tokens, overlap)
            for s, e in spans:
                plan.texts.append(c.text[s:e])
                plan.owners.append(i)
                plan.counts.append(None)
            plan.n_windows.append(len(spans))
        else:
            plan.texts.append(c.text)
            plan.owners.append(i)
            plan.counts.append(c.n_model_tokens)
            plan.n_windows.append(1)
    return plan


def pool(vecs: np.ndarray, owners: Sequence[int], n_chunks: int) -> np.ndarray:
    """One float32 vector per chunk: the re-normalised mean of its windows' vectors."""
    pooled = np.zeros((n_chunks, vecs.shape[1]), dtype=np.float64)
    np.add.at(pooled, np.asarray(owners), vecs)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    pooled /= np.where(norms == 0, 1.0, norms)
    return pooled.astype(np.float32)
