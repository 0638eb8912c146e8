"""Uncertainty and significance for per-query metric values.

Chunk granularities are compared on the same queries, so differences are tested
paired (per-query differences with random sign flips), which is far more sensitive
than comparing two independent confidence intervals.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as _st


def _as_1d(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
    method: str = "BCa",
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the sample mean and a bootstrap confidence interval of
    the mean, via ``scipy.stats.bootstrap``.

    BCa is tried first and the percentile interval used where BCa degenerates (NaN
    bounds or a degenerate-data warning, typical of near-constant 0/1 metrics).
    Constant or single-value input returns ``(v, v, v)`` without resampling or warnings.
    """
    arr = _as_1d(values)
    mean = float(arr.mean())
    if arr.size == 1 or np.all(arr == arr[0]):
        return mean, mean, mean
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")

    def run(m: str) -> tuple[float, float] | None:
        with warnings.catch_warnings():
            warnings.simplefilter("error", _st.DegenerateDataWarning)
            try:
                res = _st.bootstrap(
                    (arr,),
                    np.mean,
                    n_resamples=n_resamples,
                    confidence_level=confidence,
                    method=m,
                    vectorized=True,
                    # Bounds memory: resamples x n floats per batch (10k queries fit).
                    batch=max(1, min(n_resamples, 2_000_000 // arr.size)),
                    rng=np.random.default_rng(seed),
                )
            except _st.DegenerateDataWarning:
                return None
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (np.isfinite(low) and np.isfinite(high)):
            return None
        return low, high

    bounds = None
    if method.lower() == "bca":
        bounds = run("BCa")
    if bounds is None:
        bounds = run("percentile")
    if bounds is None:  # pragma: no cover - percentile only degenerates on constant data
        return mean, mean, mean
    # The interval of the mean should contain the mean; float noise aside, it does.
    low, high = min(bounds[0], mean), max(bounds[1], mean)
    return mean, low, high


def paired_permutation_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_resamples: int = 10000,
    seed: int = 0,
) -> float:
    """Two-sided p-value that paired samples ``a`` and ``b`` have the same mean.

    Sign-flip test on the per-query differences: under the null each difference is
    as likely negative as positive, so p = P(|sum of randomly signed differences| >=
    |observed sum|). Exact (all 2**m sign patterns over the m non-zero differences)
    when 2**m <= ``n_resamples``; otherwise ``n_resamples`` seeded random patterns with
    p = (hits + 1) / (n_resamples + 1), so it is never 0. This is the same test as
    ``scipy.stats.permutation_test(..., permutation_type="samples")`` on the mean
    difference, in numpy because scipy takes seconds per pair on 10k queries and an
    evaluation makes hundreds of pairs. Identical inputs give 1.0.
    """
    x = _as_1d(a, "a")
    y = _as_1d(b, "b")
    if x.size != y.size:
        raise ValueError(f"paired test needs equal lengths: a has {x.size} values, b has {y.size}")
    d = x - y
    # Zero differences add nothing to any signed sum; dropping them shrinks the work
    # (most 0/1 metrics agree on most queries) without changing the p-value.
    d = d[d != 0]
    m = d.size
    if m == 0:
        return 1.0
    observed = abs(float(d.sum()))
    # Sums of the same numbers in another order differ by rounding only.
    threshold = observed - 1e-9 * max(1.0, observed)
    total = float(d.sum())
    if m < 63 and (1 << m) <= n_resamples:
        patterns = np.arange(1 << m, dtype=np.int64)
        bits = ((patterns[:, None] >> np.arange(m, dtype=np.int64)) & 1).astype(np.float64)
        # sum(s_i * d_i) with s = 2*bit - 1 is 2 * (bits @ d) - sum(d).
        stats_ = np.abs(2.0 * (bits @ d) - total)
        return float(min(1.0, np.count_nonzero(stats_ >= threshold) / (1 << m)))
    rng = np.random.default_rng(seed)
    hits = 0
    batch = max(1, min(n_resamples, 4_000_000 // m))
    n_bytes = (m + 7) // 8
    done = 0
    while done < n_resamples:
        size = min(batch, n_resamples - done)
        raw = rng.integers(0, 256, size=(size, n_bytes), dtype=np.uint8)
        bits = np.unpackbits(raw, axis=1, count=m).astype(np.float64)
        stats_ = np.abs(2.0 * (bits @ d) - total)
        hits += int(np.count_nonzero(stats_ >= threshold))
        done += size
    return float(min(1.0, (hits + 1) / (n_resamples + 1)))


def pairwise_significance(
    per_query: Mapping[str, Sequence[float] | np.ndarray],
    n_resamples: int = 10000,
    seed: int = 0,
) -> dict[tuple[str, str], float]:
    """Paired permutation p-value for every unordered pair of configurations, keyed
    ``(name_a, name_b)`` in the mapping's order. The arrays must be aligned by query.
    No multiple-comparison correction is applied; with many pairs, read p-values
    against a corrected threshold (e.g. Holm)."""
    names = list(per_query)
    return {
        (na, nb): paired_permutation_test(per_query[na], per_query[nb], n_resamples=n_resamples, seed=seed)
        for na, nb in itertools.combinations(names, 2)
    }
