"""DPO and SFT objectives against docs/algorithms.md ("Objectives") and hand computations."""

import math

import pytest
import torch
from panacea.training.objectives import dpo_loss, implicit_rewards, sft_loss


def docs_case(beta):
    """log π_θ(y_w) = −10, log π_θ(y_l) = −12, log π_ref(y_w) = log π_ref(y_l) = −11; policy inputs need grad."""
    policy_chosen = torch.tensor([-10.0], dtype=torch.float64, requires_grad=True)
    policy_rejected = torch.tensor([-12.0], dtype=torch.float64, requires_grad=True)
    reference = torch.tensor([-11.0], dtype=torch.float64)
    loss = dpo_loss(policy_chosen, policy_rejected, reference, reference, beta)
    return loss, policy_chosen, policy_rejected


def test_dpo_loss_at_beta_0_1_is_the_docs_value():
    loss, _, _ = docs_case(0.1)
    assert loss.item() == pytest.approx(0.5981389, abs=1e-7)


def test_dpo_loss_is_softplus_of_minus_z_with_z_0_2():
    loss, _, _ = docs_case(0.1)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.2)), abs=1e-12)


def test_dpo_gradient_wrt_policy_log_probs_is_the_docs_value():
    loss, policy_chosen, policy_rejected = docs_case(0.1)
    loss.sum().backward()
    assert policy_chosen.grad.item() == pytest.approx(-0.0450166, abs=1e-7)
    assert policy_rejected.grad.item() == pytest.approx(+0.0450166, abs=1e-7)


def test_dpo_loss_at_beta_0_5_is_the_docs_value():
    loss, _, _ = docs_case(0.5)
    assert loss.item() == pytest.approx(0.3132617, abs=1e-7)


def test_dpo_loss_is_ln_2_when_policy_equals_reference():
    logps = torch.tensor([-3.0, -17.5, -42.0])
    loss = dpo_loss(logps, logps - 1, logps, logps - 1, beta=0.1)
    torch.testing.assert_close(loss, torch.full((3,), math.log(2)), rtol=0, atol=1e-7)


def test_dpo_loss_is_one_value_per_pair():
    policy_chosen = torch.tensor([-10.0, -5.0, -20.0])
    policy_rejected = torch.tensor([-12.0, -5.0, -1.0])
    reference_chosen = torch.tensor([-11.0, -6.0, -19.0])
    reference_rejected = torch.tensor([-11.0, -4.0, -3.0])
    batched = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=0.1)
    one_by_one = [
        dpo_loss(policy_chosen[i], policy_rejected[i], reference_chosen[i], reference_rejected[i], beta=0.1)
        for i in range(3)
    ]
    assert batched.shape == (3,)
    assert batched[0].item() == pytest.approx(0.5981389, abs=1e-6)
    torch.testing.assert_close(batched, torch.stack(one_by_one))


def test_sft_loss_is_the_mean_nll_per_sample():
    # Sample 0: token log-probs (−1, −2, −3) → NLL mean 2; sample 1: (−0.5, −1.5) → 1.
    summed = torch.tensor([-6.0, -2.0])
    tokens = torch.tensor([3, 2])
    torch.testing.assert_close(sft_loss(summed, tokens), torch.tensor([2.0, 1.0]))


def test_sft_loss_keeps_the_policy_dtype():
    summed = torch.tensor([-6.0], dtype=torch.float64)
    assert sft_loss(summed, torch.tensor([4])).dtype == torch.float64


def test_implicit_rewards_are_beta_times_the_log_ratio():
    policy = torch.tensor([-10.0, -12.0])
    reference = torch.tensor([-11.0, -11.0])
    torch.testing.assert_close(implicit_rewards(policy, reference, beta=0.1), torch.tensor([0.1, -0.1]))


def test_dpo_z_is_the_difference_of_implicit_rewards():
    policy = torch.tensor([-10.0, -12.0], dtype=torch.float64)
    reference = torch.tensor([-11.0, -11.0], dtype=torch.float64)
    rewards = implicit_rewards(policy, reference, beta=0.1)
    z = rewards[0] - rewards[1]
    assert z.item() == pytest.approx(0.2, abs=1e-12)
    # dpo_loss takes z from those rewards: −log σ(z) on random pairs, against a dense float64 reference
    generator = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(6, generator=generator, dtype=torch.float64) * 5 for _ in range(4))
    beta = 0.3
    z = implicit_rewards(pc, rc, beta) - implicit_rewards(pr, rr, beta)
    torch.testing.assert_close(dpo_loss(pc, pr, rc, rr, beta), -torch.log(torch.sigmoid(z)), rtol=1e-12, atol=1e-12)
