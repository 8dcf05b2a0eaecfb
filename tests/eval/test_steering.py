"""The range ratio R_i on hand-made scores, and the single-objective runs that supply its yardstick."""

from __future__ import annotations

import math

import pytest
import torch
from panacea.eval.scorers import load_pair_sets
from panacea.eval.steering import (
    range_ratios,
    single_objective_config,
    single_objective_scores,
    vertex_index,
    vertex_scores,
)
from panacea.training import TrainConfig
from panacea.training import trainer as trainer_module

from panacea._config import dataclass_from_dict
from panacea.preferences import simplex_grid
from tests.conftest import tiny_tokenizer
from tests.helpers import config_dict, make_workspace


def scores(accuracy: float, margin: float) -> dict[str, float]:
    return {"accuracy": accuracy, "margin": margin, "pairs": 4}


def test_range_ratio_for_two_dimensions_is_the_issue_formula():
    grid = simplex_grid(2, 3)  # (1, 0), (0.5, 0.5), (0, 1)
    results = [
        {"a/x": scores(0.75, 0.4), "b/y": scores(0.50, -0.1)},
        {"a/x": scores(0.50, 0.0), "b/y": scores(0.50, 0.0)},
        {"a/x": scores(0.25, -0.2), "b/y": scores(1.00, 0.3)},
    ]
    single = {
        "a": {"a/x": scores(1.0, 0.8), "b/y": scores(0.25, -0.3)},
        "b": {"a/x": scores(0.0, -0.4), "b/y": scores(0.75, 0.5)},
    }
    ratios = range_ratios(grid, results, ["a", "b"], single)
    # a/x: (0.75 − 0.25) / (1 − 0) and (0.4 + 0.2) / (0.8 + 0.4); b/y: (1 − 0.5) / (0.75 − 0.25) and 0.4 / 0.8
    assert ratios["a/x"] == pytest.approx({"accuracy": 0.5, "margin": 0.5})
    assert ratios["b/y"] == pytest.approx({"accuracy": 1.0, "margin": 0.5})


def test_range_ratio_for_three_dimensions_averages_the_other_vertices():
    grid = simplex_grid(3, 2)  # the three vertices only
    values = {(1, 0, 0): 0.9, (0, 1, 0): 0.3, (0, 0, 1): 0.1}
    results = [{"a/x": scores(values[tuple(int(w) for w in row)], 0.0)} for row in grid.tolist()]
    single = {"a": {"a/x": scores(0.8, 1.0)}, "b": {"a/x": scores(0.5, 0.0)}, "c": {"a/x": scores(0.1, 0.0)}}
    ratio = range_ratios(grid, results, ["a", "b", "c"], single)["a/x"]
    assert ratio["accuracy"] == pytest.approx((0.9 - 0.2) / (0.8 - 0.3))
    assert math.isnan(
        range_ratios(grid, results, ["a", "b", "c"], {**single, "a": {"a/x": scores(0.3, 0.0)}})["a/x"]["margin"]
    )  # single models that tie give no yardstick: NaN, not a division error


def test_range_ratio_needs_every_single_objective_model_and_a_vertex():
    grid = simplex_grid(2, 3)
    results = [{"a/x": scores(0.5, 0.0)}] * 3
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        range_ratios(grid, results, ["a", "b"], {"a": {"a/x": scores(0.5, 0.0)}})
    with pytest.raises(ValueError, match="no vertex"):
        vertex_index(torch.tensor([[0.5, 0.5]]), 0)
    assert [vertex_index(grid, index) for index in (0, 1)] == [0, 2]


def test_vertex_scores_are_each_dimensions_vertex_of_an_evaluation_document():
    grid = [[0.5, 0.5], [0.0, 1.0], [1.0, 0.0]]  # vertices neither first nor in dimension order
    points = [{"sets": {"a/a": {"accuracy": float(index), "margin": -float(index)}}} for index in range(3)]
    document = {"grid": grid, "scorers": {"pairs": {"points": points}}}
    assert vertex_scores(document, ["a", "b"]) == {"a": points[2]["sets"], "b": points[1]["sets"]}
    with pytest.raises(ValueError, match="no vertex e_1"):
        vertex_scores({"grid": [[1.0, 0.0], [0.5, 0.5]], "scorers": document["scorers"]}, ["a", "b"])


def test_single_objective_config_fixes_lambda_at_the_vertex_and_keeps_the_budget(tmp_path):
    workspace = make_workspace(tmp_path)
    config = dataclass_from_dict(TrainConfig, config_dict(workspace, tmp_path / "run"), where="test")
    single = single_objective_config(config, "b")
    assert single.output_dir == str(tmp_path / "run" / "single-objective" / "b")
    assert (single.preference_sampling, single.fixed_preference, single.trained_dimensions) == (
        "fixed",
        [0.0, 1.0],
        [False, True],
    )
    assert (single.max_steps, single.batch_size, single.learning_rate) == (
        config.max_steps,
        config.batch_size,
        config.learning_rate,
    )
    assert single_objective_config(config, "a", root=tmp_path / "y").output_dir == str(tmp_path / "y" / "a")
    with pytest.raises(ValueError, match="no dimension 'c'"):
        single_objective_config(config, "c")


def test_single_objective_models_train_and_score_at_their_vertex(tmp_path, monkeypatch):
    workspace = make_workspace(tmp_path)
    data = config_dict(workspace, tmp_path / "run", max_steps=4, save_steps=4)
    for dimension in data["dimensions"]:
        dimension["eval"] = [{"path": dimension["train"][0]["path"], "max_pairs": 3}]
    config = dataclass_from_dict(TrainConfig, data, where="test")
    pair_sets = load_pair_sets(config, tiny_tokenizer())
    single = single_objective_scores(config, pair_sets, pad_token_id=0)
    assert set(single) == {"a", "b"} and all(set(scores) == {"a/a", "b/b"} for scores in single.values())
    # trained on its own pairs (which are also the held-out ones here), each model wins on its own set
    assert single["a"]["a/a"]["margin"] > single["b"]["a/a"]["margin"]
    assert single["b"]["b/b"]["margin"] > single["a"]["b/b"]["margin"]
    # finished runs are reused, not retrained: a step taken now fails the test (CPU training is deterministic, so
    # equal scores alone would not tell a retraining apart)
    monkeypatch.setattr(trainer_module, "_accumulate", _no_step)
    again = single_objective_scores(config, pair_sets, pad_token_id=0)
    assert again == single


def _no_step(*args, **kwargs):
    raise AssertionError("a finished single-objective run was trained again")
