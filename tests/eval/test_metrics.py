"""Front metrics (docs/algorithms.md, "Front metrics") against its test cases and hand-computed values."""

import itertools
import json
import math

import numpy as np
import pytest
from panacea.eval.metrics import (
    front_metrics,
    hypervolume,
    inner_product,
    nondominated,
    reference_point,
    spacing,
    sparsity,
    spearman,
)

# docs/algorithms.md, "Front metrics": the front F of the sparsity and spacing cases, and the λ grid that
# produced it in the inner-product case.
FRONT = [[0, 1], [0.2, 0.7], [0.6, 0.5], [1, 0]]
GRID = [[0, 1], [0.5, 0.5], [0.75, 0.25], [1, 0]]


def test_spearman_without_ties_is_one_minus_six_sum_d_squared():
    # Ranks (1, 2, 3, 4) and (1, 3, 2, 4): Σd² = 2, ρ = 1 − 6·2 / (4·15) = 0.8.
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8, abs=1e-12)


def test_spearman_with_ties_uses_average_ranks():
    # y ranks (1, 2, 3.5, 5, 3.5): Σ dx·dy = 8, Σ dx² = 10, Σ dy² = 9.5 → ρ = 8 / √95.
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95), abs=1e-12)


def test_spearman_with_ties_in_both_inputs():
    # x ranks (1.5, 1.5, 3, 4), y ranks (1, 2.5, 2.5, 4): Σ dx·dy = 3.75, Σ dx² = Σ dy² = 4.5 → 3.75 / 4.5.
    assert spearman([0.0, 0.0, 0.5, 1.0], [1, 2, 2, 3]) == pytest.approx(3.75 / 4.5, abs=1e-12)


def test_spearman_of_a_monotone_nonlinear_relation_is_one():
    grid = np.linspace(0, 1, 11)
    assert spearman(grid, grid**3) == pytest.approx(1.0, abs=1e-12)


def test_spearman_of_a_decreasing_relation_is_minus_one():
    grid = np.linspace(0, 1, 11)
    assert spearman(grid, np.exp(-grid)) == pytest.approx(-1.0, abs=1e-12)


def test_spearman_does_not_depend_on_input_order():
    x, y = [0.1, 0.4, 0.2, 0.9, 0.5], [3, 1, 2, 5, 4]
    permutation = [4, 2, 0, 3, 1]
    shuffled = spearman([x[i] for i in permutation], [y[i] for i in permutation])
    assert shuffled == pytest.approx(spearman(x, y), abs=1e-12)


def test_spearman_is_symmetric():
    x, y = [1, 2, 3, 4, 5], [5, 6, 7, 8, 7]
    assert spearman(y, x) == pytest.approx(spearman(x, y), abs=1e-12)


@pytest.mark.parametrize("x, y", [([1, 1, 1], [1, 2, 3]), ([1, 2, 3], [4, 4, 4])], ids=["x", "y"])
def test_spearman_of_a_constant_input_is_nan(x, y):
    assert math.isnan(spearman(x, y))


@pytest.mark.parametrize(
    "x, y",
    [([1, 2, 3], [1, 2]), ([[1, 2], [3, 4]], [[1, 2], [3, 4]]), ([1], [2]), ([], [])],
    ids=["lengths-differ", "two-d", "one-point", "empty"],
)
def test_spearman_refuses_bad_shapes(x, y):
    with pytest.raises(ValueError, match="spearman needs two 1-D sequences of equal length >= 2"):
        spearman(x, y)


# --- hypervolume ---


@pytest.mark.parametrize(
    "points, reference, expected",
    [
        ([[5, 5], [4, 6], [2, 7], [7, 4]], [0, 0], 39),
        ([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [0.4, 0.4]], [0, 0], 0.33),
        ([[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 1, 1]], [0, 0, 0], 13),
        ([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.4, 0.4, 0.2]], [0, 0, 0], 0.046),
    ],
    ids=["2d-39", "2d-0.33", "3d-13", "3d-0.046"],
)
def test_hypervolume_matches_the_algorithms_cases(points, reference, expected):
    # docs/algorithms.md, "Front metrics", Tests (maximising, r = 0).
    assert hypervolume(points, reference) == pytest.approx(expected, abs=1e-12)


def test_hypervolume_of_a_minimised_front_negates_points_and_reference():
    # docs/algorithms.md: the same 2-D front minimised with r = (10, 10) → 38; maximise −f above −r.
    points = -np.array([[5, 5], [4, 6], [2, 7], [7, 4]], dtype=float)
    assert hypervolume(points, [-10, -10]) == pytest.approx(38, abs=1e-12)


def test_dominated_and_repeated_points_do_not_change_the_hypervolume():
    # The 39 case of docs/algorithms.md plus (4, 4) and (1, 6) (dominated) and (5, 5) (repeated).
    points = [[5, 5], [4, 6], [2, 7], [7, 4], [4, 4], [1, 6], [5, 5]]
    assert hypervolume(points, [0, 0]) == pytest.approx(39, abs=1e-12)


def test_hypervolume_of_one_point_is_the_product_of_its_gains():
    # Gains over r = (1, 1, 1): 2 · 4 · 1 = 8.
    assert hypervolume([[3, 5, 2]], [1, 1, 1]) == pytest.approx(8, abs=1e-12)


def test_points_not_above_the_reference_contribute_nothing():
    # (−1, 8) lies below r₁ and (3, 0) on r₂: only (5, 5) bounds volume, 5 · 5 = 25.
    assert hypervolume([[5, 5], [-1, 8], [3, 0]], [0, 0]) == pytest.approx(25, abs=1e-12)
    assert hypervolume([[-1, 8], [3, 0]], [0, 0]) == 0.0


@pytest.mark.parametrize("m", [3, 4])
def test_hypervolume_matches_a_count_of_unit_cells(m):
    # Integer points over r = 0: the volume is the number of unit cells [c, c + 1] whose upper corner
    # c + 1 some point weakly dominates (exact, and independent of moocore).
    points = np.random.default_rng(m).integers(1, 6, size=(8, m))
    cells = np.array(list(itertools.product(range(6), repeat=m)))  # (6^m, m) lower corners
    covered = ((points[None, :, :] >= cells[:, None, :] + 1).all(axis=2)).any(axis=1)
    assert hypervolume(points, np.zeros(m)) == pytest.approx(covered.sum(), abs=1e-9)


# --- the non-dominated set, sparsity and spacing ---


def test_nondominated_drops_dominated_points_and_keeps_a_repeat_once():
    # (0, 1) is dominated by (0, 2); (1, 1) appears twice.
    kept = nondominated([[1, 1], [1, 1], [0, 2], [0, 1]])
    np.testing.assert_array_equal(kept, [[1, 1], [0, 2]])


def test_sparsity_and_spacing_match_the_algorithms_case():
    # docs/algorithms.md, "Front metrics": F → sparsity 0.246667 (= 0.74 / 3), spacing 0.189297
    # (d = (0.5, 0.5, 0.6, 0.9), sample standard deviation √(0.1075 / 3)).
    assert sparsity(FRONT) == pytest.approx(0.74 / 3, abs=1e-12)
    assert sparsity(FRONT) == pytest.approx(0.246667, abs=1e-6)
    assert spacing(FRONT) == pytest.approx(math.sqrt(0.1075 / 3), abs=1e-12)
    assert spacing(FRONT) == pytest.approx(0.189297, abs=1e-6)


def test_sparsity_and_spacing_ignore_dominated_points():
    # Both are taken on the non-dominated set: (0.1, 0.1) and a repeat of (0, 1) change nothing.
    padded = [*FRONT, [0.1, 0.1], [0, 1]]
    assert sparsity(padded) == pytest.approx(0.74 / 3, abs=1e-12)
    assert spacing(padded) == pytest.approx(math.sqrt(0.1075 / 3), abs=1e-12)


def test_sparsity_and_spacing_of_one_point_are_zero():
    # Fewer than two non-dominated points: no gap and no distance (docs/algorithms.md: 0 if n < 2).
    assert sparsity([[3, 5, 2]]) == 0.0
    assert spacing([[3, 5, 2]]) == 0.0
    assert sparsity([[1, 1], [0, 0]]) == 0.0  # (0, 0) is dominated


# --- inner product and the full report ---


def test_inner_product_matches_the_algorithms_case():
    # docs/algorithms.md: (1·1 + 0.45 + 0.575 + 1·1) / 4 = 0.75625; GRID row i produced FRONT row i.
    assert inner_product(GRID, FRONT) == pytest.approx(0.75625, abs=1e-12)


def test_front_metrics_reports_every_metric_with_its_reference():
    reference = reference_point([FRONT])
    report = front_metrics(GRID, FRONT, reference)
    # Sweep by hand over r = (−0.01, −0.01) (1 % of each range 1 below the minimum 0):
    # 1.01·0.01 + 0.61·0.5 + 0.21·0.2 + 0.01·0.3 = 0.3601.
    assert report["hypervolume"] == pytest.approx(0.3601, abs=1e-12)
    assert report["inner_product"] == pytest.approx(0.75625, abs=1e-12)
    assert report["sparsity"] == pytest.approx(0.246667, abs=1e-6)
    assert report["spacing"] == pytest.approx(0.189297, abs=1e-6)
    # Both scores rise with their own weight over GRID: ρ = 1 per dimension.
    assert report["monotonicity"] == pytest.approx([1.0, 1.0], abs=1e-12)
    assert report["num_points"] == 4 and report["num_nondominated"] == 4
    assert report["reference"] == pytest.approx([-0.01, -0.01], abs=1e-15)
    assert json.loads(json.dumps(report)) == report


def test_front_metrics_of_one_point_has_undefined_monotonicity():
    # One point orders nothing: ρ is NaN (as spearman of a constant input), sparsity and spacing are 0.
    report = front_metrics([[0.5, 0.5]], [[2, 3]], [0, 0])
    assert report["hypervolume"] == pytest.approx(6, abs=1e-12)
    assert all(math.isnan(rho) for rho in report["monotonicity"])
    assert report["sparsity"] == 0.0 and report["spacing"] == 0.0


# --- the reference point ---


def test_reference_point_is_one_point_for_all_fronts_strictly_below_them():
    # Over both fronts: minima (0, −1), ranges (4, 4) → r = (0 − 0.04, −1 − 0.04).
    first, second = np.array([[0, 1], [2, 3]]), np.array([[1, -1], [4, 2]])
    reference = reference_point([first, second])
    np.testing.assert_allclose(reference, [-0.04, -1.04], atol=1e-15)
    np.testing.assert_array_equal(reference_point([second, first]), reference)
    assert (np.concatenate([first, second]) > reference).all()
    assert hypervolume(first, reference) > 0 and hypervolume(second, reference) > 0


def test_reference_point_steps_below_an_objective_that_does_not_vary():
    # Objective 1 ties at 1 and at −200: step margin · max(1, |min|) → 0.99 and −202; objective 2 as usual.
    np.testing.assert_allclose(reference_point([[[1, 2], [1, 3]]]), [0.99, 1.99], atol=1e-12)
    np.testing.assert_allclose(reference_point([[[-200, 2]], [[-200, 3]]]), [-202, 1.99], atol=1e-12)
    assert hypervolume([[1, 2], [1, 3]], reference_point([[[1, 2], [1, 3]]])) > 0


def test_reference_point_stays_strictly_below_at_large_magnitudes():
    # A range of 64 at 1e17 (float spacing 16) gives a step of 0.64, which rounds back onto 1e17;
    # r must still lie strictly below the points.
    points = np.array([[1e17, 0.0], [1e17 + 64, 1.0]])
    assert 1e17 - 0.01 * 64 == 1e17
    assert (points > reference_point([points])).all()


# --- bad input ---


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: hypervolume(np.empty((0, 2)), [0, 0]), "points is empty"),
        (lambda: hypervolume([1, 2], [0, 0]), "points must be a 2-D array"),
        (lambda: hypervolume(np.ones((2, 2, 2)), [0, 0]), "points must be a 2-D array"),
        (lambda: hypervolume([[1, 2], [3]], [0, 0]), "points must be numbers in an array"),
        (lambda: hypervolume([[1, np.nan]], [0, 0]), r"points holds NaN or inf in rows \[0\]"),
        (lambda: sparsity([[1, 2], [np.inf, 0]]), r"points holds NaN or inf in rows \[1\]"),
        (lambda: hypervolume([[1, 2]], [0, 0, 0]), r"reference must have one value per objective, shape \(2,\)"),
        (lambda: hypervolume([[1, 2]], [0, np.nan]), "reference holds NaN or inf"),
        (lambda: front_metrics(GRID, FRONT, [0, 0, 0]), "reference must have one value per objective"),
        (lambda: inner_product(GRID, FRONT[:3]), "3 points for 4 preferences"),
        (lambda: inner_product([[1, 0, 0]], [[1, 2]]), "points have 2 objectives but preferences have 3 weights"),
        (lambda: inner_product([[np.nan, 1]], [[1, 2]]), "preferences holds NaN or inf"),
        (lambda: front_metrics(GRID[:2], FRONT, [0, 0]), "4 points for 2 preferences"),
        (lambda: reference_point([[[1, 2]], [[1, 2, 3]]]), r"same number of objectives, got \[2, 3\]"),
        (lambda: reference_point([[[1, 2]], np.empty((0, 2))]), r"fronts\[1\] is empty"),
        (lambda: reference_point([[1, 2], [3, 4]]), r"fronts\[0\] must be a 2-D array"),
        (lambda: reference_point([]), "needs at least one front"),
        (lambda: reference_point([FRONT], margin=0), "margin must be a number > 0"),
    ],
    ids=[
        "empty",
        "one-d",
        "three-d",
        "ragged",
        "nan-points",
        "inf-points",
        "reference-length",
        "nan-reference",
        "front-metrics-reference",
        "count-mismatch",
        "objective-mismatch",
        "nan-preferences",
        "front-metrics-count",
        "fronts-objectives",
        "empty-front",
        "single-front-not-in-a-list",
        "no-fronts",
        "zero-margin",
    ],
)
def test_bad_input_raises_one_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
