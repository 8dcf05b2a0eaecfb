import math

import numpy as np
import pytest
import torch

from panacea.preferences import is_vertex, preference_as_json, sample_preferences, simplex_grid, validate_preference


@pytest.mark.parametrize("preference", [[0.25, 0.75], (0.25, 0.75), np.array([0.25, 0.75]), torch.tensor([0.25, 0.75])])
def test_validate_accepts_list_tuple_numpy_tensor(preference):
    result = validate_preference(preference, 2)
    assert isinstance(result, torch.Tensor) and result.is_floating_point()
    assert result.tolist() == [0.25, 0.75]


def test_validate_accepts_batch_and_integer_one_hot():
    assert validate_preference([[1, 0], [0.5, 0.5]], 2).shape == (2, 2)
    assert validate_preference([0, 1, 0], 3).dtype == torch.float32


@pytest.mark.parametrize(
    ("preference", "message"),
    [
        ([0.2, 0.3, 0.5], r"shape \(2,\) or \(batch, 2\).*got shape \(3,\)"),
        ([], r"got shape \(0,\)"),
        ([[[0.5, 0.5]]], r"got shape \(1, 1, 2\)"),
        ([-0.5, 1.5], "non-negative"),
        ([float("nan"), 1.0], "NaN or infinite"),
        ([float("inf"), 0.0], "NaN or infinite"),
        ([0.5, 0.6], r"sum to 1 .*got sum 1.1 for \[0.5, 0.6\]"),
        ([[0.5, 0.5], [0.2, 0.2]], r"sum to 1 .*0.4"),
        ("0.5,0.5", r"list, tuple, numpy array or tensor of 2 numbers; could not read '0.5,0.5'"),
        ([True, False], "real numbers"),
    ],
)
def test_validate_rejects_bad_preferences_with_a_clear_message(preference, message):
    with pytest.raises(ValueError, match=message):
        validate_preference(preference, 2)


def test_validate_tolerates_float_round_off_but_not_more():
    validate_preference([1 / 3, 1 / 3, 1 / 3], 3)
    validate_preference([0.5 + 5e-7, 0.5], 2)
    with pytest.raises(ValueError, match="sum to 1"):
        validate_preference([0.5 + 5e-6, 0.5], 2)


def test_simplex_grid_sizes_and_points():
    grid2 = simplex_grid(2, 11)
    assert grid2.shape == (11, 2)
    assert torch.allclose(grid2[:, 0], torch.linspace(1, 0, 11))
    grid3 = simplex_grid(3, 11)
    assert grid3.shape == (66, 3)
    assert len({tuple(row) for row in grid3.mul(10).round().int().tolist()}) == 66  # all distinct
    assert torch.allclose(grid3.sum(1), torch.ones(66), atol=1e-6)
    assert simplex_grid(4, 5).shape == (math.comb(4 + 3, 3), 4)
    for grid in (grid2, grid3):
        validate_preference(grid, grid.shape[1])  # every row lies on the simplex


def test_simplex_grid_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_points"):
        simplex_grid(2, 1)
    with pytest.raises(ValueError, match="num_preferences"):
        simplex_grid(0)


def test_sample_preferences_on_the_simplex_and_reproducible():
    draws = sample_preferences(3, 2000, rng=0)
    assert draws.shape == (2000, 3)
    validate_preference(draws, 3)
    assert torch.equal(draws, sample_preferences(3, 2000, rng=0))
    assert sample_preferences(3, rng=1).shape == (3,)
    # Uniform on the 2-simplex (Dirichlet(1, 1, 1)): each coordinate has mean 1/3 and variance 1/18.
    assert torch.allclose(draws.mean(0), torch.full((3,), 1 / 3), atol=0.02)
    assert torch.allclose(draws.var(0), torch.full((3,), 1 / 18), atol=0.005)


def test_sample_preferences_concentration_controls_spread():
    peaked = sample_preferences(2, 2000, concentration=50.0, rng=0)
    spread = sample_preferences(2, 2000, concentration=0.2, rng=0)
    assert peaked[:, 0].std() < 0.1 < spread[:, 0].std()
    with pytest.raises(ValueError, match="concentration"):
        sample_preferences(2, concentration=0.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_preferences_are_judged_at_their_own_precision(dtype):
    for values in ([0.3, 0.7], [0.1, 0.2, 0.7]):
        raw = torch.tensor(values, dtype=dtype)
        result = validate_preference(raw / raw.sum(), len(values))
        assert result.dtype == torch.float32
    with pytest.raises(ValueError, match="sum to 1"):
        validate_preference(torch.tensor([0.5, 0.6], dtype=dtype), 2)


def test_validate_returns_a_copy_the_caller_cannot_edit():
    preference = torch.tensor([0.5, 0.5])
    result = validate_preference(preference, 2)
    preference.copy_(torch.tensor([5.0, -7.0]))
    assert result.tolist() == [0.5, 0.5]


NAMES = ["helpful", "harmless", "concise"]


def test_a_mapping_by_name_is_the_vector_in_name_order():
    named = validate_preference({"concise": 0.5, "helpful": 0.2, "harmless": 0.3}, 3, names=NAMES)
    assert torch.equal(named, validate_preference([0.2, 0.3, 0.5], 3))
    rows = [
        {"helpful": 1, "harmless": 0, "concise": 0},
        {"helpful": np.float64(0.5), "harmless": torch.tensor(0.5), "concise": 0.0},
    ]
    assert validate_preference(rows, 3, names=NAMES).tolist() == [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]
    assert torch.equal(validate_preference([0.2, 0.3, 0.5], 3, names=NAMES), named)  # vectors still work


@pytest.mark.parametrize(
    ("preference", "message"),
    [
        (
            {"helpful": 0.5, "harmles": 0.5, "concise": 0.0},
            r"unknown name\(s\) \['harmles'\] and missing name\(s\) \['harmless'\]; the preference names are "
            r"\['helpful', 'harmless', 'concise'\] \(in order\)",
        ),
        ({"helpful": 1.0}, r"missing name\(s\) \['harmless', 'concise'\]"),
        ({"helpful": 0.5, "harmless": 0.5, "concise": 0.0, "brief": 0.0}, r"unknown name\(s\) \['brief'\]"),
        ({"helpful": [0.5, 0.5], "harmless": 0.5, "concise": 0.0}, "'helpful' must be one number, got \\[0.5, 0.5\\]"),
        ({"helpful": "0.5", "harmless": 0.5, "concise": 0.0}, "'helpful' must be one number"),
        ({"helpful": True, "harmless": False, "concise": False}, "'helpful' must be one number"),
        ([{"helpful": 1.0, "harmless": 0.0, "concise": 0.0}, [1.0, 0.0, 0.0]], "all mappings .* or all vectors"),
        ({"helpful": 0.5, "harmless": 0.6, "concise": 0.0}, "sum to 1"),
        ({"helpful": -0.5, "harmless": 1.5, "concise": 0.0}, "non-negative"),
        ({"helpful": float("nan"), "harmless": 1.0, "concise": 0.0}, "NaN"),
    ],
)
def test_bad_named_preferences_say_what_is_wrong(preference, message):
    with pytest.raises(ValueError, match=message):
        validate_preference(preference, 3, names=NAMES)


def test_a_mapping_without_names_asks_for_a_vector():
    with pytest.raises(ValueError, match="has no preference names .*pass a vector of 2 weights"):
        validate_preference({"helpful": 0.5, "harmless": 0.5}, 2)
    with pytest.raises(ValueError, match="has no preference names"):
        validate_preference([{"helpful": 0.5, "harmless": 0.5}], 2)


def test_preference_as_json_names_the_weights_in_their_shortest_form():
    preference = validate_preference([0.8, 0.2], 2)  # float32: 0.800000011920929 as a Python float
    assert preference_as_json(preference, ["helpful", "harmless"]) == {"helpful": 0.8, "harmless": 0.2}
    assert preference_as_json(preference, None) == [0.8, 0.2]
    assert preference_as_json(validate_preference(torch.tensor([0.1, 0.9], dtype=torch.float64), 2), None) == [0.1, 0.9]


def test_is_vertex_takes_one_hot_weights_only():
    assert is_vertex([1.0, 0.0]) and is_vertex((0.0, 1.0, 0.0)) and is_vertex([1.0])
    assert not is_vertex([0.5, 0.5]) and not is_vertex([0.0, 0.0]) and not is_vertex([1.0, 1.0])
    assert [is_vertex(row.tolist()) for row in simplex_grid(2, 6)] == [True, False, False, False, False, True]
