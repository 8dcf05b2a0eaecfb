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
from panacea.training.scalarisation import GradientAggregation

from tests.helpers import adapter_weights, losses, make_config, max_difference, train_interrupted_then_resumed

METHODS = sorted(AGGREGATORS)
CONFIGS = Path(__file__).parents[2] / "configs"


def aggregated(workspace, run, method, **overrides):
    return make_config(workspace, run, aggregator=method, preference_sampling="per_step", **overrides)


def plc_vetoes(gram: torch.Tensor, preference: torch.Tensor, tau: float) -> bool:
    """Whether PLC's veto set V is not empty (docs/algorithms.md, written out again here), M (m, m), λ (m,)."""
    gains = [float(row @ preference.double()) for row in gram.double()]  # a_i = g_i · d0, d0 = Σ_j λ_j g_j
    weights = preference.double().tolist()
    for i, gain in enumerate(gains):
        degradation = weights[i] * max(0.0, -gain)
        surplus = sum(weights[j] * max(0.0, gains[j]) for j in range(len(gains)) if j != i)
        if degradation > 0 and surplus < tau * degradation:
            return True
    return False


@pytest.mark.parametrize("method", METHODS)
def test_every_aggregator_lowers_every_dimension_loss(workspace, tmp_path, monkeypatch, method):
    """... and logs, every step, the coefficient each dimension's gradient got (and PLC its running veto rate)."""
    calls, original = [], GradientAggregation.coefficients

    def record(self, losses, preferences, gram=None):
        coefficients, loss = original(self, losses, preferences, gram)
        calls.append((gram.clone(), preferences.clone(), coefficients.clone()))
        return coefficients, loss

    monkeypatch.setattr(GradientAggregation, "coefficients", record)
    run = tmp_path / "run"
    train(aggregated(workspace, run, method, max_steps=30, save_steps=30))
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(log) == len(calls) == 30
    for i, name in enumerate(("a", "b")):
        first, last = log[0][f"loss/{name}"], sum(row[f"loss/{name}"] for row in log[-5:]) / 5
        assert first == pytest.approx(math.log(2), abs=1e-4)
        assert last < first - 0.02, (method, name, first, last)
        assert [row[f"coefficient/{name}"] for row in log] == [float(c[:, i].sum()) for _, _, c in calls]
    if method == "plc":  # no veto at the default τ = 2 in this run (test_plcs_veto_rate_is_the_share_... has one)
        assert all(row["aggregator/veto_rate"] == 0 for row in log)
        assert not any(plc_vetoes(gram[0], preferences[0], tau=2.0) for gram, preferences, _ in calls)
    if method == "pcgrad":  # after step k: the share of the calls so far whose Gram matrix has a conflict
        conflicted = [bool((gram[0] < 0).any()) for gram, _, _ in calls]  # two dimensions: one off-diagonal entry
        expected = [sum(conflicted[: k + 1]) / (k + 1) for k in range(len(calls))]
        assert [row["aggregator/conflict_rate"] for row in log] == pytest.approx(expected)


def test_plcs_veto_rate_is_the_share_of_steps_with_a_veto(workspace, tmp_path, monkeypatch):
    """`aggregator/veto_rate` after step k is (steps 1..k whose λ and Gram matrix give PLC a veto) / k.

    τ = ∞ vetoes every degradation; in this run that happens at one step of twelve (at τ = 2, never).
    """
    tau = math.inf
    calls, original = [], GradientAggregation.coefficients

    def record(self, losses, preferences, gram=None):
        calls.append((gram.clone(), preferences.clone()))
        return original(self, losses, preferences, gram)

    monkeypatch.setattr(GradientAggregation, "coefficients", record)
    run = tmp_path / "run"
    train(aggregated(workspace, run, "plc", aggregator_kwargs={"tau": tau}, max_steps=12, save_steps=12))
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    vetoes = [plc_vetoes(gram[0], preferences[0], tau) for gram, preferences in calls]
    assert 0 < sum(vetoes) < len(vetoes) == len(log) == 12, vetoes  # neither never nor always
    rates = [row["aggregator/veto_rate"] for row in log]
    assert rates == pytest.approx([sum(vetoes[:k]) / k for k in range(1, 13)], abs=1e-12)


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

    def spy(self, coefficients, *args, **kwargs):  # max_norm, and the regulariser where the trainer passes one
        seen["units"] = self.flat[:-1].clone()
        seen["coefficients"] = coefficients.clone()
        norm = original(self, coefficients, *args, **kwargs)
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


def first_update(workspace, run, monkeypatch, aggregator, *, forward, weights):
    """Step 0's unit gradients (units, P) and update (P,), the model forwarded at λ `forward`, the rule given `weights`.

    In training the two are one λ: it reaches the update through the adapter (the gradients g_i) and through the
    rule (the coefficients). Apart here, so that the gradients can stay fixed while the rule's λ changes.
    """
    m, seen, original = len(forward), {}, trainer_module.GradientBuffers.combine

    def draw(config, step):  # every pair of every dimension forwarded at `forward`; the rule reads `groups`
        rows = torch.tensor([forward]).expand(m * config.batch_size, m).reshape(m, config.batch_size, m)
        return trainer_module.StepPreferences(groups=torch.tensor([weights]), per_sample=rows)

    def spy(self, coefficients, *args, **kwargs):  # max_norm, and the regulariser where the trainer passes one
        norm = original(self, coefficients, *args, **kwargs)
        seen["units"], seen["update"] = self.flat[:-1].clone(), self.flat[-1].clone()
        return norm

    monkeypatch.setattr(trainer_module, "draw_preferences", draw)
    monkeypatch.setattr(trainer_module.GradientBuffers, "combine", spy)
    train(aggregated(workspace, run, aggregator, max_steps=1, max_grad_norm=None))
    return seen["units"], seen["update"]


@pytest.mark.parametrize("method", METHODS)
def test_with_the_gradients_held_every_rule_but_mgda_follows_its_lambda(workspace, tmp_path, monkeypatch, method):
    """The same g_i, the rule given λ = (0.8, 0.2) or (0.2, 0.8): two updates, the first favouring dimension a.

    MGDA is λ-free by definition (docs/algorithms.md): its two updates are equal. Any other rule that gave equal
    updates would ignore the preference it is given (or the trainer would not pass it on).
    """
    held = (0.5, 0.5)
    units, toward_a = first_update(workspace, tmp_path / "a", monkeypatch, method, forward=held, weights=(0.8, 0.2))
    same, toward_b = first_update(workspace, tmp_path / "b", monkeypatch, method, forward=held, weights=(0.2, 0.8))
    torch.testing.assert_close(same, units, rtol=0, atol=0)  # only the rule's λ differs between the two steps
    if method == "mgda":
        torch.testing.assert_close(toward_b, toward_a, rtol=0, atol=0)
        return
    assert float((toward_a - toward_b).norm()) > 0.1 * float(toward_a.norm()), method
    # first-order gain of a over b along d: (g_a − g_b)·d; more weight on a buys a more of it (for LS by
    # t‖g_a − g_b‖² exactly, when t moves from b to a)
    lead = units[0] - units[1]
    assert float(lead @ toward_a) > float(lead @ toward_b), method


def test_linear_scalarisation_weights_each_dimensions_gradient_by_its_lambda(workspace, tmp_path, monkeypatch):
    """LS (aggregator 'none') puts λ_i inside dimension i's loss: its unit gradients are λ_i g_i, g_i the unweighted
    gradients an aggregator gets at the same λ, and its update is their sum (LS's d = Σ λ_i g_i)."""
    at = {"forward": (0.8, 0.2), "weights": (0.8, 0.2)}
    plain, _ = first_update(workspace, tmp_path / "mgda", monkeypatch, "mgda", **at)
    weighted, update = first_update(workspace, tmp_path / "ls", monkeypatch, "none", **at)
    tolerance = {"rtol": 1e-5, "atol": 1e-6 * float(plain.abs().max())}  # float32 backward of λ·ℓ against λ·∇ℓ
    torch.testing.assert_close(weighted, torch.tensor(at["weights"])[:, None] * plain, **tolerance)
    torch.testing.assert_close(update, weighted.sum(dim=0), **tolerance)


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
