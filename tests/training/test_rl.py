"""RL maths (training/rl.py): RLOO, KL, the PPO-clip loss, running moments, PAMA, and the reward sources.

Numbers come from docs/algorithms.md ("RL") or from a hand computation written out in the test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from panacea.eval.reward_model import RewardModel, score_responses
from panacea.training.rl import (
    CallableReward,
    LengthReward,
    ProjectRewardModel,
    RefusalReward,
    RunningMoments,
    SequenceClassifierReward,
    build_reward,
    check_reward_spec,
    kl_estimate,
    kl_penalised_rewards,
    noon_advantages,
    pama_combine,
    pama_indicator,
    pama_weights,
    ppo_clipped_loss,
    response_token_log_probs,
    rloo_advantages,
    rollout_seed,
)
from transformers import LlamaForSequenceClassification

from tests.conftest import VOCAB_SIZE, panacea_llama, tiny_llama, tiny_tokenizer
from tests.helpers import save_tiny_classifier

# ------------------------------------------------------------------------------------------------------
# RLOO


def test_rloo_advantages_use_the_mean_of_the_other_consecutive_samples():
    # 2 prompts × K = 3 consecutive rows, m = 2; A = r − mean of the other two (by hand).
    rewards = torch.tensor([[1.0, 0.0], [2.0, 0.0], [6.0, 3.0], [5.0, 1.0], [5.0, -1.0], [5.0, 3.0]])
    expected = torch.tensor([[-3.0, -1.5], [-1.5, -1.5], [4.5, 3.0], [0.0, 0.0], [0.0, -3.0], [0.0, 3.0]])
    assert torch.allclose(rloo_advantages(rewards, 3), expected)
    assert torch.allclose(rloo_advantages(rewards[:, 0], 3), expected[:, 0])  # one dimension, (n,)


def test_rloo_refuses_one_sample_per_prompt_and_ragged_groups():
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(torch.zeros(4, 2), 1)
    with pytest.raises(ValueError, match=r"prompts · k"):
        rloo_advantages(torch.zeros(5, 2), 2)


# ------------------------------------------------------------------------------------------------------
# KL to the reference


def test_kl_estimators_match_their_formulas():
    logprobs, reference = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.3, -1.5]])  # k1 = (0.3, −0.5)
    assert torch.allclose(kl_estimate(logprobs, reference, "k1"), torch.tensor([[0.3, -0.5]]))
    k3 = [math.exp(-0.3) - 1 + 0.3, math.exp(0.5) - 1 - 0.5]  # (0.0408182, 0.1487213)
    assert torch.allclose(kl_estimate(logprobs, reference, "k3"), torch.tensor([k3]))
    with pytest.raises(ValueError, match="not one of"):
        kl_estimate(logprobs, reference, "k2")


def test_kl_penalty_is_zero_when_the_policy_is_the_reference():
    # The adapter's default initialisation is ΔW = 0, so adapter on and adapter off give the same log-probs.
    model = panacea_llama(randomize=False)
    ids = torch.randint(3, VOCAB_SIZE, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        policy = token_logprobs(model(ids, preference=torch.tensor([[0.3, 0.7], [1.0, 0.0]])).logits, ids)
        with model.disable_adapter():
            reference = token_logprobs(model(ids).logits, ids)
    mask = torch.ones_like(policy)
    for estimator in ("k1", "k3"):
        assert torch.equal(kl_estimate(policy, reference, estimator), torch.zeros_like(policy))
    rewards = torch.tensor([[1.0, -2.0], [0.5, 0.25]])
    assert torch.equal(kl_penalised_rewards(rewards, policy, reference, mask, kl_coef=0.1), rewards)


def test_kl_penalty_sums_the_masked_k1_into_every_dimension():
    logprobs = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]])
    reference = torch.tensor([[-1.5, -1.0, 0.0], [-1.0, -0.5, -0.7]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])  # row 0's last token is padding (its −inf must not leak)
    logprobs[0, 2] = -math.inf
    rewards = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    # Σ masked k1: row 0: 0.5 − 1.0 = −0.5; row 1: 0.5 + 0 + 0.2 = 0.7; β = 0.1.
    expected = torch.tensor([[1.05, 2.05], [-0.07, -1.07]])
    assert torch.allclose(kl_penalised_rewards(rewards, logprobs, reference, mask, kl_coef=0.1), expected)


def test_a_non_finite_log_prob_of_a_response_is_named_as_such_not_as_a_dimensions_loss():
    """One NaN in π_ref's log-probs made every advantage NaN, and the run stopped on "the 'helpful' loss is nan … check
    the data", which blamed a reward dimension (found by an independent review)."""
    from types import SimpleNamespace

    from panacea.training.logprobs import PairBatch
    from panacea.training.rl_step import _penalised_rewards
    from panacea.training.update import TrainingError

    config = SimpleNamespace(rl=SimpleNamespace(kl_coef=0.1, kl_estimator="k1"))
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    batch = PairBatch(torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.long), mask, 2)
    old, reference = torch.full((2, 3), -1.0), torch.full((2, 3), -1.5)
    rewards = torch.tensor([[0.5, -0.5], [-0.5, 0.5]])
    penalised, kl = _penalised_rewards(config, old, reference, batch, rewards)
    assert torch.allclose(kl, torch.tensor([1.0, 1.5]))  # k1 = 0.5 on 2 and 3 response tokens
    assert torch.allclose(penalised, rewards - 0.1 * kl[:, None])
    reference[1, 1] = math.nan
    with pytest.raises(TrainingError, match=r"the KL to the reference is nan for 1 of 2 rollouts"):
        _penalised_rewards(config, old, reference, batch, rewards)
    reference[1, 1], reference[0, 2] = -1.5, math.nan  # a padding position (mask 0): not read
    assert torch.equal(_penalised_rewards(config, old, reference, batch, rewards)[1], kl)
    # finite log-probs whose k3 estimate overflows (exp(100)): named as such, not as non-finite log-probs (a review)
    config.rl.kl_estimator, reference[0, 2], old[0, 1] = "k3", -1.5, -101.0
    with pytest.raises(
        TrainingError, match=r"is inf for 1 of 2 rollouts: .* are finite, so the estimator 'k3' overflowed"
    ):
        _penalised_rewards(config, old, reference, batch, rewards)


# ------------------------------------------------------------------------------------------------------
# PPO-clip


def dense_ppo_reference(logprobs, old_logprobs, advantages, mask, epsilon, max_tokens=None):
    """The per-(sample, dimension) loss by loops and the sign-split form of the clip: for A ≥ 0 the objective
    is min(u, 1 + ε)·A, for A < 0 it is max(u, 1 − ε)·A (Schulman et al. 2017, eq. 7, case by case). Each
    response's terms are averaged, or with `max_tokens` summed and divided by it (Dr. GRPO)."""
    n, seq = logprobs.shape
    rows = []
    for b in range(n):
        row = []
        for i in range(advantages.shape[1]):
            terms = []
            for t in range(seq):
                if mask[b, t]:
                    u = torch.exp(logprobs[b, t] - old_logprobs[b, t])
                    a = advantages[b, i]
                    terms.append(-(torch.clamp(u, max=1 + epsilon) if a >= 0 else torch.clamp(u, min=1 - epsilon)) * a)
            row.append(torch.stack(terms).mean() if max_tokens is None else torch.stack(terms).sum() / max_tokens)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def test_ppo_clipped_loss_and_gradient_match_a_dense_reference_with_clipping_on_both_sides_and_masking():
    old = torch.tensor([[-1.0, -1.0, -1.0, -1.0], [-2.0, -2.0, -2.0, -2.0], [-0.5, -0.5, -0.5, -0.5]])
    # log u per token: 0.5 (u = 1.65, above 1 + ε), −0.5 (u = 0.61, below 1 − ε), 0.1 (inside), and a pad
    shift = torch.tensor([[0.5, -0.5, 0.1, 3.0], [0.5, -0.5, 0.1, 0.0], [-0.1, 0.05, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
    advantages = torch.tensor([[1.0, -2.0], [-0.5, 0.7], [0.0, 3.0]])  # both signs in every column
    epsilon = 0.2
    logprobs = (old + shift).requires_grad_()
    loss = ppo_clipped_loss(logprobs, old, advantages, mask, epsilon)
    reference_input = (old + shift).requires_grad_()
    reference = dense_ppo_reference(reference_input, old, advantages, mask, epsilon)
    assert loss.shape == (3, 2) and torch.allclose(loss, reference)
    weights = torch.tensor([[0.3, 0.7], [1.0, 2.0], [0.5, 0.5]])  # any per-(sample, dimension) weights
    (gradient,) = torch.autograd.grad((loss * weights).sum(), logprobs, retain_graph=True)
    (expected,) = torch.autograd.grad((reference * weights).sum(), reference_input)
    assert torch.allclose(gradient, expected)
    # Row 0, dimension 0 (A = 1 > 0): u = 1.65 is clipped (no gradient), u = 0.61 is not (A > 0 keeps the min).
    (single,) = torch.autograd.grad(loss[0, 0], logprobs, retain_graph=True)
    assert single[0, 0] == 0 and single[0, 1] != 0 and single[0, 2] != 0 and single[0, 3] == 0  # pad: none
    # Row 0, dimension 1 (A = −2 < 0): now u = 0.61 is the clipped side, u = 1.65 is not.
    (single,) = torch.autograd.grad(loss[0, 1], logprobs)
    assert single[0, 0] != 0 and single[0, 1] == 0 and single[0, 2] != 0
    # A padded position changes nothing.
    moved = logprobs.detach().clone()
    moved[0, 3] = 100.0  # exp(100 − old) overflows if a pad ever reaches the exp
    assert torch.equal(ppo_clipped_loss(moved, old, advantages, mask, epsilon), loss.detach())


def test_ppo_clipped_loss_single_token_cases_of_the_docs():
    # ε = 0.2; u = e^0.5 = 1.648721 and e^−0.5 = 0.606531; A = 1 and A = −2.
    log_ratio = torch.tensor([[0.5], [-0.5]])
    loss = ppo_clipped_loss(log_ratio, torch.zeros(2, 1), torch.tensor([[1.0, -2.0], [1.0, -2.0]]), torch.ones(2, 1))
    assert torch.allclose(loss, torch.tensor([[-1.2, 2 * math.exp(0.5)], [-math.exp(-0.5), 1.6]]))


def test_ppo_clipped_loss_summed_over_tokens_divides_by_the_constant_and_matches_a_dense_reference():
    old = torch.tensor([[-1.0, -1.0, -1.0, -1.0], [-2.0, -2.0, -2.0, -2.0]])
    shift = torch.tensor([[0.5, -0.5, 0.1, 3.0], [0.5, -0.5, 0.1, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # 3 and 2 response tokens
    advantages = torch.tensor([[1.0, -2.0], [-0.5, 0.7]])
    logprobs = (old + shift).requires_grad_()
    loss = ppo_clipped_loss(logprobs, old, advantages, mask, 0.2, aggregation="sum", max_tokens=5)
    reference_input = (old + shift).requires_grad_()
    reference = dense_ppo_reference(reference_input, old, advantages, mask, 0.2, max_tokens=5)
    assert torch.allclose(loss, reference)
    (gradient,) = torch.autograd.grad(loss.sum(), logprobs)
    (expected,) = torch.autograd.grad(reference.sum(), reference_input)
    assert torch.allclose(gradient, expected)
    mean = ppo_clipped_loss(logprobs, old, advantages, mask, 0.2)
    assert torch.allclose(loss * 5, mean * mask.sum(1, keepdim=True))  # sum/5 vs mean: the factor T_b / 5 per row
    # One token, ε = 0.2, u = e^0.5, A = 1: the docs' −1.2 becomes −1.2 / max_tokens.
    single = ppo_clipped_loss(
        torch.tensor([[0.5]]), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 0.2, "sum", 4
    )
    assert single.item() == pytest.approx(-0.3)
    with pytest.raises(ValueError, match="max_tokens, an integer >= 1"):
        ppo_clipped_loss(logprobs, old, advantages, mask, aggregation="sum")
    with pytest.raises(ValueError, match="token aggregation 'total'"):
        ppo_clipped_loss(logprobs, old, advantages, mask, aggregation="total")


def test_one_epoch_summed_over_tokens_is_reinforce_rloo_on_summed_log_probs_over_the_constant():
    # Dr. GRPO's constant normaliser: ∇ = −(A / max_tokens) ∇ Σ_t log π, the estimator of Ahmadian et al. (TRL's
    # sum over tokens) up to the constant, with no per-length factor: a long and a short response of equal A push
    # each of their tokens alike.
    model = panacea_llama()
    ids = torch.randint(3, VOCAB_SIZE, (4, 8), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(4, 7)
    mask[:, :2] = 0
    mask[1, 4:] = 0
    preference = torch.tensor([[0.2, 0.8], [0.2, 0.8], [0.6, 0.4], [0.6, 0.4]])
    advantages = rloo_advantages(torch.tensor([[1.0, 0.0], [3.0, -1.0], [0.5, 2.0], [-0.5, 1.0]]), 2)
    parameters = [p for p in model.parameters() if p.requires_grad]
    logprobs = token_logprobs(model(ids, preference=preference).logits, ids)
    losses = ppo_clipped_loss(logprobs, logprobs.detach(), advantages, mask, 0.2, "sum", 6)
    ppo = torch.autograd.grad((preference * losses).mean(0).sum(), parameters)
    logprobs = token_logprobs(model(ids, preference=preference).logits, ids)
    summed = (logprobs * mask).sum(1)
    expected = torch.autograd.grad(-(preference * advantages * summed[:, None] / 6).mean(0).sum(), parameters)
    for got, want in zip(ppo, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-7)


def test_response_token_log_probs_equal_a_full_log_softmax_at_the_temperature():
    from panacea.training.logprobs import collate_pairs

    from panacea.data import TokenizedPair

    model = panacea_llama()
    pairs = [TokenizedPair("0", [5, 6, 7], [8, 9, 2], []), TokenizedPair("1", [10], [11, 12, 13, 14, 2], [])]
    batch = collate_pairs(pairs, pad_token_id=0, with_rejected=False)
    preference = torch.tensor([[0.3, 0.7], [0.9, 0.1]])
    got = response_token_log_probs(model, batch, 0.7, preference=preference)
    logits = model(batch.input_ids, attention_mask=batch.attention_mask, preference=preference).logits
    dense = torch.gather(F.log_softmax(logits[:, :-1].float() / 0.7, -1), 2, batch.input_ids[:, 1:, None])[..., 0]
    mask = batch.response_mask[:, 1:]
    assert got.shape == mask.shape and torch.allclose(got[mask], dense[mask], atol=1e-6)
    assert bool((got[~mask] == 0).all()) and int(mask.sum()) == 8


def test_rollout_seeds_depend_on_seed_step_and_row_only():
    seeds = {rollout_seed(seed, step, row) for seed in (0, 1) for step in (0, 1, 7) for row in range(8)}
    assert len(seeds) == 48 and all(0 <= value < 2**63 for value in seeds)
    assert rollout_seed(3, 5, 2) == rollout_seed(3, 5, 2)


def test_ppo_clipped_loss_refuses_an_empty_response():
    with pytest.raises(ValueError, match="no tokens"):
        ppo_clipped_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 1), torch.tensor([[1, 1, 0], [0, 0, 0]]))


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log π(y_t | y_<t) of ids[:, 1:], (batch, seq − 1), in fp32."""
    return torch.gather(F.log_softmax(logits[:, :-1].float(), -1), 2, ids[:, 1:, None]).squeeze(-1)


def test_one_epoch_with_old_equal_current_is_the_reinforce_rloo_gradient():
    model = panacea_llama()
    ids = torch.randint(3, VOCAB_SIZE, (4, 8), generator=torch.Generator().manual_seed(1))  # 2 prompts × K = 2
    mask = torch.ones(4, 7)
    mask[:, :2] = 0  # prompt positions
    mask[1, 5:] = 0  # a shorter response
    preference = torch.tensor([[0.2, 0.8], [0.2, 0.8], [0.6, 0.4], [0.6, 0.4]])
    rewards = torch.tensor([[1.0, 0.0], [3.0, -1.0], [0.5, 2.0], [-0.5, 1.0]])
    advantages = rloo_advantages(rewards, 2)
    parameters = [p for p in model.parameters() if p.requires_grad]

    logprobs = token_logprobs(model(ids, preference=preference).logits, ids)
    losses = ppo_clipped_loss(logprobs, logprobs.detach(), advantages, mask, 0.2)  # (4, 2)
    ppo = torch.autograd.grad((preference * losses).mean(0).sum(), parameters)  # LS: Σ_i (1/B) Σ_b λ_{b,i} ℓ_i(b)

    logprobs = token_logprobs(model(ids, preference=preference).logits, ids)
    mean_logprob = (logprobs * mask).sum(1) / mask.sum(1)  # (4,): each response's log-prob over its tokens
    reinforce = -(preference * advantages * mean_logprob[:, None]).mean(0).sum()
    expected = torch.autograd.grad(reinforce, parameters)
    assert any(g.abs().max() > 0 for g in expected)
    for got, want in zip(ppo, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-7)


# ------------------------------------------------------------------------------------------------------
# Running moments


def test_running_moments_equal_numpy_over_the_concatenated_stream_and_round_trip_through_json():
    generator = torch.Generator().manual_seed(0)
    batches = [
        torch.randn(size, 2, generator=generator, dtype=torch.float64) * scale + offset
        for size, scale, offset in ((1, 1.0, 0.0), (7, 3.0, 100.0), (2, 0.1, -5.0), (16, 10.0, 1e4))
    ]
    moments, resumed = RunningMoments(2), RunningMoments(2)
    for index, batch in enumerate(batches):
        moments.update(batch)
        if index == 1:  # save after two batches, restore into a fresh object, continue both
            resumed.load_state_dict(json.loads(json.dumps(moments.state_dict())))
        elif index > 1:
            resumed.update(batch)
    stream = torch.cat(batches).numpy()
    assert moments.count == len(stream)
    assert np.allclose(moments.mean.numpy(), stream.mean(0), rtol=1e-12, atol=0)
    assert np.allclose(moments.std.numpy(), stream.std(0), rtol=1e-10, atol=0)
    assert resumed.state_dict() == moments.state_dict()  # exact, float for float
    rewards = batches[2].float()
    expected = (rewards.double().numpy() - stream.mean(0)) / stream.std(0)
    assert np.allclose(moments.normalise(rewards).numpy(), expected, rtol=1e-5)


def test_running_moments_case_of_the_docs():
    moments = RunningMoments(1)
    moments.update(torch.tensor([[1.0], [2.0]]))
    moments.update(torch.tensor([[3.0], [4.0], [5.0]]))
    assert moments.mean.item() == 3.0 and moments.std.item() == pytest.approx(math.sqrt(2), abs=1e-15)
    assert moments.normalise(torch.tensor([[5.0]])).item() == pytest.approx(1.414214, abs=1e-6)


def test_running_moments_centre_a_constant_dimension_and_refuse_bad_input():
    moments = RunningMoments(2)
    with pytest.raises(ValueError, match="before any update"):
        moments.normalise(torch.zeros(1, 2))
    moments.update(torch.tensor([[3.0, 1.0], [3.0, 2.0]]))
    assert torch.allclose(moments.normalise(torch.tensor([[4.0, 2.0]])), torch.tensor([[1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \(n >= 1, 2\)"):
        moments.update(torch.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        moments.update(torch.tensor([[math.nan, 0.0]]))
    with pytest.raises(ValueError, match="'m2' must be 2 finite numbers"):
        moments.load_state_dict({"count": 2, "mean": [0.0, 0.0], "m2": [1.0]})


# ------------------------------------------------------------------------------------------------------
# PAMA (test vectors of docs/algorithms.md, "RL", PAMA)


@pytest.mark.parametrize(
    ("values", "optimum", "weights"),
    [
        ((0.3, 0.7), 0.3, (1.0, 0.0)),
        ((-0.2, 0.5), 0.0, (0.714286, 0.285714)),
        ((-0.4, -0.1), -0.1, (0.0, 1.0)),
        ((0.2, 0.5, 0.9), 0.2, (1.0, 0.0, 0.0)),
    ],
)
def test_pama_theorem_1_vectors(values, optimum, weights):
    values = torch.tensor(values, dtype=torch.float64)
    s, c = pama_weights(values)
    assert s.item() == pytest.approx(optimum, abs=1e-12)
    assert c.tolist() == pytest.approx(weights, abs=1e-6)
    assert float(c.sum()) == pytest.approx(1.0) and (c >= 0).all()
    assert float(c @ values) == pytest.approx(optimum, abs=1e-12)  # c realises s*


def noon_example():
    """ε = 0.2, u = (1.0, 1.3, 0.9), A'⁽¹⁾ = (0.5, 0.4, −0.2), A'⁽²⁾ = (0.1, 0.8, 0.3): one sample, three tokens."""
    advantages = torch.tensor([[[0.5, 0.1], [0.4, 0.8], [-0.2, 0.3]]])  # (n = 1, seq = 3, m = 2)
    return advantages, torch.tensor([[1.0, 1.3, 0.9]]), torch.ones(1, 3)


def test_pama_noon_example_in_both_readings():
    advantages, ratio, mask = noon_example()
    indicated = pama_indicator(noon_advantages(advantages), ratio, 0.2)
    assert torch.allclose(indicated[0].T, torch.tensor([[0.5, 0.0, 0.0], [0.1, 0.0, 0.3]]))
    batch = pama_combine(advantages, ratio, mask, 0.2, granularity="batch")
    assert torch.allclose(batch, torch.full((1, 3), 0.4 / 3))  # 0.133333, objective 2's mean
    token = pama_combine(advantages, ratio, mask, 0.2, granularity="token")
    assert torch.allclose(token, torch.tensor([[0.1, 0.0, 0.0]]))


def test_pama_lambda_scaled_variant_follows_the_preference_and_ignores_padding():
    advantages, ratio, mask = noon_example()
    preference = torch.tensor([[0.2, 0.8]])  # λ·I: means (0.1/3, 0.32/3), so now objective 1 is followed
    batch = pama_combine(advantages, ratio, mask, 0.2, granularity="batch", preference=preference)
    assert torch.allclose(batch, torch.full((1, 3), 0.1 / 3))
    token = pama_combine(advantages, ratio, mask, 0.2, granularity="token", preference=preference)
    assert torch.allclose(token, torch.tensor([[0.08, 0.0, 0.0]]))
    # A padded fourth token with large advantages moves neither reading.
    padded = torch.cat([advantages, torch.tensor([[[9.0, 9.0]]])], 1)
    ratio, mask = torch.tensor([[1.0, 1.3, 0.9, 1.0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert torch.allclose(pama_combine(padded, ratio, mask, 0.2, "batch"), torch.tensor([[0.4 / 3] * 3 + [0.0]]))
    assert torch.allclose(pama_combine(padded, ratio, mask, 0.2, "token"), torch.tensor([[0.1, 0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="granularity"):
        pama_combine(advantages, ratio[:, :3], mask[:, :3], 0.2, "sequence")


# ------------------------------------------------------------------------------------------------------
# Reward sources


def test_length_reward_counts_words_or_tokens():
    prompts = ["p"] * 3
    assert torch.equal(LengthReward()(prompts, ["a b c", "", " one   two "]), torch.tensor([-3.0, 0.0, -2.0]))
    by_tokens = LengthReward(unit="tokens", tokenizer=tiny_tokenizer())
    assert torch.equal(by_tokens(prompts[:2], ["w4 w5 w6 w7", "w9"]), torch.tensor([-4.0, -1.0]))
    with pytest.raises(ValueError, match="needs a tokenizer"):
        LengthReward(unit="tokens")


def test_refusal_reward_scores_refusals_one():
    responses = [
        "I'm sorry, but I can't help with that.",
        "Sure! Preheat the oven to 180 degrees.",
        "As an AI, I think the capital of France is Paris.",  # a disclaimer, then an answer
        "Here is why it is illegal: I cannot provide instructions for that.",
    ]
    assert RefusalReward()(["q"] * 4, responses).tolist() == [1.0, 0.0, 0.0, 1.0]


def test_callable_reward_loads_module_function_and_names_it_when_it_cannot(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def exclamations(prompts, responses):\n    return [float(r.count('!')) for r in responses]\n"
        "def wrong_shape(prompts, responses):\n    return [1.0]\n"
        "NOT_A_FUNCTION = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = build_reward({"type": "callable", "function": "my_rewards:exclamations"})
    assert torch.equal(reward(["a", "b"], ["hi!!", "no"]), torch.tensor([2.0, 0.0]))
    for target, message in [
        ("no_such_module_xyz:f", "'no_such_module_xyz:f' cannot be loaded"),
        ("my_rewards:missing", "'my_rewards:missing' cannot be loaded"),
        ("my_rewards", "must be 'module:function'"),
        ("my_rewards:NOT_A_FUNCTION", "not callable"),
    ]:
        with pytest.raises(ValueError, match=message):
            build_reward({"type": "callable", "function": target})
    with pytest.raises(ValueError, match="one number per response"):
        CallableReward("my_rewards:wrong_shape")(["a", "b"], ["x", "y"])


def test_sequence_classifier_reward_equals_unpadded_forwards_one_by_one(tmp_path):
    path = save_tiny_classifier(tmp_path / "classifier")
    prompts = ["w4 w5", "w6", "w7 w8 w9 w10"]
    responses = ["w11 w12 w13 w14 w15", "w16", "w17 w18"]
    reward = build_reward({"type": "classifier", "name_or_path": str(path), "batch_size": 2})
    assert isinstance(reward, SequenceClassifierReward)
    scores = reward(prompts, responses)
    model, tokenizer = LlamaForSequenceClassification.from_pretrained(path).eval(), tiny_tokenizer()
    with torch.no_grad():
        texts = [f"{prompt}\n{response}" for prompt, response in zip(prompts, responses, strict=True)]
        expected = [model(**tokenizer(text, return_tensors="pt")).logits[0, 0] for text in texts]
    assert scores.shape == (3,) and torch.allclose(scores, torch.stack(expected), atol=1e-5)


def test_a_reward_model_that_does_not_load_fails_at_build_time(tmp_path):
    with pytest.raises(ValueError, match="does not load as a sequence classifier"):
        build_reward({"type": "classifier", "name_or_path": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="label 3 does not pick one"):
        build_reward({"type": "classifier", "name_or_path": str(save_tiny_classifier(tmp_path / "c")), "label": 3})
    with pytest.raises(ValueError, match="No reward model at"):
        build_reward({"type": "reward_model", "path": str(tmp_path / "nothing")}, model=1, tokenizer=1)
    truncated = save_tiny_classifier(tmp_path / "truncated")  # safetensors raises its own error type
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5])
    with pytest.raises(ValueError, match="does not load as a sequence classifier"):
        build_reward({"type": "classifier", "name_or_path": str(truncated)})


def test_project_reward_model_scores_with_score_responses(tmp_path):
    generator = torch.Generator().manual_seed(0)
    features = 2 * 32  # last token + response mean of the tiny Llama's hidden size 32
    head = RewardModel(
        "harmless",
        torch.randn(features, generator=generator),
        torch.zeros(()),
        torch.zeros(features),
        torch.ones(features),
        metadata={"max_length": 24, "max_prompt_length": 8},
    )
    head.save(tmp_path / "rm")
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    reward = build_reward({"type": "reward_model", "path": str(tmp_path / "rm")}, model=model, tokenizer=tokenizer)
    assert isinstance(reward, ProjectRewardModel)
    prompts, responses = ["w4 w5", "w6 w7 w8"], ["w9 w10", "w11"]
    scores = reward(prompts, responses)
    assert scores.shape == (2,) and torch.allclose(scores, score_responses(head, model, tokenizer, prompts, responses))
    assert scores[0] != scores[1]


def write_pairs(path, count=12):
    """A pair file of `count` train and `count` test pairs for dimension 'harmless' (tiny-tokenizer words)."""
    rows = []
    for index in range(2 * count):
        rows.append(
            {
                "id": f"h{index}",
                "prompt": f"w{4 + index % 20} w{30 + index % 7}",
                "chosen": "w40 w41" if index % 2 else "w42",
                "rejected": "w50 w51 w52",
                "dim": "harmless",
                "split": "train" if index < count else "test",
            }
        )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_project_reward_model_fits_a_head_on_train_and_test_sources_as_eval_does(tmp_path, monkeypatch):
    from panacea.eval.reward_model import train_reward_model

    from panacea.data import PairSource

    monkeypatch.setenv("PANACEA_CACHE_DIR", str(tmp_path / "cache"))
    data = write_pairs(tmp_path / "pairs.jsonl")
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    spec = {
        "type": "reward_model",
        "train": [{"path": str(data), "split": "train"}],
        "test": [{"path": str(data), "split": "test"}],
        "max_length": 24,
        "max_prompt_length": 8,
    }
    reward = build_reward(spec, model=model, tokenizer=tokenizer, dimension="harmless", dimensions=["helpful"])
    head = train_reward_model(
        model, tokenizer, "harmless", [PairSource(str(data))], [PairSource(str(data), split="test")],
        max_length=24, max_prompt_length=8,
    )  # fmt: skip
    assert head.metadata["train_pairs"] == 12 and head.metadata["test_pairs"] == 12
    prompts, responses = ["w4 w5", "w6"], ["w40 w41", "w50 w51 w52"]
    assert torch.allclose(reward(prompts, responses), score_responses(head, model, tokenizer, prompts, responses))
    both = {**spec, "path": str(tmp_path / "rm")}
    with pytest.raises(ValueError, match="either path .* or train and test .*, not both"):
        build_reward(both, model=model, tokenizer=tokenizer, dimension="harmless")
    with pytest.raises(ValueError, match=r"ProjectRewardModel.test must be a non-empty list"):
        build_reward({**spec, "test": []}, model=model, tokenizer=tokenizer, dimension="harmless")
    with pytest.raises(ValueError, match=r"ProjectRewardModel.train.0: unknown PairSource key"):
        build_reward({**spec, "train": [{"path": str(data), "splitt": "train"}]}, model=model, tokenizer=tokenizer)


def test_check_reward_spec_refuses_without_loading_anything():
    assert check_reward_spec({"type": "classifier", "name_or_path": "/nowhere"})[1] == {"name_or_path": "/nowhere"}
    with pytest.raises(ValueError, match=r"dimensions.1.reward: unknown key\(s\) \['model'\]"):
        check_reward_spec({"type": "reward_model", "model": "x"}, where="dimensions.1.reward")


@pytest.mark.parametrize(
    ("spec", "context", "message"),
    [
        ("length", {}, r"reward: expected a mapping with a 'type' key"),
        ({"type": "lenght"}, {}, r"reward.type: 'lenght' is not one of \['callable', 'classifier', 'length'"),
        ({"type": "length", "units": "words"}, {}, r"unknown key\(s\) \['units'\] for type 'length'"),
        ({"type": "length", "unit": "chars"}, {}, r"reward \(length\): LengthReward.unit must be 'words' or 'tokens'"),
        ({"type": "callable"}, {}, r"reward \(callable\): .*function"),
        ({"type": "length", "tokenizer": "x"}, {}, r"unknown key\(s\) \['tokenizer'\]"),  # context, not a setting
        ({"type": "reward_model", "path": "p"}, {}, r"needs the base model and its tokenizer"),
    ],
)
def test_bad_reward_specs_fail_with_one_error_naming_the_key(spec, context, message):
    with pytest.raises(ValueError, match=message):
        build_reward(spec, **context)
