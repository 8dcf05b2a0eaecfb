"""The paired cluster bootstrap (docs/algorithms.md §6, "Intervals"): resamples, intervals, verdicts, coverage."""

import numpy as np
import pytest
from panacea.eval.bootstrap import (
    METRICS,
    bootstrap_fronts,
    differences,
    metric_samples,
    objective_values,
    percentile_interval,
    resample_weights,
    statistic_intervals,
    verdict,
)
from panacea.eval.metrics import front_metrics, hypervolume

GRID = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
ACCURACY = {
    "accuracy": {
        "bounded": True,
        "description": "accuracy",
        "dimensions": {
            "a": {"sets": ["a/x"], "column": "margin", "transform": "win"},
            "b": {"sets": ["b/y"], "column": "margin", "transform": "win"},
        },
    },
    "margin": {
        "bounded": False,
        "description": "margin",
        "dimensions": {
            "a": {"sets": ["a/x"], "column": "margin", "transform": "identity"},
            "b": {"sets": ["b/y"], "column": "margin", "transform": "identity"},
        },
    },
}


def front(margins_a, margins_b, items=None):
    """A pairs scorer's entry: per grid point the margins of set a/x and b/y."""
    items = items or {
        "a/x": [f"a{i}" for i in range(len(margins_a[0]))],
        "b/y": [f"b{i}" for i in range(len(margins_b[0]))],
    }
    points = [
        {"sets": {"a/x": {"values": {"margin": list(a)}}, "b/y": {"values": {"margin": list(b)}}}}
        for a, b in zip(margins_a, margins_b, strict=True)
    ]
    return {"objectives": ACCURACY, "items": items, "points": points}


def test_resample_weights_draw_whole_clusters_and_ignore_item_order():
    clusters = ["p", "q", "p", "r", "q", "p"]
    weights = resample_weights(clusters, resamples=500, seed=3)
    assert weights.shape == (500, 6)
    assert (weights[:, 0] == weights[:, 2]).all() and (weights[:, 0] == weights[:, 5]).all()  # one prompt, one count
    assert (weights[:, [0, 1, 3]].sum(axis=1) == 3).all()  # each resample draws as many prompts as there are
    shuffled = resample_weights(["q", "r", "p"], resamples=500, seed=3)  # the same prompts in another order
    assert (shuffled[:, 2] == weights[:, 0]).all() and (shuffled[:, 0] == weights[:, 1]).all()
    assert (resample_weights(clusters, 500, seed=3) == weights).all()  # seeded
    assert not (resample_weights(clusters, 500, seed=4) == weights).all()
    with pytest.raises(ValueError, match="at least one resample"):
        resample_weights(clusters, 0)


def test_percentile_interval_and_verdict():
    assert percentile_interval(np.arange(1001.0)) == pytest.approx([25.0, 975.0])
    assert percentile_interval(np.array([np.nan, 1.0, 2.0, 3.0]), level=0.5) == pytest.approx([1.5, 2.5])
    assert verdict([0.01, 0.2]) == "win" and verdict([-0.2, -0.01]) == "loss" and verdict([-0.1, 0.1]) == "tie"
    assert verdict([0.01, 0.2], higher_is_better=False) == "loss" and verdict([0.0, 0.1]) == "tie"


def test_objective_values_weigh_items_by_their_resample_counts():
    entry = front([[1.0, -1.0, 0.0, 2.0]], [[-1.0, -2.0, 3.0, 0.5]])
    assert objective_values(entry, ["a", "b"], "accuracy").tolist() == [[0.625, 0.5]]  # a tie counts ½
    assert objective_values(entry, ["a", "b"], "margin").tolist() == [[0.5, 0.125]]
    weights = np.array([[2.0, 0, 0, 0, 0, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1, 1]])  # a/x items first, then b/y
    # resample 0: a/x item 0 twice (right); resample 1: a/x items 1-3 (wrong, tie, right): (0 + ½ + 1)/3
    assert objective_values(entry, ["a", "b"], "accuracy", weights)[:, 0].tolist() == [[1.0, 0.5], [0.5, 0.5]]
    with pytest.raises(ValueError, match="objective 'kindness' is not one of this scorer's"):
        objective_values(entry, ["a", "b"], "kindness")


def test_identical_fronts_tie_with_a_zero_interval_and_a_dominating_front_wins():
    rng = np.random.default_rng(0)
    base_a, base_b = rng.normal(0, 1, (3, 60)), rng.normal(0, 1, (3, 60))
    baseline = front(base_a, base_b)
    better = front(np.abs(base_a) + 0.1, np.abs(base_b) + 0.1)  # every pair right at every λ: accuracy 1
    fronts = bootstrap_fronts([baseline, front(base_a, base_b), better], ["a", "b"], GRID, "accuracy", resamples=400)
    assert fronts["reference"] == [0.0, 0.0] and fronts["bootstrap"]["clusters"] == 120
    same = differences(fronts, 1, 0)["hypervolume"]
    assert same == {"difference": 0.0, "interval": [0.0, 0.0], "verdict": "tie"}
    win = differences(fronts, 2, 0)["hypervolume"]
    assert fronts["fronts"][2]["metrics"]["hypervolume"] == pytest.approx(1.0) and win["verdict"] == "win"
    assert win["interval"][0] > 0 and differences(fronts, 0, 2)["hypervolume"]["verdict"] == "loss"
    hv = [hypervolume(np.asarray(f["objectives"]), np.zeros(2)) for f in fronts["fronts"]]
    assert [f["metrics"]["hypervolume"] for f in fronts["fronts"]] == pytest.approx(hv)


def test_resamples_that_draw_none_of_a_sets_items_are_counted_and_left_out():
    """With 2 prompts in a/x and 30 in b/y, a resample draws neither a/x prompt with probability (30/32)^32 ≈ 0.13:
    its objectives are NaN and it is left out of every interval; the count was nowhere (an independent review)."""
    rng = np.random.default_rng(2)
    scorer = front(rng.normal(0, 1, (3, 2)), rng.normal(0, 1, (3, 30)))
    fronts = bootstrap_fronts([scorer, scorer], ["a", "b"], GRID, "accuracy", resamples=400, seed=5)
    weights = resample_weights([f"a{i}" for i in range(2)] + [f"b{i}" for i in range(30)], 400, seed=5)
    expected = int((weights[:, :2].sum(axis=1) == 0).sum())
    assert 20 < expected < 90 and fronts["bootstrap"]["undefined_resamples"] == expected
    full = bootstrap_fronts([scorer], ["a", "b"], GRID, "accuracy", resamples=400, seed=5)["bootstrap"]
    assert full["undefined_resamples"] == expected  # one front or two: the same resamples


def test_resamples_are_paired_so_a_constant_shift_has_a_narrow_difference():
    """Two fronts that differ by one pair's verdict at one point: unpaired intervals would be wide; paired, exact."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, (3, 200)), rng.normal(0, 1, (3, 200))
    shifted = a.copy()
    shifted[:, np.flatnonzero(a[0] < 0)[0]] = 5.0  # one more right pair in dimension a at every point
    fronts = bootstrap_fronts([front(a, b), front(shifted, b)], ["a", "b"], GRID, "accuracy", resamples=500)
    width = np.diff(fronts["fronts"][0]["metric_intervals"]["hypervolume"])[0]
    low, high = differences(fronts, 1, 0)["hypervolume"]["interval"]
    assert 0 <= low <= high and high - low < width / 5


def test_the_hypervolume_interval_covers_the_true_value_about_95_percent_of_the_time():
    """Simulated: three grid points, per-point true accuracies known, 150 pairs per dimension in 50 prompts of 3.

    Each prompt has a latent difficulty shared by its pairs and by every grid point, as real held-out prompts do;
    the true hypervolume is that of the true accuracies. 120 replications of a 95 % interval (400 resamples each).
    """
    true = np.array([[0.75, 0.40], [0.62, 0.58], [0.45, 0.72]])  # (points, dimensions)
    rng = np.random.default_rng(7)
    items = {"a/x": [f"a{i // 3}" for i in range(150)], "b/y": [f"b{i // 3}" for i in range(150)]}
    truth = hypervolume(true, np.zeros(2))
    covered = 0
    for _ in range(120):
        margins = []
        for dimension in range(2):
            difficulty = np.repeat(rng.normal(0, 0.8, 50), 3)  # (150,): pairs of one prompt move together
            noise = rng.normal(0, 1, 150)
            # P(margin > 0) at point j: Φ((μ_j − d − ε)/…) — choose μ_j so that the marginal accuracy is true[j]
            scale = np.sqrt(0.8**2 + 1)
            mu = np.array([scale * _probit(p) for p in true[:, dimension]])
            margins.append(mu[:, None] + difficulty[None, :] + noise[None, :])
        fronts = bootstrap_fronts([front(*margins, items=items)], ["a", "b"], GRID, "accuracy", resamples=400, seed=1)
        low, high = fronts["fronts"][0]["metric_intervals"]["hypervolume"]
        covered += low <= truth <= high
    assert 0.88 <= covered / 120 <= 0.995


def test_statistic_intervals_hold_each_pooled_mean():
    entry = front([[1.0, -1.0, 0.0, 2.0]], [[-1.0, -2.0, 3.0, 0.5]])
    spec = {"both": {"sets": ["a/x", "b/y"], "column": "margin", "transform": "identity", "description": "all"}}
    (result,) = statistic_intervals(entry, spec, resamples=300).values()
    assert (
        result["values"] == [pytest.approx(0.3125)] and result["intervals"][0][0] <= 0.3125 <= result["intervals"][0][1]
    )
    # the interval is the percentile interval of the pooled mean over prompt resamples, item by item (a zero-width or
    # unbounded interval held the mean too): the 8 items (a/x's, then b/y's) are 8 prompts here
    values = np.array([1.0, -1.0, 0.0, 2.0, -1.0, -2.0, 3.0, 0.5])
    weights = resample_weights([f"a{i}" for i in range(4)] + [f"b{i}" for i in range(4)], resamples=300)
    means = np.array([sum(w * v for w, v in zip(row, values, strict=True)) / row.sum() for row in weights])
    assert result["intervals"][0] == pytest.approx(percentile_interval(means), abs=1e-12)
    assert result["intervals"][0][1] - result["intervals"][0][0] > 0.5


def _probit(p: float) -> float:
    """Φ⁻¹(p) by bisection (no scipy)."""
    from math import erf, sqrt

    low, high = -8.0, 8.0
    for _ in range(80):
        middle = (low + high) / 2
        low, high = (middle, high) if 0.5 * (1 + erf(middle / sqrt(2))) < p else (low, middle)
    return (low + high) / 2


@pytest.mark.parametrize("m", [2, 3])
def test_metric_samples_equal_front_metrics_on_every_resample(m):
    """The bootstrap computes the λ-dependent metrics for all resamples at once: each must equal front_metrics'
    value on that resample alone, ties, constant columns and dominated points included; a NaN resample stays NaN."""
    rng = np.random.default_rng(3)
    grid = rng.dirichlet(np.ones(m), size=7)
    grid[:, 0] = np.round(grid[:, 0], 1)  # ties in λ_1
    samples = rng.random((40, 7, m))
    samples[:10] = np.round(samples[:10], 1)  # ties in the scores
    samples[10, :, 0] = 0.5  # a constant column: ρ undefined
    samples[11, 3] = np.nan
    reference = np.full(m, -0.1)
    drawn = metric_samples(grid, samples, reference)
    for b in range(len(samples)):
        if b == 11:
            assert all(np.isnan(drawn[name][b]).all() for name in drawn)
            continue
        expected = front_metrics(grid, samples[b], reference)
        for name, _ in METRICS:
            assert drawn[name][b] == pytest.approx(expected[name], abs=1e-12), (name, b)
        np.testing.assert_allclose(drawn["monotonicity"][b], expected["monotonicity"], atol=1e-12, equal_nan=True)
    assert np.isnan(drawn["monotonicity"][10, 0]) and not np.isnan(drawn["monotonicity"][10, 1])
