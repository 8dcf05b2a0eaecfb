"""spearman (monotonicity in λ; docs/algorithms.md, "Front metrics") against hand-computed values."""

import math

import numpy as np
import pytest
from panacea.eval.metrics import spearman


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
