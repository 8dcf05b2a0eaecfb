"""Front metrics (docs/algorithms.md, "Front metrics"): hypervolume, sparsity, spacing, inner product,
monotonicity in λ, and the one reference-point policy shared by every method compared.

Objectives are maximised throughout; negate losses first. A front is an array (n, m): n evaluated
points, m objectives. Hypervolume and the non-dominated filter come from `moocore` (exact for any m).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import moocore
import numpy as np
from numpy.typing import ArrayLike


def hypervolume(points: ArrayLike, reference: ArrayLike) -> float:
    """Measure of the region dominated by `points` (n, m) and bounded below by `reference` (m,).

    A point that is not strictly better than the reference in every objective bounds no volume and
    contributes nothing; dominated and repeated points change nothing.
    """
    points = _as_front(points, "points", "hypervolume")
    reference = _as_reference(reference, points.shape[1], "hypervolume")
    above = points[(points > reference).all(axis=1)]
    if len(above) == 0:
        return 0.0
    return float(moocore.hypervolume(above, ref=reference, maximise=True))


def nondominated(points: ArrayLike) -> np.ndarray:
    """The non-dominated rows of `points` (n, m), in their input order, each repeated point kept once: (k, m)."""
    points = _as_front(points, "points", "nondominated")
    return points[moocore.is_nondominated(points, maximise=True, keep_weakly=False)]


def sparsity(points: ArrayLike) -> float:
    """PGMORL's sparsity (Xu et al. 2020, mit-gfx/PGMORL) of the non-dominated set of `points` (n, m).

    1/(k−1) · Σ_dim Σ_j (F̃[j+1] − F̃[j])², F̃ the sorted coordinates of the k non-dominated points in
    that dimension; 0 if k < 2. Lower is better.
    """
    return _sparsity(nondominated(points))


def spacing(points: ArrayLike) -> float:
    """Schott's (1995) spacing of the non-dominated set of `points` (n, m); lower is better.

    The sample standard deviation (ddof = 1) of d_i = min_{j≠i} Σ_dim |F_i − F_j| over the k non-dominated
    points. Taken on the non-dominated set, as sparsity is (our reading: Schott measures a front, and a
    dominated point is not on it); 0 if k < 2, where no distance exists.
    """
    return _spacing(nondominated(points))


def _sparsity(front: np.ndarray) -> float:
    if len(front) < 2:
        return 0.0
    gaps = np.diff(np.sort(front, axis=0), axis=0)  # (k − 1, m): neighbour gaps per dimension
    return float((gaps**2).sum() / (len(front) - 1))


def _spacing(front: np.ndarray) -> float:
    if len(front) < 2:
        return 0.0
    distances = np.abs(front[:, None, :] - front[None, :, :]).sum(axis=2)  # (k, k) L1 distances
    np.fill_diagonal(distances, np.inf)
    return float(distances.min(axis=1).std(ddof=1))


def inner_product(preferences: ArrayLike, points: ArrayLike) -> float:
    """Mean over the grid of ⟨λ, J(π_λ)⟩ on raw scores (ours, inferred from Panacea's tables).

    Row i of `preferences` (n, m) is the λ that produced row i of `points` (n, m).
    """
    preferences, points = _as_grid(preferences, points, "inner_product")
    return float((preferences * points).sum(axis=1).mean())


def reference_point(fronts: Sequence[ArrayLike], margin: float = 0.01) -> np.ndarray:
    """The one reference point (m,) for every method compared (ours): never choose one per method.

    `fronts` holds every evaluated point of every method, one (n_k, m) array per method. Per objective:
    the minimum over all of them minus `margin` times that objective's range. Where the range is 0 (every
    point ties), the step is `margin`·max(1, |minimum|) instead, so the reference is always strictly
    below every point and no hypervolume is 0 only because the points tie.
    """
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"reference_point: margin must be a number > 0 (a fraction of each range), got {margin!r}.")
    if len(fronts) == 0:
        raise ValueError("reference_point needs at least one front, got none.")
    arrays = [_as_front(front, f"fronts[{k}]", "reference_point") for k, front in enumerate(fronts)]
    objectives = [array.shape[1] for array in arrays]
    if len(set(objectives)) > 1:
        raise ValueError(f"reference_point: every front needs the same number of objectives, got {objectives}.")
    everything = np.concatenate(arrays)  # (Σ n_k, m)
    low, high = everything.min(axis=0), everything.max(axis=0)
    step = np.where(high > low, margin * (high - low), margin * np.maximum(1.0, np.abs(low)))
    # A step below float resolution at |low| would round back onto low; keep r strictly below.
    return np.minimum(low - step, np.nextafter(low, -np.inf))


def front_metrics(preferences: ArrayLike, points: ArrayLike, reference: ArrayLike) -> dict:
    """Every front metric of one method's grid, as JSON-able numbers, with the reference it used.

    `preferences` (n, m): the λ grid; `points` (n, m): the scores at each λ; `reference` (m,): from
    `reference_point` over all methods compared. Monotonicity holds Spearman's ρ between λ_i and score i
    per dimension; NaN where it is undefined (a constant column, or a single point).
    """
    preferences, points = _as_grid(preferences, points, "front_metrics")
    reference = _as_reference(reference, points.shape[1], "front_metrics")
    on_the_set = set_metrics(points, reference)
    return {
        "hypervolume": on_the_set["hypervolume"],
        "inner_product": inner_product(preferences, points),
        "sparsity": on_the_set["sparsity"],
        "spacing": on_the_set["spacing"],
        "monotonicity": monotonicity(preferences, points[None])[0].tolist(),
        "num_points": len(points),
        "num_nondominated": len(nondominated(points)),
        "reference": reference.tolist(),
    }


def set_metrics(points: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Hypervolume, sparsity and spacing of one checked front (n, m) against a checked reference (m,).

    The part of `front_metrics` that depends on the points as a set; the bootstrap calls it once per resample
    (panacea.eval.bootstrap.metric_samples) and takes the λ-dependent metrics for every resample at once.
    """
    front = nondominated(points)
    return {"hypervolume": hypervolume(front, reference), "sparsity": _sparsity(front), "spacing": _spacing(front)}


def monotonicity(preferences: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Spearman's ρ between λ_i and objective i, per dimension, for a stack of fronts (B, n, m) on one grid (n, m).

    Returns (B, m); NaN where ρ is undefined (a single point, a constant column).
    """
    resamples, n, m = points.shape
    if n < 2:
        return np.full((resamples, m), math.nan)
    return np.stack([spearman_rows(preferences[:, i], points[:, :, i]) for i in range(m)], axis=1)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: Pearson's correlation of the average ranks (ties share their mean rank).

    NaN when either input is constant (no order to correlate) or holds a NaN, as scipy.stats.spearmanr returns.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"spearman needs two 1-D sequences of equal length >= 2, got shapes {x.shape} and {y.shape}.")
    return float(spearman_rows(x, y[None])[0])


def spearman_rows(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Spearman's ρ between `x` (n,) and every row of `ys` (B, n), as `spearman` computes it, all at once: (B,)."""
    ranks_x, ranks_y = _average_ranks(x[None]), _average_ranks(ys)
    centred_x = ranks_x - ranks_x.mean(axis=1, keepdims=True)
    centred_y = ranks_y - ranks_y.mean(axis=1, keepdims=True)
    scale = np.sqrt((centred_x**2).sum(axis=1) * (centred_y**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(scale > 0, (centred_x * centred_y).sum(axis=1) / scale, math.nan)
    undefined = np.isnan(x).any() | np.isnan(ys).any(axis=1)
    return np.clip(np.where(undefined, math.nan, rho), -1.0, 1.0)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1 along the last axis of `values` (B, n), ties sharing the mean of their ranks.

    A value's mean rank is 1 + (how many are below it) + (how many others equal it) / 2: exact, and the same
    for every row at once (n is a grid's size, so the (B, n, n) comparison is small).
    """
    below = (values[:, None, :] < values[:, :, None]).sum(axis=2)
    equal = (values[:, None, :] == values[:, :, None]).sum(axis=2)
    return 1 + below + (equal - 1) / 2


def _as_front(points: ArrayLike, name: str, caller: str) -> np.ndarray:
    """`points` as a float array (n, m) with n, m ≥ 1 and finite values, or one ValueError saying why not."""
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{caller}: {name} must be numbers in an array (n points, m objectives); {error}") from None
    if array.ndim != 2:
        raise ValueError(f"{caller}: {name} must be a 2-D array (n points, m objectives), got shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"{caller}: {name} is empty (shape {array.shape}); a front needs a point and an objective.")
    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if len(bad_rows):
        raise ValueError(f"{caller}: {name} holds NaN or inf in rows {bad_rows.tolist()}; fix or drop those points.")
    return array


def _as_reference(reference: ArrayLike, objectives: int, caller: str) -> np.ndarray:
    """`reference` as a finite float vector (objectives,), or one ValueError saying why not."""
    array = np.asarray(reference, dtype=np.float64)
    if array.shape != (objectives,):
        expected = f"shape ({objectives},)"
        raise ValueError(f"{caller}: reference must have one value per objective, {expected}, got {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{caller}: reference holds NaN or inf: {array.tolist()}.")
    return array


def _as_grid(preferences: ArrayLike, points: ArrayLike, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """`preferences` and `points` as float arrays of one shape (n, m): row i of points was scored at λ_i."""
    preferences = _as_front(preferences, "preferences", caller)
    points = _as_front(points, "points", caller)
    if len(preferences) != len(points):
        raise ValueError(f"{caller}: {len(points)} points for {len(preferences)} preferences; pass one point per λ.")
    if preferences.shape[1] != points.shape[1]:
        raise ValueError(
            f"{caller}: points have {points.shape[1]} objectives but preferences have {preferences.shape[1]} weights."
        )
    return preferences, points
