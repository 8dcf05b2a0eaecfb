"""Front metrics. So far: per-dimension monotonicity in λ (Spearman's rank correlation; ours, docs/algorithms.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: Pearson's correlation of the average ranks (ties share their mean rank).

    NaN when either input is constant (no order to correlate) or holds a NaN, as scipy.stats.spearmanr returns.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"spearman needs two 1-D sequences of equal length >= 2, got shapes {x.shape} and {y.shape}.")
    if np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    rank_x, rank_y = _average_ranks(x), _average_ranks(y)
    if rank_x.std() == 0 or rank_y.std() == 0:
        return float("nan")
    return float(np.corrcoef(rank_x, rank_y)[0, 1])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):  # ties share the mean of their ranks
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks
