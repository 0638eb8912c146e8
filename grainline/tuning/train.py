"""Training a head on frozen vectors so that records of the same class sit closer
together, and the same-class rate that measures it.

The head (:class:`grainline.embedding.Head`) is a residual linear map whose W and b
start at zero, so an untrained head is the identity, and weight decay pulls it back
towards the identity: with few labels it can only move the space as far as the labels
justify."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from grainline.embedding import Head


class HeadSettings(BaseModel):
    """How a head is trained. ``dim`` comes from the base model's vectors.

    The objective is supervised contrastive loss (InfoNCE over class groups): each
    record in a batch of P classes x K records is pulled towards every other record of
    its class against all the records of the other classes at once. It uses every
    positive and negative pair in the batch (a triplet loss uses one of each per
    anchor and needs hard-negative mining to learn as fast), has no margin to tune,
    and its temperature behaves the same on unit vectors whatever the model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(default=30, ge=1)  # an epoch is about n_records / (P * K) batches, at least one
    classes_per_batch: int = Field(default=16, ge=2)  # P
    per_class: int = Field(default=4, ge=2)  # K
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-2, ge=0)  # AdamW's: pulls W and b back towards the identity head
    temperature: float = Field(default=0.1, gt=0, le=10)
    seed: int = 0


# --------------------------------------------------------------------------- training


def _batches(labels: np.ndarray, settings: HeadSettings, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of P x K batches: P classes drawn without replacement, then K records
    of each (all of a smaller class)."""
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    groups = [g for g in groups if len(g) >= 2]
    per_batch = min(settings.classes_per_batch, len(groups)) * settings.per_class
    n_batches = max(1, math.ceil(sum(len(g) for g in groups) / per_batch))
    out = []
    for _ in range(n_batches):
        chosen = rng.choice(len(groups), size=min(settings.classes_per_batch, len(groups)), replace=False)
        out.append(np.concatenate([rng.choice(groups[c], size=min(settings.per_class, len(groups[c])), replace=False) for c in chosen]))
    return out


def supcon_loss(z: Any, y: Any, temperature: float) -> Any:
    """Supervised contrastive loss of unit vectors ``z`` with class ids ``y``: the mean,
    over anchors with a positive, of -log softmax similarity to each positive."""
    import torch

    sim = z @ z.T / temperature
    self_mask = torch.eye(len(y), dtype=torch.bool)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    has = n_pos > 0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(1)[has] / n_pos[has])
    return per_anchor.mean()


def train_head(vectors: np.ndarray, labels: Sequence[str], settings: HeadSettings | None = None,
               meta: dict[str, Any] | None = None) -> Head:
    """Train a head on frozen base vectors with class labels (CPU, deterministic for a
    seed). ``meta`` (base model identity, source, ...) is stored with the weights."""
    import torch

    settings = settings or HeadSettings()
    x_np = np.asarray(vectors, dtype=np.float32)
    if x_np.ndim != 2 or len(x_np) != len(labels):
        raise ValueError(f"need one label per vector: {x_np.shape} vectors, {len(labels)} labels")
    names_arr, y_np = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    names = names_arr.tolist()
    counts = np.bincount(y_np, minlength=len(names))
    if (counts >= 2).sum() < 2:
        raise ValueError(f"training needs at least two classes with two or more records each; got class sizes {sorted(counts.tolist(), reverse=True)[:10]}")
    dim = x_np.shape[1]
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    # The batches are tiny (64 x 384): one thread is fastest, and on a busy machine a
    # second thread spinning at every step made training 40x slower (26 s vs 0.6 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(x_np, y_np, names, counts, dim, settings, rng, meta)
    finally:
        torch.set_num_threads(threads)


def _train(x_np: np.ndarray, y_np: np.ndarray, names: list[str], counts: np.ndarray, dim: int,
           settings: HeadSettings, rng: np.random.Generator, meta: dict[str, Any] | None) -> Head:
    import torch

    weight = torch.zeros(dim, dim, requires_grad=True)
    bias = torch.zeros(dim, requires_grad=True)
    opt = torch.optim.AdamW([weight, bias], lr=settings.lr, weight_decay=settings.weight_decay)
    x = torch.from_numpy(x_np)
    y = torch.from_numpy(y_np)
    losses: list[float] = []
    t0 = time.perf_counter()
    steps = 0
    for _ in range(settings.epochs):
        epoch_loss = []
        for idx in _batches(y_np, settings, rng):
            xb = x[idx]
            z = torch.nn.functional.normalize(xb + xb @ weight.T + bias, dim=1)
            loss = supcon_loss(z, y[idx], settings.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            epoch_loss.append(loss.item())
            steps += 1
        losses.append(float(np.mean(epoch_loss)))
    seconds = time.perf_counter() - t0
    head = Head(weight.detach().numpy().copy(), bias.detach().numpy().copy())
    head.meta = {
        **(meta or {}),
        "settings": settings.model_dump(),
        "objective": "supervised-contrastive",
        "labels": names,
        "n_records": int(len(x_np)),
        "class_sizes": {n: int(c) for n, c in zip(names, counts)},
        "seed": settings.seed,
        "steps": steps,
        "train_seconds": round(seconds, 3),
        "metrics": {"loss_first_epoch": losses[0], "loss_last_epoch": losses[-1]},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return head


# --------------------------------------------------------------------------- metric


def same_class_rate(vectors: np.ndarray, labels: Sequence[str], ks: Sequence[int] = (10, 100)) -> dict[int, float]:
    """For each record, the share of its k most similar other records (cosine, the
    record itself excluded) that have its class; the mean over records, per k. With
    fewer than k + 1 records, k is what there is."""
    v = np.asarray(vectors, dtype=np.float32)
    y = np.unique(np.asarray(labels), return_inverse=True)[1]
    n = len(v)
    out: dict[int, float] = {}
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    kmax = min(max(ks), n - 1)
    top = np.argpartition(-sims, kmax - 1, axis=1)[:, :kmax] if kmax < n - 1 else np.argsort(-sims, axis=1)[:, :kmax]
    # argpartition leaves the top kmax unordered; order them to cut at smaller k.
    order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
    top = np.take_along_axis(top, order, axis=1)
    same = y[top] == y[:, None]
    for k in ks:
        kk = min(k, n - 1)
        out[int(k)] = float(same[:, :kk].mean())
    return out


def same_class_ceiling(labels: Sequence[str], ks: Sequence[int] = (10, 100)) -> dict[int, float]:
    """The best possible same-class rate: a record with c - 1 classmates can have at
    most min(c - 1, k) of them among its k neighbours."""
    lab = np.asarray(labels)
    _, inv, counts = np.unique(lab, return_inverse=True, return_counts=True)
    n = len(lab)
    return {int(k): float(np.mean(np.minimum(counts[inv] - 1, min(k, n - 1)) / min(k, n - 1))) for k in ks}
