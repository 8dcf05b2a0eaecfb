"""Per-dimension objectives on summed response log-probs: DPO (sigmoid) and SFT (docs/algorithms.md, "Objectives").

Each function returns one loss per pair, shape (batch,); the caller weights and reduces them (as
torchtune's `DPOLoss` does), so the scalariser sees every sample's loss with its own preference.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

OBJECTIVES = ("dpo", "sft", "rl")  # 'rl': on-policy against a reward; its losses live in panacea.training.rl
Objective = Literal["dpo", "sft", "rl"]


def implicit_rewards(policy_logps: Tensor, reference_logps: Tensor, beta: float) -> Tensor:
    """r̂(x, y) = β (log π_θ(y|x) − log π_ref(y|x)), elementwise on summed response log-probs."""
    return beta * (policy_logps - reference_logps)


def reward_margin(
    policy_chosen: Tensor, policy_rejected: Tensor, reference_chosen: Tensor, reference_rejected: Tensor, beta: float
) -> Tensor:
    """z = r̂(y_w) − r̂(y_l) = β [(log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l))], shape (batch,).

    DPO's logit, and the held-out margin (the pair counts as correct when z > 0); inputs are summed
    response log-probs of shape (batch,).
    """
    return implicit_rewards(policy_chosen, reference_chosen, beta) - implicit_rewards(
        policy_rejected, reference_rejected, beta
    )


def dpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, reference_chosen: Tensor, reference_rejected: Tensor, beta: float
) -> Tensor:
    """Per-pair DPO loss softplus(−z) = −log σ(z) (Rafailov et al. 2023, arXiv 2305.18290), shape (batch,)."""
    return F.softplus(-reward_margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta))


def sft_loss(policy_chosen: Tensor, chosen_tokens: Tensor) -> Tensor:
    """Per-pair SFT loss: the mean negative log-likelihood of the chosen response's tokens, shape (batch,).

    policy_chosen: summed response log-probs (batch,); chosen_tokens: response token counts (batch,).
    Ours: a per-sample mean (not a token mean over the batch) so that each sample can carry its own
    preference weight; the two agree when responses have equal lengths.
    """
    return -policy_chosen / chosen_tokens.clamp(min=1).to(policy_chosen.dtype)
