"""RL in the trainer on a tiny random Llama: the step's logs, the update against a dense reference, one-hot LS against
single-objective RL, resume (also after SIGKILL), a NaN reward, start-up failures, two processes, Tchebycheff, PAMA
and soups."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator
from panacea.eval.reward_model import RewardModel
from panacea.training import TrainConfig, TrainingError, train
from panacea.training import rl_step as rl_step_module
from panacea.training import trainer as trainer_module
from panacea.training.logprobs import collate_pairs
from panacea.training.rl import ppo_clipped_loss, response_token_log_probs
from panacea.training.scalarisation import LinearScalarization, Tchebycheff
from panacea.training.update import GradientBuffers, write_update
from safetensors.torch import load_file, save_file

from panacea._config import dump_yaml, load_config
from panacea.data import TokenizedPair
from tests.conftest import panacea_llama
from tests.helpers import (
    adapter_weights,
    config_dict,
    kill_when_checkpointed,
    losses,
    make_config,
    max_difference,
    save_tiny_classifier,
    train_in_one_and_in_two_processes,
    train_interrupted_then_resumed,
)

RL_KEYS = (
    "reward/a",
    "reward/b",
    "reward_normalised/a",
    "reward_normalised/b",
    "kl",
    "response_length",
    "rollout_tokens_per_second",
    "scoring_seconds",
    "update_tokens_per_second",
    "loss/a",
    "loss/b",
    "grad_norm",
)


@pytest.fixture(scope="module")
def classifier(workspace):
    """A tiny random sequence classifier saved in the workspace: dimension b's reward (varies with the text)."""
    path = workspace / "classifier"
    return path if path.is_dir() else save_tiny_classifier(path)


def rl_dict(workspace, output_dir, classifier, **overrides) -> dict:
    """RL on the workspace's prompts: a by length in words, b by the tiny classifier; 2 prompts × K = 4 a step."""
    rl = {
        "prompts": [{"path": str(workspace / "a.jsonl")}, {"path": str(workspace / "b.jsonl")}],
        "prompts_per_step": 2,
        "rollouts_per_prompt": 4,
        "max_new_tokens": 8,
        **overrides.pop("rl", {}),
    }
    dimensions = [
        {"name": "a", "objective": "rl", "reward": {"type": "length"}},
        {"name": "b", "objective": "rl", "reward": {"type": "classifier", "name_or_path": str(classifier)}},
    ]
    return config_dict(workspace, output_dir, dimensions=dimensions, rl=rl, **{"micro_batch_size": 4, **overrides})


def rl_config(workspace, output_dir, classifier, **overrides):
    data = rl_dict(workspace, output_dir, classifier, **overrides)
    return make_config(workspace, output_dir, **{key: value for key, value in data.items() if key != "output_dir"})


def log(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------------
# One step


def test_an_rl_run_logs_rewards_kl_and_costs_per_step_and_its_kl_is_zero_at_step_0(workspace, tmp_path, classifier):
    """The LoRA-style init has B = 0, so the policy is the reference (adapter disabled) at step 0: KL exactly 0. Once
    the adapter has moved, the rollouts' KL is not 0 (the reference is the base model, not the policy)."""
    run = tmp_path / "run"
    result = train(rl_config(workspace, run, classifier, max_steps=3, save_steps=3))
    rows = log(run)
    assert len(rows) == 3 and all(key in row for row in rows for key in RL_KEYS)
    assert rows[0]["kl"] == 0.0
    assert rows[1]["kl"] != 0.0 and rows[2]["kl"] != 0.0
    assert rows[0]["reward/a"] < 0 and rows[0]["reward/a"] != rows[0]["reward/b"]
    assert all(0 < row["response_length"] <= 8 for row in rows)
    state = result.state
    assert (state.step, state.prompts_seen, state.rollouts_seen, state.pairs_seen) == (3, 6, 24, {})
    assert state.reward_moments["count"] == 24  # every rollout's rewards entered the running moments
    saved = json.loads((run / "checkpoints" / "step-3" / "trainer_state.json").read_text())
    assert saved["reward_moments"] == state.reward_moments
    data = json.loads((run / "data.json").read_text())["data"]  # what it trained on: its prompts, by content
    assert data["RL prompts"]["count"] > 0 and len(data["RL prompts"]["sha256"]) == 64


def test_an_rl_run_records_its_prompts_and_reward_fit_pairs_not_the_pairs_it_does_not_read():
    """configs/hh-2d-rl.yaml: each dimension's `train` file only serves `panacea eval`'s judge; the reward models are
    fitted on 400 + 100 pairs each at start-up, and RL reads its prompts: those are what data.json records."""
    root = Path(__file__).resolve().parents[2]
    config = load_config(TrainConfig, root / "configs" / "hh-2d-rl.yaml")
    data = trainer_module.training_data(config)["data"]
    assert sorted(data) == [
        "RL prompts",
        "harmless: reward model test pairs",
        "harmless: reward model train pairs",
        "helpful: reward model test pairs",
        "helpful: reward model train pairs",
    ]
    assert [data[f"{name}: reward model {part} pairs"]["count"] for name in ("helpful", "harmless")
            for part in ("train", "test")] == [400, 100, 400, 100]  # fmt: skip


def test_resume_refuses_a_reward_classifier_rewritten_in_place(workspace, tmp_path):
    """A reward loaded from a local folder is part of what the run trains on: data.json records its files by content,
    so --resume refuses a classifier retrained under the same path (and still resumes a record without the entry,
    as an older panacea wrote it)."""
    classifier = save_tiny_classifier(tmp_path / "classifier")
    run = tmp_path / "run"
    config = rl_config(workspace, run, classifier, max_steps=1, save_steps=1)
    train(config)
    record = json.loads((run / "data.json").read_text())
    files = record["data"]["b: reward model files"]
    assert files["count"] == sum(path.is_file() for path in classifier.rglob("*"))
    assert "a: reward model files" not in record["data"]  # a rule reads no folder
    del record["data"]["b: reward model files"]
    (run / "data.json").write_text(json.dumps(record))
    assert train(config, resume=True).state.step == 1
    record["data"]["b: reward model files"] = files
    (run / "data.json").write_text(json.dumps(record))
    weights = load_file(classifier / "model.safetensors")
    save_file({name: tensor + 1 for name, tensor in weights.items()}, classifier / "model.safetensors")
    with pytest.raises(ValueError, match=r"contents changed: b: reward model files: (\d+) items, sha256 \w+ then, \1"):
        train(config, resume=True)


def test_a_saved_reward_model_is_recorded_by_its_files_and_a_missing_one_is_refused(workspace, tmp_path, classifier):
    """A `reward_model` given by path is recorded by its two files; a path that is no folder is named before any run."""
    saved = tmp_path / "head"
    RewardModel("b", torch.ones(4), torch.zeros(()), torch.zeros(4), torch.ones(4)).save(saved)
    data = rl_dict(workspace, tmp_path / "run", classifier)
    data["dimensions"][1]["reward"] = {"type": "reward_model", "path": str(saved)}
    config = make_config(workspace, tmp_path / "run", **{k: v for k, v in data.items() if k != "output_dir"})
    entry = trainer_module.training_data(config)["data"]["b: reward model files"]
    assert entry["count"] == 2
    (saved / "reward_model.json").write_text((saved / "reward_model.json").read_text() + " ")
    assert trainer_module.training_data(config)["data"]["b: reward model files"]["sha256"] != entry["sha256"]
    config.dimensions[1].reward = {"type": "reward_model", "path": str(tmp_path / "missing")}
    with pytest.raises(ValueError, match="ProjectRewardModel.path .*missing.* is not a folder"):
        trainer_module.training_data(config)


TEMPERATURE, MAX_TOKENS, EPSILON = 0.7, 6, 0.2


def fixed_rollouts(workspace, tmp_path, classifier, micro_batch_size=2, **rl):
    """Two λ-groups of one prompt × K = 2 with fixed responses, per-row λ, advantages and a π_old shifted by ±0.4 per
    token (so the clip acts on some tokens): (config, model, rollouts, the micro-batches' row slices)."""
    config = rl_config(
        workspace,
        tmp_path / "unused",
        classifier,
        preference_sampling="groups",
        preference_groups=2,
        micro_batch_size=micro_batch_size,
        rl={"prompts_per_step": 2, "rollouts_per_prompt": 2, "max_new_tokens": MAX_TOKENS, "temperature": TEMPERATURE,
            **rl},
    )  # fmt: skip
    model = panacea_llama(svd_rank=2)
    generator = torch.Generator().manual_seed(5)
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    responses = [[20, 21, 22, 2], [23, 24], [25, 26, 27, 28, 29, 2], [30, 2]]
    pairs = [TokenizedPair(str(r), prompts[r], responses[r], []) for r in range(4)]
    slices = [slice(start, start + micro_batch_size) for start in range(0, 4, micro_batch_size)]
    batches = [collate_pairs(pairs[rows], 0, with_rejected=False) for rows in slices]
    preferences = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.3, 0.7]])
    advantages = torch.tensor([[1.0, -0.5], [-1.0, 0.5], [2.0, 1.5], [-2.0, -1.5]])
    with torch.no_grad():
        old = [
            response_token_log_probs(model, batch, TEMPERATURE, preference=preferences[rows])
            + 0.4 * torch.randn(batch.response_mask[:, 1:].shape, generator=generator) * batch.response_mask[:, 1:]
            for batch, rows in zip(batches, slices, strict=True)
        ]
    groups = torch.tensor([[0.6, 0.4], [0.25, 0.75]])
    rollouts = rl_step_module.Rollouts(batches, old, preferences, groups, advantages, -advantages[::2], 0, 4)
    return config, model, rollouts, slices


def dense_log_probs(model, rollouts, slices) -> list[torch.Tensor]:
    """Each micro-batch's response-token log-probs from a full log-softmax at the temperature, 0 off the response."""
    logprobs = []
    for batch, rows in zip(rollouts.batches, slices, strict=True):
        logits = model(batch.input_ids, attention_mask=batch.attention_mask, preference=rollouts.preferences[rows])
        logps = torch.log_softmax(logits.logits[:, :-1].float() / TEMPERATURE, -1)
        logprobs.append(torch.gather(logps, 2, batch.input_ids[:, 1:, None])[..., 0] * batch.response_mask[:, 1:])
    return logprobs


def rl_update(config, model, rollouts, scalarizer, coefficients_from=None):
    """`_rl_accumulate` and the combine: (the update vector, metrics, coefficients)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    buffers = GradientBuffers(parameters, units=4)
    metrics, unit_losses = rl_step_module._rl_accumulate(
        config, model, rollouts, scalarizer, buffers, Accelerator(cpu=True)
    )
    coefficients, _ = scalarizer.coefficients(
        unit_losses if coefficients_from is None else coefficients_from, rollouts.groups
    )
    buffers.combine(coefficients.flatten(), max_norm=None)
    return buffers.flat[-1].clone(), metrics, coefficients


def test_the_rl_update_equals_a_dense_reference_under_ls_and_tchebycheff(workspace, tmp_path, classifier):
    """`_rl_accumulate` + the combine against per-token loops on full logits: per-sample λ weights under LS, the
    1/(group rows) factor, two λ-groups, the temperature, PPO's clip on both sides, the sum over tokens / T;
    and under Tchebycheff the m separate unit gradients weighted by the coefficients."""
    config, model, rollouts, slices = fixed_rollouts(workspace, tmp_path, classifier)
    parameters = [p for p in model.parameters() if p.requires_grad]
    preferences, advantages = rollouts.preferences, rollouts.advantages

    def dense_losses():  # (4, 2): ℓ_i(b) from a full log-softmax and the ppo loss row by row
        rows = []
        for logps, old, batch_rows, batch in zip(
            dense_log_probs(model, rollouts, slices), rollouts.old_logprobs, slices, rollouts.batches, strict=True
        ):
            for row in range(len(logps)):
                mask = batch.response_mask[row : row + 1, 1:]
                advantage = advantages[batch_rows][row][None]
                rows.append(
                    ppo_clipped_loss(
                        logps[row : row + 1], old[row : row + 1], advantage, mask, EPSILON, "sum", MAX_TOKENS
                    )[0]
                )
        return torch.stack(rows)

    for scalarizer in (LinearScalarization(), Tchebycheff(["running_min", "running_min"])):
        levels = None if scalarizer.name == "ls" else rollouts.levels
        update, metrics, coefficients = rl_update(config, model, rollouts, scalarizer, levels)
        dense = dense_losses()
        if scalarizer.name == "ls":  # (1/G) Σ_g Σ_i (1/2) Σ_{b ∈ g} λ_{b,i} ℓ_i(b)
            objective = (preferences * dense).sum() / 2 / 2
        else:  # Σ_{g,i} c_{g,i} L_{g,i}, L_{g,i} = mean of group g's ℓ_i
            objective = (coefficients * dense.view(2, 2, 2).mean(1)).sum()
            assert (coefficients > 0).sum() >= 2 and (coefficients == 0).any()  # an arg max per group
        expected = torch.cat([g.flatten() for g in torch.autograd.grad(objective, parameters)])
        assert float(expected.abs().max()) > 1e-4
        torch.testing.assert_close(update, expected, rtol=1e-4, atol=1e-7)
        assert metrics["loss/a"] == pytest.approx(float(dense[:, 0].mean().detach()), abs=1e-6)


@pytest.mark.parametrize("granularity", ["token", "batch"])
@pytest.mark.parametrize("combiner", ["pama", "pama_lambda"])
def test_the_pama_update_equals_a_dense_reference_with_s_star_per_token_or_per_lambda_group(
    workspace, tmp_path, classifier, combiner, granularity
):
    """PAMA in `_rl_accumulate` against per-token loops (docs/algorithms.md §8): Noon's max(A, 0), I(·) dropping
    tokens whose ratio π_θ/π_old exceeds 1 + ε, λ-scaling under 'pama_lambda', Theorem 1 per token or once per
    λ-group of the whole batch (its masked means), then one PPO-clip loss on s*, summed over tokens / T, the
    1/(group rows) factor, groups averaged. Micro-batches of one row: a group's s* spans two of them."""
    rl = {"advantage_combiner": combiner, "pama_granularity": granularity}
    config, model, rollouts, slices = fixed_rollouts(workspace, tmp_path, classifier, micro_batch_size=1, **rl)
    parameters = [p for p in model.parameters() if p.requires_grad]
    update, metrics, _ = rl_update(config, model, rollouts, LinearScalarization())
    logps = dense_log_probs(model, rollouts, slices)  # one row each
    terms, objective = [], 0.0
    for logp, old, rows, batch in zip(logps, rollouts.old_logprobs, slices, rollouts.batches, strict=True):
        mask = batch.response_mask[:, 1:]
        ratio = torch.exp((logp - old) * mask)
        advantage = rollouts.advantages[rows].clamp(min=0)[:, None, :].expand(-1, logp.shape[1], -1)  # Noon
        indicated = torch.where((ratio.detach() <= 1 + EPSILON)[..., None], advantage, torch.zeros_like(advantage))
        if combiner == "pama_lambda":
            indicated = indicated * rollouts.preferences[rows][:, None, :]
        terms.append((ratio, indicated, mask))
    for group in range(2):
        members = terms[2 * group : 2 * group + 2]
        if granularity == "batch":  # the masked means over the group's tokens, both micro-batches
            means = sum((i * m[..., None]).sum((0, 1)) for _, i, m in members) / sum(m.sum() for _, _, m in members)
            star = float(means.min().clamp(min=0) + means.max().clamp(max=0))
        for ratio, indicated, mask in members:
            if granularity == "token":
                s = indicated.min(-1).values.clamp(min=0) + indicated.max(-1).values.clamp(max=0)
            else:
                s = torch.full_like(ratio, star)
            s = s * mask
            term = torch.minimum(ratio * s, ratio.clamp(1 - EPSILON, 1 + EPSILON) * s)
            objective = objective - (term * mask).sum() / MAX_TOKENS / 2 / 2  # 1/(group rows), 1/G
    expected = torch.cat([g.flatten() for g in torch.autograd.grad(objective, parameters)])
    assert float(expected.abs().max()) > 1e-4
    torch.testing.assert_close(update, expected, rtol=1e-4, atol=1e-7)
    assert metrics["loss/pama"] == pytest.approx(float(objective.detach()) * 2 * 2 / 4, abs=1e-6)


def test_tchebycheff_on_rl_takes_its_arg_max_on_the_reward_levels_not_the_surrogate(workspace, tmp_path, classifier):
    config = rl_config(
        workspace,
        tmp_path / "unused",
        classifier,
        scalarization="tche",
        preference_sampling="per_step",
        max_grad_norm=None,
    )
    model = panacea_llama(svd_rank=2)
    parameters = [p for p in model.parameters() if p.requires_grad]
    buffers = GradientBuffers(parameters, units=2)
    buffers.flat[0].fill_(1.0)
    buffers.flat[1].fill_(-1.0)
    scalarizer = Tchebycheff(["running_min", "running_min"])
    scalarizer.running_min = [-1.0, -1.0]  # ẑ = −1 − ε in both dimensions
    groups = torch.tensor([[0.5, 0.5]])
    surrogates = torch.tensor([[5.0, 0.0]])  # would pick a
    levels = torch.tensor([[-0.5, 0.5]])  # −R̄: b's normalised reward is the lower, so b is picked
    metrics = write_update(config, 0, model, scalarizer, buffers, surrogates, groups, levels)
    assert metrics["coefficient/a"] == 0 and metrics["coefficient/b"] == 0.5
    assert torch.equal(buffers.flat[-1], torch.full_like(buffers.flat[-1], -0.5))  # 0.5 × g_b
    assert metrics["loss"] == pytest.approx(0.5 * (0.5 + 1 + 1e-3))


# ------------------------------------------------------------------------------------------------------
# π_old from the update's own forward (one epoch, as TRL's RLOO)


def count_forwards(monkeypatch) -> dict[str, int]:
    """Count the trainer's log-prob forwards without gradient (π_old, π_ref passes) and with it (the update's)."""
    counts, original = {"no_grad": 0, "grad": 0}, rl_step_module.response_token_log_probs

    def counted(*args, **kwargs):
        counts["grad" if torch.is_grad_enabled() else "no_grad"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(rl_step_module, "response_token_log_probs", counted)
    return counts


@pytest.mark.parametrize(
    "overrides",
    [
        {"preference_sampling": "per_sample"},
        {"scalarization": "tche", "preference_sampling": "groups", "preference_groups": 2},
        {"rl": {"advantage_combiner": "pama_lambda", "pama_granularity": "batch"}},
    ],
    ids=["ls-per_sample", "tche-groups", "pama_lambda"],
)
def test_one_epoch_takes_pi_old_from_the_update_forward_and_equals_the_separate_pass(
    workspace, tmp_path, classifier, monkeypatch, overrides
):
    """One epoch, no dropout, micro-batches of two whole prompts (K = 2, 4 rows): π_old is the update forward's own
    log-probs, and each micro-batch forms its KL-penalised RLOO advantages. Forcing the separate π_old pass gives
    the same adapter after 2 steps and the same logs (KL, rewards, losses, Tchebycheff's coefficients), under LS,
    Tchebycheff and PAMA."""
    rl = {"prompts_per_step": 4, "rollouts_per_prompt": 2, "kl_coef": 0.5, **overrides.get("rl", {})}
    overrides = {key: value for key, value in overrides.items() if key != "rl"}
    fused_counts = count_forwards(monkeypatch)
    train(rl_config(workspace, tmp_path / "fused", classifier, max_steps=2, rl=rl, **overrides))
    assert fused_counts == {"no_grad": 2 * 2, "grad": 2 * 2}  # per step and micro-batch: π_ref, then the update
    monkeypatch.setattr(rl_step_module, "_old_logprobs_from_update", lambda config, model: False)
    separate_counts = count_forwards(monkeypatch)
    train(rl_config(workspace, tmp_path / "separate", classifier, max_steps=2, rl=rl, **overrides))
    assert separate_counts == {"no_grad": 2 * 2 * 2, "grad": 2 * 2}  # π_old and π_ref, then the update
    assert max_difference(adapter_weights(tmp_path / "fused"), adapter_weights(tmp_path / "separate")) <= 1e-6
    fused, separate = log(tmp_path / "fused"), log(tmp_path / "separate")
    assert fused[1]["kl"] != 0.0  # the penalty acts in step 1
    for key in fused[0]:
        if "seconds" not in key and "per_second" not in key:
            assert [row[key] for row in fused] == pytest.approx([row[key] for row in separate], abs=1e-6), key
    assert fused[0].keys() == separate[0].keys()


@pytest.mark.parametrize(
    ("overrides", "epochs", "batches"),
    [
        ({"adapter": {"svd_rank": 2, "init": "lora", "dropout": 0.1}}, 1, 2),
        ({"rl": {"ppo_epochs": 2}}, 2, 2),
        ({"micro_batch_size": 2}, 1, 4),  # K = 4: a prompt's rows span two micro-batches
    ],
    ids=["adapter-dropout", "two-epochs", "prompt-split"],
)
def test_dropout_two_epochs_or_a_split_prompt_keep_the_separate_pi_old_pass(
    workspace, tmp_path, classifier, monkeypatch, overrides, epochs, batches
):
    counts = count_forwards(monkeypatch)
    train(rl_config(workspace, tmp_path / "run", classifier, max_steps=1, **overrides))
    assert counts == {"no_grad": 2 * batches, "grad": epochs * batches}


def test_attention_dropout_in_the_model_config_keeps_the_separate_pi_old_pass(workspace, tmp_path, classifier):
    """Llama applies attention dropout functionally in train mode, so no dropout module shows it."""
    config = rl_config(workspace, tmp_path / "unused", classifier)
    assert rl_step_module._old_logprobs_from_update(config, panacea_llama(svd_rank=2))
    with_dropout = panacea_llama(svd_rank=2, base_overrides={"attention_dropout": 0.1})
    assert not rl_step_module._old_logprobs_from_update(config, with_dropout)


# ------------------------------------------------------------------------------------------------------
# Against single-objective RL, resume, failures


def test_ls_on_a_one_hot_preference_equals_single_objective_rl(workspace, tmp_path, classifier):
    """A rewarded-soups member (plain LoRA, λ fixed at e_a, b's reward in the config) ends with the adapter of RL on
    dimension a alone. Ranks match: k + m·r = 2 + 2·1 with two dimensions and 3 + 1·1 with one. Adam's ε = 1 and no
    clipping make the update proportional to the gradient, so a wrong weight on a's loss (not λ_a = 1) shows."""
    optimiser = dict(max_steps=3, save_steps=3, adam_epsilon=1.0, max_grad_norm=None)
    two = rl_config(
        workspace,
        tmp_path / "two",
        classifier,
        method="lora",
        preference_sampling="fixed",
        fixed_preference=[1.0, 0.0],
        adapter={"svd_rank": 2, "preference_rank": 1, "init": "lora"},
        **optimiser,
    )
    one_dict = rl_dict(workspace, tmp_path / "one", classifier, **optimiser)
    one_dict.update(
        dimensions=one_dict["dimensions"][:1],
        method="lora",
        preference_sampling="fixed",
        fixed_preference=[1.0],
        adapter={"svd_rank": 3, "preference_rank": 1, "init": "lora"},
    )
    one = make_config(workspace, tmp_path / "one", **{k: v for k, v in one_dict.items() if k != "output_dir"})
    train(two)
    train(one)
    assert max_difference(adapter_weights(tmp_path / "two"), adapter_weights(tmp_path / "one")) <= 1e-6
    assert float(max(t.abs().max() for k, t in adapter_weights(tmp_path / "one").items() if "lora_B" in k)) > 0
    assert [row["reward/a"] for row in log(tmp_path / "two")] == [row["reward/a"] for row in log(tmp_path / "one")]
    assert not any("reward/b" in row for row in log(tmp_path / "two"))  # weight 0: neither scored nor trained


@pytest.mark.parametrize(
    "overrides",
    [
        {"preference_sampling": "per_sample"},
        {
            "scalarization": "tche",
            "preference_sampling": "groups",
            "preference_groups": 2,
            "rl": {"ppo_epochs": 2, "token_aggregation": "mean", "kl_estimator": "k3"},
            "adapter": {"svd_rank": 2, "init": "lora", "dropout": 0.1},
        },
    ],
    ids=["ls-per_sample", "tche-groups-2epochs-dropout"],
)
def test_an_interrupted_rl_run_resumes_to_the_same_adapter(workspace, tmp_path, classifier, monkeypatch, overrides):
    """Rollouts are seeded by (seed, step, row), and the running reward moments, Tchebycheff's ideal point and the
    schedule (max_steps × ppo_epochs updates) come back from the checkpoint."""
    epochs = overrides.get("rl", {}).get("ppo_epochs", 1)
    train(rl_config(workspace, tmp_path / "straight", classifier, **json.loads(json.dumps(overrides))))
    config = rl_config(workspace, tmp_path / "resumed", classifier, **json.loads(json.dumps(overrides)))
    train_interrupted_then_resumed(config, monkeypatch, stop_at_step=4 * epochs + 1)  # in step 5, after step-4
    assert max_difference(adapter_weights(tmp_path / "straight"), adapter_weights(tmp_path / "resumed")) <= 1e-6
    assert losses(tmp_path / "resumed") == pytest.approx(losses(tmp_path / "straight"), abs=1e-6)
    straight, resumed = log(tmp_path / "straight"), log(tmp_path / "resumed")
    assert [row["reward/b"] for row in resumed] == [row["reward/b"] for row in straight]
    assert resumed[-1]["lr"] == straight[-1]["lr"]


def test_sigkill_mid_rl_training_then_resume_gives_the_same_adapter(workspace, tmp_path, classifier):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for run in (straight, killed):
        dump_yaml(rl_dict(workspace, run, classifier, max_steps=8), tmp_path / f"{run.name}.yaml")
    command = [sys.executable, "-m", "panacea.cli", "train"]
    subprocess.run([*command, str(tmp_path / "straight.yaml")], check=True, capture_output=True)
    kill_when_checkpointed([*command, str(tmp_path / "killed.yaml")], killed / "checkpoints" / "step-4")
    subprocess.run([*command, str(tmp_path / "killed.yaml"), "--resume"], check=True, capture_output=True)
    assert max_difference(adapter_weights(straight), adapter_weights(killed)) <= 1e-6


def test_a_nan_reward_stops_the_run_naming_step_and_dimension(workspace, tmp_path, classifier, monkeypatch):
    (tmp_path / "flaky_reward.py").write_text(
        "calls = {'count': 0}\n"
        "def score(prompts, responses):\n"
        "    calls['count'] += 1\n"
        "    bad = calls['count'] == 3\n"
        "    return [float('nan') if bad and i == 5 else 1.0 + len(r) for i, r in enumerate(responses)]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = rl_dict(workspace, tmp_path / "run", classifier)
    data["dimensions"][1]["reward"] = {"type": "callable", "function": "flaky_reward:score"}
    config = make_config(workspace, tmp_path / "run", **{k: v for k, v in data.items() if k != "output_dir"})
    with pytest.raises(TrainingError, match=r"step 2: the 'b' reward \(callable\) is nan for 1 of 8 rollouts"):
        train(config)
    assert sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-2"]


def test_a_reward_that_does_not_load_fails_before_step_0_and_leaves_nothing(workspace, tmp_path, classifier):
    data = rl_dict(workspace, tmp_path / "run", classifier)
    data["dimensions"][1]["reward"] = {"type": "classifier", "name_or_path": str(tmp_path / "no-such-model")}
    config = make_config(workspace, tmp_path / "run", **{k: v for k, v in data.items() if k != "output_dir"})
    with pytest.raises(
        ValueError, match=r"dimensions.1.reward \(classifier\): .*does not load as a sequence classifier"
    ):
        train(config)
    assert not (tmp_path / "run").exists()


def test_a_run_saved_before_the_rl_section_existed_resumes(workspace, tmp_path):
    """TrainConfig.rl is a nested section: its default must compare as the dict a config.yaml holds."""
    run = tmp_path / "run"
    train(make_config(workspace, run, max_steps=2))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["rl"]  # as written by an older panacea
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert train(make_config(workspace, run, max_steps=2), resume=True).state.step == 2


# ------------------------------------------------------------------------------------------------------
# Several processes (data parallel: each process samples, scores and forwards whole prompts)

# Two CPU processes on this machine (gloo), as torchrun starts them. Not `accelerate launch --num_processes 2 --cpu`:
# accelerate (1.16) starts more than one CPU process only through mpirun, and otherwise runs one process alone.
LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"preference_sampling": "per_sample"},
        {
            "scalarization": "tche",
            "preference_sampling": "groups",
            "preference_groups": 4,
            "micro_batch_size": 2,
            "rl": {"prompts_per_step": 4, "rollouts_per_prompt": 2, "ppo_epochs": 2},
        },
        {"preference_sampling": "per_sample", "rl": {"advantage_combiner": "pama_lambda", "pama_granularity": "batch"}},
    ],
    ids=["ls-per_sample", "tche-4groups-2epochs", "pama-batch"],
)
def test_two_processes_follow_the_one_process_rl_trajectory(workspace, tmp_path, classifier, overrides):
    """Two processes (gloo, CPU): each samples its rows with the rows' own generators, the raw rewards are gathered
    for the running moments and Tchebycheff's levels, and the buffers and sums are summed, so every logged number
    (rewards, KL, losses, Tchebycheff's coefficients) and the adapter are the one-process run's. LS: one prompt per
    process, π_old from the update's forward. Tchebycheff: four λ-groups of one prompt, two per process (so process
    1's micro-batches belong to groups 2 and 3), and two epochs after a separate π_old pass. PAMA 'batch': one s*
    from both processes' rows."""
    one, two = (
        rl_dict(workspace, tmp_path / name, classifier, max_steps=3, save_steps=3, **json.loads(json.dumps(overrides)))
        for name in ("one", "two")
    )
    train_in_one_and_in_two_processes(one, two, tmp_path)
    one, two = log(tmp_path / "one"), log(tmp_path / "two")
    assert len(two) == 3 and two[0].keys() == one[0].keys() and two[2]["kl"] != 0.0
    for key in one[0]:
        if "seconds" not in key and "per_second" not in key:
            assert [row[key] for row in two] == pytest.approx([row[key] for row in one], abs=1e-5), key
    assert max_difference(adapter_weights(tmp_path / "one"), adapter_weights(tmp_path / "two")) <= 1e-5
    saved = [
        json.loads((tmp_path / run / "checkpoints" / "step-3" / "trainer_state.json").read_text())["reward_moments"]
        for run in ("one", "two")
    ]
    assert saved[1]["count"] == saved[0]["count"] == 3 * 8  # every process's rows: the whole batch
    assert saved[1]["mean"] + saved[1]["m2"] == pytest.approx(saved[0]["mean"] + saved[0]["m2"], abs=1e-6)


@pytest.mark.parametrize(
    ("overrides", "share"),
    [
        ({"rl": {"prompts_per_step": 3}}, "3 / 2 prompts"),
        ({"micro_batch_size": 8}, "2 / 2 prompts = 1 × 4 rollouts = 4 rows"),
    ],
    ids=["prompts", "micro-batches"],
)
def test_an_rl_run_that_does_not_split_into_whole_prompts_and_micro_batches_per_process_is_refused(
    workspace, tmp_path, classifier, monkeypatch, overrides, share
):
    class TwoProcesses(trainer_module.Accelerator):
        num_processes = property(lambda self: 2)

    monkeypatch.setattr(trainer_module, "Accelerator", TwoProcesses)
    with pytest.raises(ValueError, match=r"across the 2 processes, whole prompts each") as error:
        train(rl_config(workspace, tmp_path / "run", classifier, **overrides))
    assert f"a process's share is {share}" in str(error.value)
    assert "Make rl.prompts_per_step a multiple of 2" in str(error.value)
    assert not (tmp_path / "run").exists()


def train_in_two_bare_processes(tmp_path, data: dict) -> list[tuple[int, str]]:
    """`panacea train` of `data` in two processes (gloo) in torchrun's environment but without a launcher, which
    would stop the other process once one fails; tmp_path on their PYTHONPATH. Each process's (exit code, stderr)."""
    dump_yaml(data, tmp_path / "run.yaml")
    with socket.socket() as probe:  # a free port for the processes' rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    command = [sys.executable, "-m", "panacea.cli", "train", str(tmp_path / "run.yaml")]
    processes = [
        subprocess.Popen(
            command,
            env={**environment, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    try:
        errors = [process.communicate(timeout=300)[1] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [(process.returncode, error) for process, error in zip(processes, errors, strict=True)]


def test_a_nan_reward_in_one_process_rows_stops_every_process_naming_it(workspace, tmp_path, classifier):
    """Two bare processes: a NaN among process 1's rows at step 2 stops both with the same error, since the check
    reads the gathered rewards. Had process 1 stopped alone, process 0 would have failed in its next collective
    (gloo's "Connection closed by peer"; checked by moving the check before the gather) or waited there."""
    (tmp_path / "flaky_reward.py").write_text(
        "import os\n"
        "calls = {'count': 0}\n"
        "def score(prompts, responses):\n"
        "    calls['count'] += 1\n"
        "    bad = calls['count'] == 3 and os.environ['RANK'] == '1'\n"
        "    return [float('nan') if bad and i == 1 else 1.0 + len(r) for i, r in enumerate(responses)]\n"
    )
    data = rl_dict(workspace, tmp_path / "run", classifier)
    data["dimensions"][1]["reward"] = {"type": "callable", "function": "flaky_reward:score"}
    expected = "step 2: the 'b' reward (callable) is nan for 1 of 8 rollouts"
    for code, error in train_in_two_bare_processes(tmp_path, data):
        assert code == 2 and expected in error, error[-2000:]
    assert sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-2"]


@pytest.mark.parametrize("fused", [True, False], ids=["pi-old-from-the-update", "separate-pi-old-pass"])
def test_a_non_finite_kl_in_one_process_rows_stops_every_process(workspace, tmp_path, classifier, fused):
    """Two bare processes: process 1's KL turns infinite at step 2 (in the update's micro-batches, or in the separate
    π_old pass with two epochs). Both stop, process 1 naming the KL and process 0 pointing to it, rather than
    process 0 waiting alone in the update's all-reduce."""
    (tmp_path / "flaky_kl.py").write_text(
        "import os\n"
        "import panacea.training.rl_step as step\n"
        "original, calls = step.kl_estimate, {'count': 0}\n"
        "def kl_estimate(*args, **kwargs):\n"
        "    calls['count'] += 1\n"
        "    bad = calls['count'] == 3 and os.environ['RANK'] == '1'\n"
        "    return original(*args, **kwargs) + (float('inf') if bad else 0.0)\n"
        "step.kl_estimate = kl_estimate\n"
        "def score(prompts, responses):\n"
        "    return [1.0 + len(r) for r in responses]\n"
    )  # one micro-batch per process and step: its third call is step 2's
    data = rl_dict(workspace, tmp_path / "run", classifier, rl={} if fused else {"ppo_epochs": 2})
    data["dimensions"][1]["reward"] = {"type": "callable", "function": "flaky_kl:score"}
    (zero, error_zero), (one, error_one) = train_in_two_bare_processes(tmp_path, data)
    assert one == 2 and "the KL to the reference is inf for 4 of 4 rollouts" in error_one, error_one[-2000:]
    assert zero == 2 and "another process's rollouts" in error_zero, error_zero[-2000:]
    assert sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-2"]


# ------------------------------------------------------------------------------------------------------
# PAMA, aggregators, rewarded soups


@pytest.mark.parametrize("combiner", ["pama", "pama_lambda"])
def test_pama_trains_with_one_combined_loss(workspace, tmp_path, classifier, combiner):
    run = tmp_path / "run"
    rl = {"advantage_combiner": combiner, "pama_granularity": "batch", "ppo_epochs": 2}
    train(rl_config(workspace, run, classifier, max_steps=2, rl=rl))
    rows = log(run)
    assert all("loss/pama" in row and "loss/a" not in row for row in rows)
    assert all(row["grad_norm"] > 0 for row in rows)  # Noon advantages ≥ 0 still move the policy


@pytest.mark.parametrize("combiner", ["pama", "pama_lambda"])
def test_pama_batch_granularity_takes_s_star_over_the_whole_batch_whatever_the_micro_batch_size(
    workspace, tmp_path, classifier, combiner
):
    """'batch' is one s* per λ-group of the step's whole rollout batch (the port's one s* per step), not per
    micro-batch: micro-batches of one prompt (K = 2) and one micro-batch of all 4 prompts give the same adapter,
    loss and s*."""
    rl = {"prompts_per_step": 4, "rollouts_per_prompt": 2, "advantage_combiner": combiner, "pama_granularity": "batch"}
    for micro in (2, 8):
        train(rl_config(workspace, tmp_path / f"micro{micro}", classifier, max_steps=2, rl=rl, micro_batch_size=micro))
    small, whole = log(tmp_path / "micro2"), log(tmp_path / "micro8")
    assert max_difference(adapter_weights(tmp_path / "micro2"), adapter_weights(tmp_path / "micro8")) <= 1e-5
    for key in ("loss/pama", "pama_s_star", "grad_norm"):
        assert [row[key] for row in small] == pytest.approx([row[key] for row in whole], rel=1e-5), key
    assert all(row["pama_s_star"] > 0 for row in whole)


def test_an_aggregator_combines_the_rl_dimension_gradients(workspace, tmp_path, classifier):
    run = tmp_path / "run"
    train(rl_config(workspace, run, classifier, max_steps=2, aggregator="mgda", preference_sampling="per_step"))
    rows = log(run)
    assert all("coefficient/a" in row and "coefficient/b" in row for row in rows)
    assert all(row["coefficient/a"] + row["coefficient/b"] == pytest.approx(1.0) for row in rows)


@pytest.mark.parametrize("method", ["cagrad", "pcgrad"])
def test_the_rl_update_is_the_aggregators_combination_of_the_dimension_gradients(
    workspace, tmp_path, classifier, monkeypatch, method
):
    """One RL step with a λ-aware rule: the coefficients are the rule's on the Gram matrix of the step's unit
    gradients, its λ and its unit losses, and `.grad` is Σ c_i g_i (a rule that got another λ, or LS's ones, or
    an update that skipped the combination, fails)."""
    from panacea.training.aggregators import AGGREGATORS

    seen, combine, update = {}, GradientBuffers.combine, rl_step_module.write_update

    def spy_combine(self, coefficients, *args, **kwargs):
        seen["units"], seen["coefficients"] = self.flat[:-1].clone(), coefficients.clone()
        norm = combine(self, coefficients, *args, **kwargs)
        seen["update"] = self.flat[-1].clone()
        return norm

    def spy_update(config, step, model, scalarizer, buffers, unit_losses, groups, levels=None):
        seen["losses"], seen["groups"] = unit_losses.clone(), groups.clone()
        return update(config, step, model, scalarizer, buffers, unit_losses, groups, levels)

    monkeypatch.setattr(GradientBuffers, "combine", spy_combine)
    monkeypatch.setattr(rl_step_module, "write_update", spy_update)
    run = tmp_path / "run"
    train(rl_config(workspace, run, classifier, max_steps=1, aggregator=method, max_grad_norm=None,
                    preference_sampling="per_step"))  # fmt: skip
    units = seen["units"].double()  # (m, P): one λ-group
    expected = AGGREGATORS[method]().coefficients(units @ units.T, seen["groups"][0].double(), seen["losses"][0])
    assert not torch.allclose(seen["groups"][0], torch.full((2,), 0.5))  # a λ the rule can be told from LS by
    torch.testing.assert_close(seen["coefficients"].double(), expected, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(seen["update"], seen["coefficients"] @ seen["units"], rtol=1e-5, atol=1e-7)


def test_rewarded_soups_train_one_rl_lora_per_dimension(workspace, tmp_path, classifier):
    from panacea.training import train_soups

    run = tmp_path / "soups"
    result = train_soups(rl_config(workspace, run, classifier, method="soups", max_steps=4, save_steps=2))
    assert result.manifest["complete"] and sorted(result.manifest["runs"]) == ["a", "b"]
    # 'split': each member 2 steps of the same 2 prompts × 4 rollouts, together the Panacea run's 8 prompts and 32
    # rollouts (the manifest once said 0 pairs and nothing of prompts)
    assert result.manifest["panacea_budget"] == {
        "steps": 4, "prompts_per_step": 2, "rollouts_per_prompt": 4, "prompts": 8, "rollouts": 32
    }  # fmt: skip
    assert [(entry["prompts"], entry["rollouts"]) for entry in result.manifest["runs"].values()] == [(4, 16)] * 2
    assert "pairs" not in result.manifest["total"]
    assert (result.manifest["total"]["prompts"], result.manifest["total"]["rollouts"]) == (8, 32)
    for name, other in (("a", "b"), ("b", "a")):
        rows = log(run / "soups" / name)
        assert len(rows) == 2 and all(f"reward/{name}" in row and f"reward/{other}" not in row for row in rows)
