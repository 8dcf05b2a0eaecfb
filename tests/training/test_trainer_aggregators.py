"""Gradient aggregators inside the trainer (tiny random Llama): they learn, resume exactly, bad configs fail early."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from panacea.training import TrainConfig, train
from panacea.training import trainer as trainer_module
from panacea.training.aggregators import AGGREGATORS

from tests.helpers import adapter_weights, losses, make_config, max_difference, train_interrupted_then_resumed

METHODS = sorted(AGGREGATORS)
CONFIGS = Path(__file__).parents[2] / "configs"


def aggregated(workspace, run, method, **overrides):
    return make_config(workspace, run, aggregator=method, preference_sampling="per_step", **overrides)


@pytest.mark.parametrize("method", METHODS)
def test_every_aggregator_lowers_every_dimension_loss(workspace, tmp_path, method):
    run = tmp_path / "run"
    train(aggregated(workspace, run, method, max_steps=30, save_steps=30))
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    for name in ("a", "b"):
        first, last = log[0][f"loss/{name}"], sum(row[f"loss/{name}"] for row in log[-5:]) / 5
        assert first == pytest.approx(math.log(2), abs=1e-4)
        assert last < first - 0.02, (method, name, first, last)
        assert all(f"coefficient/{name}" in row for row in log)
    if method == "plc":
        assert all(0 <= row["aggregator/veto_rate"] <= 1 for row in log)


@pytest.mark.parametrize("method", ["pcgrad", "plc", "cagrad"])
def test_resume_with_an_aggregator_ends_with_the_same_adapter(workspace, tmp_path, monkeypatch, method):
    """PCGrad's random order and PLC's veto counts are aggregator state: they travel with the checkpoint."""
    groups = {"preference_sampling": "groups", "preference_groups": 2}
    straight = make_config(workspace, tmp_path / "straight", aggregator=method, **groups)
    train(straight)
    resumed = make_config(workspace, tmp_path / "resumed", aggregator=method, **groups)
    train_interrupted_then_resumed(resumed, monkeypatch, stop_at_step=4)
    assert max_difference(adapter_weights(tmp_path / "straight"), adapter_weights(tmp_path / "resumed")) <= 1e-6
    assert losses(tmp_path / "resumed") == pytest.approx(losses(tmp_path / "straight"), abs=1e-6)
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "step-6" / "trainer_state.json").read_text())
    assert "scalarizer" in state


def test_the_update_is_the_aggregators_combination_of_the_unit_gradients(workspace, tmp_path, monkeypatch):
    """One step with CAGrad: `.grad` equals Σ c_i g_i with c from the aggregator on the buffers' Gram matrix."""
    seen = {}
    original = trainer_module.GradientBuffers.combine

    def spy(self, coefficients, max_norm):
        seen["units"] = self.flat[:-1].clone()
        seen["coefficients"] = coefficients.clone()
        norm = original(self, coefficients, max_norm)
        seen["update"] = self.flat[-1].clone()
        return norm

    monkeypatch.setattr(trainer_module.GradientBuffers, "combine", spy)
    config = aggregated(workspace, tmp_path / "run", "cagrad", max_steps=1, max_grad_norm=None)
    train(config)
    units = seen["units"].double()
    preference = torch.as_tensor(trainer_module.draw_preferences(config, 0).groups[0], dtype=torch.float64)
    expected = AGGREGATORS["cagrad"]().coefficients(units @ units.T, preference, torch.full((2,), math.log(2)))
    torch.testing.assert_close(seen["coefficients"].double(), expected, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(seen["update"], (seen["coefficients"] @ seen["units"]), rtol=1e-5, atol=1e-7)


def test_accumulated_micro_batches_are_aggregated_once_per_step(workspace, tmp_path):
    """Each g_i is summed over micro-batches before the Gram matrix: micro-batches of 2 or 4, the same run."""
    for name, micro in (("whole", 4), ("accumulated", 2)):
        train(aggregated(workspace, tmp_path / name, "pcgrad", micro_batch_size=micro, max_steps=4, save_steps=4))
    assert losses(tmp_path / "accumulated") == pytest.approx(losses(tmp_path / "whole"), abs=1e-5)
    assert max_difference(adapter_weights(tmp_path / "whole"), adapter_weights(tmp_path / "accumulated")) <= 1e-5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"aggregator": "mgda", "scalarization": "tche", "preference_sampling": "per_step"}, "replaces the scalar"),
        ({"aggregator": "cagrad", "preference_sampling": "per_sample"}, "per-sample λ gives every pair its own"),
        ({"aggregator": "plc", "preference_sampling": "fixed", "fixed_preference": [1, 0]}, "zero-weight dimensions"),
        ({"aggregator": "cagrad", "aggregator_kwargs": {"c": 1.5}}, "aggregator: .*c"),
        ({"aggregator": "cagrad", "aggregator_kwargs": {"C": 0.5}}, "unknown key 'C'"),
        ({"aggregator": "plc", "aggregator_kwargs": {"tau": -1}}, "tau"),
        ({"aggregator": "clipped_cagrad", "aggregator_kwargs": {"kappa": 1.0}}, "the rule changed to RACO"),
        ({"aggregator": "nash"}, "nash"),
        ({"aggregator_kwargs": {"c": 0.5}}, "aggregator is 'none'"),
    ],
)
def test_a_bad_aggregator_config_is_one_clear_error_before_anything_loads(workspace, tmp_path, overrides, message):
    settings = {"preference_sampling": "per_step", **overrides}
    with pytest.raises(ValueError, match=message):
        make_config(workspace, tmp_path / "run", **settings)
    assert not (tmp_path / "run").exists()


def test_configs_select_an_aggregator_by_set(tmp_path):
    """hh-2d draws λ per pair (the steering study's best); an aggregator needs one λ per step and says so."""
    with pytest.raises(ValueError, match="use preference_sampling 'per_step' or 'groups'"):
        TrainConfig.from_yaml(CONFIGS / "hh-2d.yaml", ["aggregator=plc", f"output_dir={tmp_path}"])
    config = TrainConfig.from_yaml(
        CONFIGS / "hh-2d.yaml",
        [
            "aggregator=clipped_cagrad",
            "aggregator_kwargs.c=0.4",
            "preference_sampling=per_step",
            f"output_dir={tmp_path}",
        ],
    )
    assert (config.aggregator, config.aggregator_kwargs) == ("clipped_cagrad", {"c": 0.4})


def test_a_config_with_the_retired_kappa_says_the_rule_changed(tmp_path):
    """clipped_cagrad is RACO's own rule now (docs/aggregators.md); our earlier reading's kappa is refused by name."""
    overrides = ["aggregator=clipped_cagrad", "aggregator_kwargs.kappa=0.5", "preference_sampling=per_step"]
    with pytest.raises(ValueError, match="kappa for clipped_cagrad is no longer accepted: the rule changed to RACO"):
        TrainConfig.from_yaml(CONFIGS / "hh-2d.yaml", [*overrides, f"output_dir={tmp_path}"])
