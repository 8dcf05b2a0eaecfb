"""Intervals for fronts: a paired cluster bootstrap over held-out items (docs/algorithms.md §6, "Intervals").

A scorer's held-out *items* (pairs, prompts) are grouped into *clusters*, one per distinct prompt, because items
that share a prompt are not independent. A resample draws as many clusters as there are, with replacement, and
weighs every item by its cluster's count; an objective is then the weighted mean of its items' values. One set of
resamples (a seed, a count) is shared by every λ of a grid and every run compared: the same clusters, the same
draws, so the differences between points and between runs are paired.

A scorer's evaluation document describes its objectives in data (`objectives`: per dimension, which sets, which
per-item column, which transform), so that `panacea compare` recomputes every objective and its interval from
the per-item values in a results.json alone, on a fresh clone, without the model.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from panacea._names import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

from .metrics import front_metrics, monotonicity, reference_point, set_metrics

RESAMPLES, SEED = BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED  # 2,000 ≥ 1,000 (docs/algorithms.md): 50 beyond each 2.5 %
LEVEL = 0.95

# How an item's value enters an objective (the objective is the weighted mean of the transformed values).
# "win": 1 above 0, ½ at exactly 0 (a tie, as at the reference policy), 0 below; "sigmoid": σ(x).
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda values: values,
    "negate": lambda values: -values,
    "win": lambda values: (values > 0) + 0.5 * (values == 0),
    "sigmoid": lambda values: 0.5 * (1 + np.tanh(0.5 * values)),  # σ(x) without overflow for large |x|
}
# Metrics computed on every resample: (name, higher is better).
METRICS = (
    ("hypervolume", True),
    ("inner_product", True),
    ("sparsity", False),
    ("spacing", False),
)


def prompt_cluster(prompt: str) -> str:
    """The cluster of an item: its prompt, lower-cased and whitespace-collapsed, as 16 hex digits of sha256."""
    return hashlib.sha256(" ".join(prompt.lower().split()).encode("utf-8")).hexdigest()[:16]


def token_cluster(ids: Sequence[int]) -> str:
    """The cluster of a tokenized item: its prompt's token ids, as 16 hex digits of sha256."""
    return hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


def resample_weights(clusters: Sequence[str], resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Item weights (resamples, items): each resample draws len(unique clusters) clusters with replacement.

    The draws depend only on the set of cluster keys (taken in sorted order), the count and the seed, never on
    the items' order, so two runs scored on the same items get the same resamples.
    """
    if resamples < 1:
        raise ValueError(f"the bootstrap needs at least one resample, got {resamples}.")
    if len(clusters) == 0:
        raise ValueError("the bootstrap needs at least one held-out item, got none.")
    keys = sorted(set(clusters))
    index = {key: position for position, key in enumerate(keys)}
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(keys), np.full(len(keys), 1 / len(keys)), size=resamples)  # (B, clusters)
    return counts[:, [index[cluster] for cluster in clusters]].astype(np.float64)


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> list[float]:
    """The `level` percentile interval [low, high] of `samples` (B, ...) along axis 0, NaN resamples left out."""
    samples = np.asarray(samples, dtype=np.float64)
    tail = 50 * (1 - level)
    with warnings.catch_warnings():  # a metric NaN on every resample (e.g. a constant objective's ρ) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(samples, [tail, 100 - tail], axis=0)
    return [low.tolist(), high.tolist()] if np.ndim(low) else [float(low), float(high)]


def interval_pairs(samples: np.ndarray, level: float = LEVEL) -> list:
    """`percentile_interval` of samples (B, *shape) as nested lists of shape (*shape, 2): [low, high] per entry."""
    low, high = percentile_interval(samples, level)
    return np.stack([np.asarray(low), np.asarray(high)], axis=-1).tolist()


def verdict(interval: Sequence[float], higher_is_better: bool = True) -> str:
    """'win' when the interval of (row − baseline) excludes 0 on the better side, 'loss' on the worse, else 'tie'."""
    low, high = interval
    if not (math.isfinite(low) and math.isfinite(high)):
        return "tie"
    if low > 0:
        return "win" if higher_is_better else "loss"
    if high < 0:
        return "loss" if higher_is_better else "win"
    return "tie"


def item_clusters(items: Mapping[str, Sequence[str]]) -> tuple[list[str], dict[str, slice]]:
    """All items' clusters in one order (sets sorted by name) and each set's slice of it."""
    clusters, slices, start = [], {}, 0
    for name in sorted(items):
        clusters += list(items[name])
        slices[name] = slice(start, start + len(items[name]))
        start += len(items[name])
    return clusters, slices


def objective_values(
    scorer: Mapping, dimensions: Sequence[str], objective: str, weights: np.ndarray | None = None
) -> np.ndarray:
    """Each grid point's objectives (n, m) from a scorer's per-item values; with `weights` (B, items), per resample
    (B, n, m). `scorer` is a scorer's entry of a results document (its `objectives`, `items` and `points`)."""
    spec = objective_spec(scorer, objective)
    return np.stack([pooled_mean(scorer, spec["dimensions"][name], weights) for name in dimensions], axis=-1)


def pooled_mean(scorer: Mapping, entry: Mapping, weights: np.ndarray | None = None) -> np.ndarray:
    """The mean of `entry`'s column (transformed) over the items of its sets at each grid point: (n,), or with
    `weights` (B, items) the weighted mean per resample: (B, n), NaN where a resample drew none of its items."""
    _, slices = item_clusters(scorer["items"])
    values = np.asarray(
        [
            np.concatenate([point["sets"][name]["values"][entry["column"]] for name in entry["sets"]])
            for point in scorer["points"]
        ],
        dtype=np.float64,
    )  # (n, items of these sets)
    values = TRANSFORMS[entry["transform"]](values)
    if weights is None:
        return values.mean(axis=1)
    chosen = np.concatenate([weights[:, slices[name]] for name in entry["sets"]], axis=1)  # (B, items)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (chosen @ values.T) / chosen.sum(axis=1, keepdims=True)


def statistic_intervals(
    scorer: Mapping,
    statistics: Mapping[str, Mapping],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    weights: np.ndarray | None = None,
) -> dict[str, dict]:
    """Each statistic (sets, column, transform) at every grid point with its interval: {name: {values, intervals}}.
    `weights` (B, items): resamples drawn already (a comparison's, shared by every front); else drawn here."""
    if weights is None:
        clusters, _ = item_clusters(scorer["items"])
        weights = resample_weights(clusters, resamples, seed)
    result = {}
    for name, entry in statistics.items():
        result[name] = {
            **entry,
            "values": pooled_mean(scorer, entry).tolist(),
            "intervals": interval_pairs(pooled_mean(scorer, entry, weights), level),
        }
    return result


def point_statistics(items: Sequence, point: Mapping, statistics: Mapping[str, Mapping], **kwargs) -> dict[str, dict]:
    """`statistic_intervals` of one point scored on `items` (the base model's own answers, say): each statistic's
    `values` and `intervals` hold one entry. `kwargs` as `statistic_intervals`'s (`weights`: a comparison's
    resamples; else `resamples` and `seed`)."""
    return statistic_intervals({"items": items, "points": [point]}, statistics, **kwargs)


def objective_spec(scorer: Mapping, objective: str) -> dict:
    """The named objective's description in a scorer's entry, or one error naming the ones it has."""
    specs = scorer.get("objectives") or {}
    if objective not in specs:
        raise ValueError(f"objective {objective!r} is not one of this scorer's: {sorted(specs)}.")
    return specs[objective]


def metric_samples(grid: np.ndarray, samples: np.ndarray, reference: np.ndarray) -> dict[str, np.ndarray]:
    """Every front metric on every resample: {name: (B,)}, "monotonicity": (B, m); NaN rows for a NaN resample.

    The same numbers as `front_metrics` on each resample: the λ-dependent metrics for all resamples at once,
    the set metrics (hypervolume, sparsity, spacing) one resample at a time.
    """
    resamples, _, m = samples.shape
    finite = np.isfinite(samples).all(axis=(1, 2))
    result = {name: np.full(resamples, np.nan) for name, _ in METRICS}
    result["inner_product"][finite] = (grid[None] * samples[finite]).sum(axis=2).mean(axis=1)
    result["monotonicity"] = np.full((resamples, m), np.nan)
    result["monotonicity"][finite] = monotonicity(grid, samples[finite])
    for b in np.flatnonzero(finite):
        for name, value in set_metrics(samples[b], reference).items():
            result[name][b] = value
    return result


def bootstrap_fronts(
    scorers: Sequence[Mapping],
    dimensions: Sequence[str],
    grid: Sequence[Sequence[float]],
    objective: str,
    reference: Sequence[float] | None = None,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> dict:
    """Each front's objectives and metrics with intervals, from one shared set of resamples (paired).

    `scorers`: one scorer entry of a results document per front, all scored on the same items. The reference
    point: `reference` if given, else 0 in every objective for a bounded objective, else the shared
    minimum-less-1 % policy (panacea.eval.metrics.reference_point) over every front's points.
    Returns {"reference", "reference_policy", "bootstrap", "fronts": [{"objectives" (n, m), "intervals" (n, m, 2),
    "metrics", "metric_intervals"}], "samples": [{metric: (B, ...)}], "weights": (B, items)} ("samples" and the
    item weights are for differences; not JSON).
    """
    items = scorers[0]["items"]
    for scorer in scorers[1:]:
        if scorer["items"] != items:
            raise ValueError(
                "the fronts were scored on different held-out items, so their resamples cannot be paired; "
                "evaluate every run with the same pairs or prompts."
            )
    grid = np.asarray(grid, dtype=np.float64)
    clusters, _ = item_clusters(items)
    weights = resample_weights(clusters, resamples, seed)
    estimates = [objective_values(scorer, dimensions, objective) for scorer in scorers]
    bounded = objective_spec(scorers[0], objective).get("bounded", False)
    if reference is not None:
        r, policy = np.asarray(reference, dtype=np.float64), "given"
    elif bounded:
        r, policy = np.zeros(len(dimensions)), "fixed: 0 in every (bounded) objective"
    else:
        r = reference_point(estimates)
        policy = "shared: per objective, the minimum over every point of every front compared minus 1 % of its range"
    fronts, samples = [], []
    undefined = np.zeros(len(weights), dtype=bool)  # resamples that drew none of some set's items: NaN, left out
    for scorer, estimate in zip(scorers, estimates, strict=True):
        drawn = objective_values(scorer, dimensions, objective, weights)  # (B, n, m)
        undefined |= ~np.isfinite(drawn).all(axis=(1, 2))
        per_metric = metric_samples(grid, drawn, r)
        fronts.append(
            {
                "objectives": estimate.tolist(),
                "intervals": interval_pairs(drawn, level),  # (n, m, 2)
                "metrics": front_metrics(grid, estimate, r),
                "metric_intervals": {name: percentile_interval(values, level) for name, values in per_metric.items()},
            }
        )
        samples.append(per_metric)
    return {
        "objective": objective,
        "reference": r.tolist(),
        "reference_policy": policy,
        "bootstrap": {
            "resamples": resamples,
            "seed": seed,
            "level": level,
            "clusters": len(set(clusters)),
            "items": len(clusters),
            "unit": "prompt",
            "undefined_resamples": int(undefined.sum()),  # left out of every interval above (NaN)
        },
        "fronts": fronts,
        "samples": samples,
        "weights": weights,
    }


def differences(
    fronts: Mapping, row: int, baseline: int, level: float = LEVEL
) -> dict[str, dict[str, float | list[float] | str]]:
    """Row − baseline for every scalar front metric: the full-data difference, its paired interval, the verdict."""
    result = {}
    for name, higher_is_better in METRICS:
        estimate = fronts["fronts"][row]["metrics"][name] - fronts["fronts"][baseline]["metrics"][name]
        interval = percentile_interval(fronts["samples"][row][name] - fronts["samples"][baseline][name], level)
        result[name] = {"difference": estimate, "interval": interval, "verdict": verdict(interval, higher_is_better)}
    return result


def contrast(estimate: float, samples: np.ndarray, level: float = LEVEL) -> dict:
    """A difference of two statistics that carry no better side (loops, refusal, length): the full-data `estimate`,
    the interval of its paired resamples `samples` (B,), and its direction — 'higher' / 'lower' when the interval
    lies above / below 0, else 'tie'."""
    interval = percentile_interval(samples, level)
    direction = {"win": "higher", "loss": "lower", "tie": "tie"}[verdict(interval)]
    return {"difference": float(estimate), "interval": interval, "direction": direction}


def flagged_share(flags: Sequence[bool], prompts: Sequence[str]) -> dict:
    """The share of answers flagged (a refusal, a loop), one flag per answer to `prompts`, with its 95 % interval
    over prompts (the resamples of this module, clustered by prompt): {"value", "interval"}."""
    return clustered_mean(flags, [prompt_cluster(prompt) for prompt in prompts])


def clustered_mean(values: Sequence[float], clusters: Sequence[str]) -> dict:
    """The mean of `values`, one per item, with its 95 % interval over the items' clusters (this module's
    resamples): {"value", "interval"}."""
    values = np.array(values, dtype=float)
    weights = resample_weights(clusters)
    return {"value": float(values.mean()), "interval": percentile_interval(weights @ values / weights.sum(1))}
