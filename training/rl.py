"""On-policy RL maths per dimension: reward normalisation, RLOO advantages, KL to the reference, the PPO-clip
loss, PAMA's advantage combiner, reward sources and per-token log-probs (docs/algorithms.md §8, "RL").

The trainer's RL step (`panacea.training.rl_step`, objective `rl`) runs as, per dimension i of m:

    rollouts of K responses per prompt, each row at its own λ (one mixed-λ `sample_responses` call)
    r (n, m)   = the dimensions' reward sources on (prompt, response), n = prompts · K
    r̃          = RunningMoments.normalise(r)                      after `update(r)`; per dimension
    r̃ − β Σ_t KL_t                                               `kl_penalised_rewards` (k1, in the reward)
    A (n, m)   = rloo_advantages(…, K)                            leave-one-out baseline per dimension
    L (n, m)   = ppo_clipped_loss(log π, log π_old, A, mask, ε)   per (sample, dimension)

L[:, i] is dimension i's per-sample loss, so the scalarisers (LS with per-sample λ weights, Tchebycheff) and
the gradient aggregators take it as they take DPO's. PAMA instead combines the advantages into one
(`pama_combine`) before a single PPO loss.

Shapes: n rows (prompts · K), `seq` response positions, m dimensions. Masks are 1 on response tokens.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from panacea._config import dataclass_from_dict
from panacea.data import PairSource

from .logprobs import PairBatch, _output_head_sees

# panacea.eval is imported where a reward source needs it: its package imports the trainer, which imports this module.

logger = logging.getLogger(__name__)

KL_ESTIMATORS = ("k1", "k3")
KLEstimator = Literal["k1", "k3"]
PAMA_GRANULARITIES = ("token", "batch")
TOKEN_AGGREGATIONS = ("sum", "mean")
_MIN_STD = 1e-8  # a dimension whose rewards never varied is divided by 1, not by ~0


# ------------------------------------------------------------------------------------------------------
# Reward normalisation


class RunningMoments:
    """Per-dimension running mean and standard deviation of rewards (n, m), merged batch by batch (normalising each
    dimension's rewards by them is ours: docs/algorithms.md §8, "Normalisation").

    Chan, Golub & LeVeque's parallel update of (count, mean, M2) (Welford's for a batch of one), in float64:
    after any sequence of `update` calls, `mean` and `std` equal those of all rewards seen, concatenated.
    `std` is the population standard deviation (numpy's default, ddof = 0). The state is JSON-safe
    (Python ints and floats), so a checkpoint restores it bit for bit.
    """

    def __init__(self, num_dimensions: int) -> None:
        if not (isinstance(num_dimensions, int) and num_dimensions >= 1):
            raise ValueError(f"RunningMoments needs num_dimensions >= 1, got {num_dimensions!r}.")
        self.count = 0
        self.mean = torch.zeros(num_dimensions, dtype=torch.float64)
        self.m2 = torch.zeros(num_dimensions, dtype=torch.float64)  # Σ (r − mean)² over all rewards seen

    @property
    def num_dimensions(self) -> int:
        return self.mean.numel()

    @property
    def std(self) -> Tensor:
        """Population standard deviation (m,), float64; 0 before any update."""
        return (self.m2 / max(self.count, 1)).sqrt()

    def update(self, rewards: Tensor) -> None:
        """Merge a batch of rewards (n, m) into the moments."""
        rewards = self._check(rewards).detach().to("cpu", torch.float64)
        batch_count = rewards.shape[0]
        batch_mean = rewards.mean(0)
        batch_m2 = (rewards - batch_mean).square().sum(0)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (batch_count / total)
        self.m2 = self.m2 + batch_m2 + delta.square() * (self.count * batch_count / total)
        self.count = total

    def normalise(self, rewards: Tensor) -> Tensor:
        """(r − mean) / std per dimension, shape (n, m), in the dtype and on the device of `rewards`.

        Does not update: call `update(rewards)` first to include this batch. A dimension with std below 1e-8
        is only centred.
        """
        rewards = self._check(rewards)
        if self.count == 0:
            raise ValueError("RunningMoments.normalise before any update; call update(rewards) first.")
        std = torch.where(self.std < _MIN_STD, torch.ones_like(self.std), self.std)
        return ((rewards.double() - self.mean.to(rewards.device)) / std.to(rewards.device)).to(rewards.dtype)

    def state_dict(self) -> dict[str, Any]:
        """{"count": int, "mean": [float] * m, "m2": [float] * m}; JSON round-trips it exactly."""
        return {"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        count, mean, m2 = state.get("count"), state.get("mean"), state.get("m2")
        m = self.num_dimensions
        if not (isinstance(count, int) and count >= 0):
            raise ValueError(f"RunningMoments state 'count' must be an integer >= 0, got {count!r}.")
        for name, values in (("mean", mean), ("m2", m2)):
            if not (isinstance(values, list) and len(values) == m and all(math.isfinite(v) for v in values)):
                raise ValueError(f"RunningMoments state {name!r} must be {m} finite numbers, got {values!r}.")
        if any(v < 0 for v in m2):
            raise ValueError(f"RunningMoments state 'm2' must be >= 0, got {m2!r}.")
        self.count = count
        self.mean = torch.tensor(mean, dtype=torch.float64)
        self.m2 = torch.tensor(m2, dtype=torch.float64)

    def _check(self, rewards: Tensor) -> Tensor:
        if rewards.ndim != 2 or rewards.shape[1] != self.num_dimensions or rewards.shape[0] == 0:
            raise ValueError(
                f"RunningMoments expects rewards of shape (n >= 1, {self.num_dimensions}), got {tuple(rewards.shape)}."
            )
        if not torch.isfinite(rewards).all():
            raise ValueError("RunningMoments got a non-finite reward; check the reward sources.")
        return rewards


# ------------------------------------------------------------------------------------------------------
# Advantages and KL


def rloo_advantages(rewards: Tensor, k: int) -> Tensor:
    """REINFORCE leave-one-out advantages (Ahmadian et al. 2024, arXiv 2402.14740; TRL's RLOOTrainer rule).

    rewards (n, m) or (n,), n = prompts · k, the k samples of a prompt in consecutive rows. Per prompt and
    dimension, A_j = r_j − (1/(k−1)) Σ_{l≠j} r_l = (k/(k−1)) (r_j − mean_l r_l). Same shape as `rewards`.
    k = 1 has no other sample to form a baseline and is refused (as TRL refuses it).
    """
    if not (isinstance(k, int) and k >= 2):
        raise ValueError(f"RLOO needs k >= 2 samples per prompt (its baseline is the other k − 1), got {k!r}.")
    if rewards.ndim not in (1, 2) or rewards.shape[0] % k:
        raise ValueError(f"rewards must be (prompts · k, m) or (prompts · k,), k = {k}, got {tuple(rewards.shape)}.")
    grouped = rewards.reshape(-1, k, *rewards.shape[1:])  # (prompts, k, m)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (k - 1)  # mean of the other k − 1 samples
    return (grouped - baseline).reshape(rewards.shape)


def kl_estimate(logprobs: Tensor, reference_logprobs: Tensor, estimator: KLEstimator = "k1") -> Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) on sampled tokens, same shape as the inputs (n, seq).

    k1 = log π − log π_ref; k3 = exp(−k1) − 1 + k1 (Schulman's "Approximating KL divergence" note; TRL and
    OpenRLHF name them so). Both are unbiased under sampling from π_θ; k3 is ≥ 0 with lower variance.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"KL estimator {estimator!r} is not one of {list(KL_ESTIMATORS)}.")
    log_ratio = logprobs - reference_logprobs
    if estimator == "k1":
        return log_ratio
    return torch.expm1(-log_ratio) + log_ratio


def kl_penalised_rewards(
    rewards: Tensor,
    logprobs: Tensor,
    reference_logprobs: Tensor,
    mask: Tensor,
    kl_coef: float,
    estimator: KLEstimator = "k1",
) -> Tensor:
    """r_i − β Σ_t KL_t for every dimension i, shape (n, m); TRL RLOO's placement of the KL (in the reward).

    rewards (n, m); log-probs (n, seq) of the sampled tokens under the rollout policy and the reference (the
    adapter disabled); mask (n, seq). The penalty is the same for every dimension, so
    Σ_i λ_i (r_i − β KL) = Σ_i λ_i r_i − β KL (J_RLHF,i = E r_i − β KL, Panacea). Default k1: as a detached
    reward, E[k1 ∇log π] is exactly ∇KL (the score-function identity), while k3 in the reward is not.
    Everything is detached: a reward carries no gradient.
    """
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef!r}.")
    _check_tokens(logprobs, reference_logprobs, mask)
    if rewards.ndim != 2 or rewards.shape[0] != logprobs.shape[0]:
        raise ValueError(f"rewards must be (n, m) with n = {logprobs.shape[0]}, got {tuple(rewards.shape)}.")
    kl = kl_estimate(logprobs, reference_logprobs, estimator)
    kl = torch.where(mask.bool(), kl, torch.zeros_like(kl)).sum(1)  # (n,); padding may hold anything
    return (rewards - kl_coef * kl.unsqueeze(1)).detach()


# ------------------------------------------------------------------------------------------------------
# The PPO-clip loss


def ppo_clipped_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    epsilon: float = 0.2,
    aggregation: Literal["sum", "mean"] = "mean",
    max_tokens: int | None = None,
) -> Tensor:
    """Per-(sample, dimension) PPO-clip loss (Schulman et al. 2017, arXiv 1707.06347), shape (n, m).

    u_t = exp(log π_θ(y_t) − log π_old(y_t)) per token, and the per-token term −min(u_t A_{b,i}, clip(u_t, 1 − ε,
    1 + ε) A_{b,i}) is reduced over b's response tokens by `aggregation`:

    - "mean": divided by b's own token count T_b (phase 1's rule). One epoch's gradient is then
      −A_{b,i} ∇ (1/T_b) Σ_t log π: every response weighs the same whatever its length, so a token of a short
      response moves the policy more than a token of a long one (Liu et al. 2025's per-length bias).
    - "sum": summed and divided by the constant `max_tokens` (the rollouts' max_new_tokens), Dr. GRPO's
      normaliser (Liu et al. 2025, arXiv 2503.20783). One epoch's gradient is −(A_{b,i}/max_tokens) ∇ Σ_t log π,
      the REINFORCE/RLOO estimator of Ahmadian et al. (TRL sums over tokens) up to a constant.

    logprobs (n, seq) with gradient; old_logprobs (n, seq), detached here; advantages (n, m), one per sample and
    dimension, or (n, seq, m) per token (PAMA's token reading); mask (n, seq).
    """
    if not 0 <= epsilon < 1:
        raise ValueError(f"PPO epsilon must be in [0, 1), got {epsilon!r}.")
    if aggregation not in TOKEN_AGGREGATIONS:
        raise ValueError(f"token aggregation {aggregation!r} is not one of {list(TOKEN_AGGREGATIONS)}.")
    if aggregation == "sum" and not (isinstance(max_tokens, int) and max_tokens >= 1):
        raise ValueError(f"token aggregation 'sum' divides by max_tokens, an integer >= 1; got {max_tokens!r}.")
    _check_tokens(logprobs, old_logprobs, mask)
    if advantages.ndim == 2 and advantages.shape[0] == logprobs.shape[0]:
        advantages = advantages.unsqueeze(1)  # (n, 1, m): the sample's advantage on every token
    elif advantages.ndim != 3 or advantages.shape[:2] != logprobs.shape:
        raise ValueError(
            f"advantages must be (n, m) or (n, seq, m) with (n, seq) = {tuple(logprobs.shape)}, "
            f"got {tuple(advantages.shape)}."
        )
    tokens = mask.sum(1)
    if (tokens == 0).any():
        raise ValueError("A response has no tokens in the mask; every response needs at least its end-of-turn token.")
    advantages = advantages.detach()
    # Padding gets u = 1 before the exp, so whatever a padded position holds (−inf included) stays out.
    log_ratio = torch.where(mask.bool(), logprobs - old_logprobs.detach(), torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio).unsqueeze(-1)  # (n, seq, 1)
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - epsilon, 1 + epsilon) * advantages)  # (n, seq, m)
    weights = mask.to(surrogate.dtype).unsqueeze(-1)  # (n, seq, 1)
    total = -(surrogate * weights).sum(1)  # (n, m)
    if aggregation == "sum":
        return total / max_tokens
    return total / tokens.to(surrogate.dtype).unsqueeze(-1)


def response_token_log_probs(model: nn.Module, batch: PairBatch, temperature: float = 1.0, **forward_kwargs) -> Tensor:
    """log π(y_t | x, y_<t) of every response token, (rows, seq − 1) aligned with `batch.input_ids[:, 1:]`, 0 at
    prompt and padding positions; fp32, with gradient unless the caller disables it.

    The logits are divided by the sampling temperature first (TRL's RLOO does the same for the policy and the
    reference), so the ratio and the KL are those of the distribution the rollouts were drawn from (top-p's
    truncation is not modelled, as in TRL). The output head sees only the predicting positions
    (`panacea.training.logprobs`). `forward_kwargs` go to the model's forward (e.g. `preference=`).
    """
    predicts = batch.response_mask[:, 1:]  # hidden state t predicts token t + 1
    rows, columns = predicts.nonzero(as_tuple=True)
    with _output_head_sees(model, rows, columns):
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, **forward_kwargs
        ).logits[0]  # (N, vocab)
    targets = batch.input_ids[:, 1:][predicts]
    token_logps = -F.cross_entropy(logits.float() / temperature, targets, reduction="none")  # (N,)
    return torch.zeros(predicts.shape, dtype=token_logps.dtype, device=token_logps.device).index_put(
        (rows, columns), token_logps
    )


def rollout_seed(seed: int, step: int, row: int) -> int:
    """The seed of rollout row `row` at `step`: a function of (seed, step, row) alone (numpy's SeedSequence
    mixing), so a resumed run redraws the same tokens and a row's draw does not depend on its batch-mates."""
    low, high = np.random.SeedSequence([seed, step, row]).generate_state(2)
    return (int(high) << 32 | int(low)) & (2**63 - 1)


def _check_tokens(logprobs: Tensor, other: Tensor, mask: Tensor) -> None:
    if logprobs.ndim != 2 or other.shape != logprobs.shape or mask.shape != logprobs.shape:
        raise ValueError(
            "per-token inputs must share one (n, seq) shape, got "
            f"{tuple(logprobs.shape)}, {tuple(other.shape)} and mask {tuple(mask.shape)}."
        )


# ------------------------------------------------------------------------------------------------------
# PAMA (He & Maghsudi, arXiv 2508.07768, ECML/PKDD 2025). The paper body could not be read: the rules below
# follow third-party reading notes of the full paper and a third-party port (yining610/ctwa,
# verl/trainer/ppo/ray_trainer_pama.py), which agree. The λ-scaled variant is ours.


def noon_advantages(advantages: Tensor) -> Tensor:
    """Noon PPO (PAMA): A = max(A', 0) elementwise; negative advantages are set to zero."""
    return advantages.clamp(min=0)


def pama_indicator(advantages: Tensor, ratio: Tensor, epsilon: float) -> Tensor:
    """I(A) = A where u ≤ 1 + ε, else 0 (PAMA, third-party notes): tokens PPO's clip already stops are dropped.

    advantages (..., m); ratio u (...), broadcast over the m dimensions.
    """
    return torch.where((ratio <= 1 + epsilon).unsqueeze(-1), advantages, torch.zeros_like(advantages))


def pama_weights(values: Tensor) -> tuple[Tensor, Tensor]:
    """PAMA's Theorem 1 (third-party notes): min_{c ∈ Δ} (Σ_i c_i v_i)² over the last axis of `values` (..., m).

    The optimum s* = Σ c_i v_i is the projection of 0 onto [min_i v_i, max_i v_i]; returns (s* (...), c (..., m)).
    c puts all weight on the arg min when min ≥ 0, on the arg max when max ≤ 0, and otherwise splits it between
    them so that they cancel: c_min = max / (max − min), c_max = −min / (max − min). Ties go to the first index.
    """
    low, low_index = values.min(-1)
    high, high_index = values.max(-1)
    span = (high - low).clamp(min=torch.finfo(values.dtype).tiny)
    straddles = (low < 0) & (high > 0)
    low_weight = torch.where(straddles, high / span, (low >= 0).to(values.dtype))
    high_weight = torch.where(straddles, -low / span, (high <= 0).to(values.dtype) * (low < 0))
    weights = torch.zeros_like(values)
    weights.scatter_add_(-1, low_index.unsqueeze(-1), low_weight.unsqueeze(-1))
    weights.scatter_add_(-1, high_index.unsqueeze(-1), high_weight.unsqueeze(-1))
    return low.clamp(min=0) + high.clamp(max=0), weights  # the projection of 0 onto [low, high]


def pama_indicated(
    advantages: Tensor, ratio: Tensor, mask: Tensor, epsilon: float = 0.2, preference: Tensor | None = None
) -> Tensor:
    """Noon's and I(·)'s advantages (n, seq, m), λ-scaled with `preference`: what PAMA's Theorem 1 combines.

    advantages A' (n, m) per sample or (n, seq, m) per token; ratio u (n, seq) (detached); mask (n, seq). Noon
    clamps A' at 0, I(·) drops tokens with u > 1 + ε. `preference` λ (n, m) per sample is **ours**: λ_{b,i} I(A⁽ⁱ⁾),
    so λ still steers which objective is followed.
    """
    if advantages.ndim == 2:
        advantages = advantages.unsqueeze(1).expand(-1, ratio.shape[1], -1)  # (n, seq, m)
    _check_tokens(ratio, ratio, mask)
    if advantages.shape[:2] != ratio.shape:
        raise ValueError(f"advantages must be (n, m) or (n, seq, m) with (n, seq) = {tuple(ratio.shape)}.")
    indicated = pama_indicator(noon_advantages(advantages.detach()), ratio.detach(), epsilon)  # (n, seq, m)
    if preference is not None:
        if preference.shape != (advantages.shape[0], advantages.shape[2]):
            raise ValueError(f"preference must be (n, m) = {(advantages.shape[0], advantages.shape[2])}.")
        indicated = indicated * preference.unsqueeze(1).to(indicated)
    return indicated


def pama_token_sums(indicated: Tensor, mask: Tensor) -> Tensor:
    """(Σ over response tokens of each I⁽ⁱ⁾, the number of response tokens), shape (m + 1,), float64: summed over
    micro-batches (and processes), their ratio is the masked means that 'batch' granularity combines."""
    weights = mask.to(indicated.dtype).unsqueeze(-1)
    return torch.cat([(indicated * weights).sum((0, 1)), weights.sum().reshape(1)]).double()


def pama_batch_value(sums: Tensor) -> Tensor:
    """s* of 'batch' granularity from `pama_token_sums` (..., m + 1): Theorem 1 on the masked means of I⁽ⁱ⁾."""
    return pama_weights(sums[..., :-1] / sums[..., -1:].clamp(min=1))[0]


def pama_combine(
    advantages: Tensor,
    ratio: Tensor,
    mask: Tensor,
    epsilon: float = 0.2,
    granularity: Literal["token", "batch"] = "token",
    preference: Tensor | None = None,
) -> Tensor:
    """PAMA's combined advantage s*, shape (n, seq): one PPO loss on it replaces the per-dimension losses.

    `pama_indicated` forms the Noon, I(·) and (with `preference`, ours) λ-scaled advantages, then Theorem 1
    (`pama_weights`) picks s*. `granularity`: "token" applies it to every token's (I⁽¹⁾_t … I⁽ᵐ⁾_t); "batch" (the
    port's reading) applies it once to the masked means of I⁽ⁱ⁾ over all of these tokens and puts that s* on every
    token. The paper reads either way (third-party notes), so both are offered. `preference` None is PAMA as
    published (no λ).
    """
    if granularity not in PAMA_GRANULARITIES:
        raise ValueError(f"PAMA granularity {granularity!r} is not one of {list(PAMA_GRANULARITIES)}.")
    indicated = pama_indicated(advantages, ratio, mask, epsilon, preference)
    if granularity == "token":
        return pama_weights(indicated)[0] * mask
    return pama_batch_value(pama_token_sums(indicated, mask)).to(indicated) * mask


# ------------------------------------------------------------------------------------------------------
# Reward sources: each is called as reward(prompts, responses) -> Tensor (n,), float32 on the CPU.
# Fields marked "context" are runtime objects `build_reward` passes in, not keys of a spec.


@dataclass
class LengthReward:
    """−(response length): fewer words (or tokens) score higher; for a `concise` dimension."""

    unit: Literal["words", "tokens"] = field(default="words", metadata={"help": "Count whitespace words or tokens."})
    tokenizer: Any = field(
        default=None, repr=False, metadata={"help": "Counts tokens (unit 'tokens').", "context": True}
    )

    def __post_init__(self) -> None:
        if self.unit not in ("words", "tokens"):
            raise ValueError(f"LengthReward.unit must be 'words' or 'tokens', got {self.unit!r}.")
        if self.unit == "tokens" and self.tokenizer is None:
            raise ValueError("LengthReward.unit 'tokens' needs a tokenizer.")

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> Tensor:
        _check_texts(prompts, responses)
        if self.unit == "words":
            lengths = [len(response.split()) for response in responses]
        else:
            lengths = [len(ids) for ids in self.tokenizer(list(responses), add_special_tokens=False)["input_ids"]]
        return -torch.tensor(lengths, dtype=torch.float32)


@dataclass
class RefusalReward:
    """1 when `panacea.eval.refusal.is_refusal` calls the response a refusal, else 0 (harmless by refusal)."""

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> Tensor:
        from panacea.eval.refusal import is_refusal

        _check_texts(prompts, responses)
        return torch.tensor([float(is_refusal(response)) for response in responses])


@dataclass
class CallableReward:
    """A user function `fn(prompts, responses)` returning n numbers, named as 'package.module:function'."""

    function: str = field(metadata={"help": "'module:function', importable from the working environment."})

    def __post_init__(self) -> None:
        module_name, _, attribute = self.function.partition(":")
        if not module_name or not attribute:
            raise ValueError(f"CallableReward.function must be 'module:function', got {self.function!r}.")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"CallableReward.function {self.function!r} cannot be loaded: {error}.") from None
        if not callable(target):
            raise ValueError(f"CallableReward.function {self.function!r} is a {type(target).__name__}, not callable.")
        self._function: Callable[[Sequence[str], Sequence[str]], Any] = target

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> Tensor:
        _check_texts(prompts, responses)
        rewards = torch.as_tensor(self._function(list(prompts), list(responses)), dtype=torch.float32).cpu()
        if rewards.shape != (len(responses),):
            raise ValueError(
                f"{self.function} returned shape {tuple(rewards.shape)} for {len(responses)} responses; "
                f"it must return one number per response."
            )
        return rewards


@dataclass
class SequenceClassifierReward:
    """A Hugging Face `AutoModelForSequenceClassification` reward model; one logit per response.

    Text: the tokenizer's chat template on [user: prompt, assistant: response] when it has one (what chat
    reward models are trained on), else `prompt + "\\n" + response`. Right-truncated to `max_length`; batched,
    without gradient. The model's output at `label` (default: its only one) is the reward.
    """

    name_or_path: str = field(metadata={"help": "A model id or a local folder with model and tokenizer."})
    label: int | None = field(default=None, metadata={"help": "Logit index; None needs a single-label model."})
    batch_size: int = field(default=8, metadata={"help": "Responses per forward."})
    max_length: int | None = field(default=None, metadata={"help": "Truncate to this many tokens (None: no cut)."})
    device: str = field(default="cpu", metadata={"help": "Where the reward model runs."})

    def __post_init__(self) -> None:
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"SequenceClassifierReward.batch_size must be an integer >= 1, got {self.batch_size!r}.")
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
            self._model = AutoModelForSequenceClassification.from_pretrained(self.name_or_path).to(self.device).eval()
        except Exception as error:  # not only OSError/ValueError: safetensors' own error, a device torch lacks, …
            raise ValueError(
                f"SequenceClassifierReward.name_or_path {self.name_or_path!r} does not load as a sequence classifier "
                f"with a tokenizer: {error}"
            ) from None
        labels = self._model.config.num_labels
        if (self.label is None and labels != 1) or (self.label is not None and not 0 <= self.label < labels):
            raise ValueError(
                f"SequenceClassifierReward.label {self.label!r} does not pick one of {self.name_or_path}'s "
                f"{labels} outputs; give label (0 … {labels - 1}), or None for a single-output model."
            )
        pad = self._tokenizer.pad_token_id
        if pad is None:
            pad = self._model.config.pad_token_id
        if pad is None:
            raise ValueError(f"{self.name_or_path} has no pad token in its tokenizer or config; batches need one.")
        self._tokenizer.pad_token_id = pad
        self._model.config.pad_token_id = pad  # the model finds each row's last non-pad token by it

    def _texts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
        if not getattr(self._tokenizer, "chat_template", None):
            return [f"{prompt}\n{response}" for prompt, response in zip(prompts, responses, strict=True)]
        return [
            self._tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
            )
            for prompt, response in zip(prompts, responses, strict=True)
        ]

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> Tensor:
        _check_texts(prompts, responses)
        texts = self._texts(prompts, responses)
        special = not getattr(self._tokenizer, "chat_template", None)  # a template already holds its specials
        rewards = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=self.max_length is not None,
                max_length=self.max_length,
                add_special_tokens=special,
                return_tensors="pt",
            ).to(self.device)
            logits = self._model(**batch).logits.float()  # (batch, labels)
            rewards.append(logits[:, self.label or 0].cpu())
        return torch.cat(rewards)


@dataclass
class ProjectRewardModel:
    """The in-project Bradley–Terry head (`panacea.eval.reward_model`) on the frozen base model's features.

    Either `path`, a folder written by `RewardModel.save`, or `train` and `test` pair sources (PairSource fields):
    the head is then fitted now by `train_reward_model`, as `panacea eval` fits its judges (max_length 256,
    max_prompt_length 128, its weight decay and seed), and cached by content, so a later run reads it at once.
    Scoring is `score_responses`, which checks that `model` is the base model the head was trained on and runs it
    with the adapter disabled.
    """

    path: str | None = field(default=None, metadata={"help": "A reward-model folder; or give train and test."})
    train: list[dict[str, Any]] | None = field(
        default=None, metadata={"help": "Pair sources the head is fitted on (PairSource fields), with test."}
    )
    test: list[dict[str, Any]] | None = field(
        default=None, metadata={"help": "Held-out pair sources its accuracy is measured on (logged)."}
    )
    max_length: int = field(default=256, metadata={"help": "Fitting: prompt + response tokens (eval's 256)."})
    max_prompt_length: int = field(default=128, metadata={"help": "Fitting: prompt tokens (eval's 128)."})
    batch_size: int = field(default=8, metadata={"help": "Responses per forward of the base model."})
    model: Any = field(default=None, repr=False, metadata={"help": "The base model (or the policy).", "context": True})
    tokenizer: Any = field(default=None, repr=False, metadata={"help": "Its tokenizer.", "context": True})
    dimension: str | None = field(
        default=None, metadata={"help": "The dimension it scores: the pairs' default dim.", "context": True}
    )
    dimensions: Sequence[str] = field(
        default=(), repr=False, metadata={"help": "The run's dimensions (the dims a file may hold).", "context": True}
    )

    def __post_init__(self) -> None:
        from panacea.eval.reward_model import RewardModel

        if self.model is None or self.tokenizer is None:
            raise ValueError("ProjectRewardModel needs the base model and its tokenizer (build_reward's context).")
        if (self.path is None) == (self.train is None and self.test is None):
            raise ValueError(
                "ProjectRewardModel needs either path (a saved reward model) or train and test (pair sources to fit "
                f"one on), not {'both' if self.path is not None else 'neither'}."
            )
        if self.path is not None:
            try:
                self._reward_model = RewardModel.load(self.path)
            except (FileNotFoundError, ValueError) as error:
                raise ValueError(f"ProjectRewardModel.path {self.path!r}: {error}") from None
        else:
            self._reward_model = self._fit()

    def _fit(self) -> Any:
        from panacea.eval.reward_model import train_reward_model

        sources, known = fit_sources(self.train, self.test, self.dimension, self.dimensions)  # refuses bad sources
        if not self.dimension:
            raise ValueError("ProjectRewardModel.train needs the dimension it scores (build_reward's context).")
        reward_model = train_reward_model(
            self.model,
            self.tokenizer,
            self.dimension,
            sources["train"],
            sources["test"],
            max_length=self.max_length,
            max_prompt_length=self.max_prompt_length,
            batch_size=self.batch_size,
            known_dimensions=known,
        )
        logger.info("reward for %s: %s", self.dimension, reward_model.summary())
        return reward_model

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> Tensor:
        from panacea.eval.reward_model import score_responses

        _check_texts(prompts, responses)
        return score_responses(
            self._reward_model, self.model, self.tokenizer, prompts, responses, batch_size=self.batch_size
        ).cpu()


def fit_sources(
    train: Any, test: Any, dimension: str | None, dimensions: Sequence[str]
) -> tuple[dict[str, list[PairSource]], list[str]]:
    """A fitted ProjectRewardModel's pair sources ({"train": …, "test": …}, from their settings) and the dimensions
    its pairs are read under (its own first, then the run's, then any a source names)."""
    sources = {}
    for name, items in (("train", train), ("test", test)):
        if not isinstance(items, list) or not items:
            raise ValueError(f"ProjectRewardModel.{name} must be a non-empty list of pair sources, got {items!r}.")
        sources[name] = [
            dataclass_from_dict(PairSource, item, where=f"ProjectRewardModel.{name}.{index}")
            for index, item in enumerate(items)
        ]
    named = [source.dim for source in sources["train"] + sources["test"] if source.dim]
    return sources, list(dict.fromkeys([dimension, *dimensions, *named]))


def reward_fit_sources(
    spec: Any, dimension: str, dimensions: Sequence[str]
) -> tuple[dict[str, list[PairSource]], list[str]]:
    """The pair sources `spec`'s reward is fitted on at start-up (a `reward_model` with train and test; `fit_sources`),
    else ({}, []): a saved head, a classifier, a rule or a callable reads no pairs."""
    if not isinstance(spec, Mapping) or spec.get("type") != "reward_model" or spec.get("path") is not None:
        return {}, []
    return fit_sources(spec.get("train"), spec.get("test"), dimension, dimensions)


def reward_folder(spec: Any) -> Path | None:
    """The local folder `spec`'s reward loads at start-up — a saved `reward_model`'s path, a `classifier` named by a
    local folder — else None: a fitted head reads pairs (`reward_fit_sources`), and a hub id, a rule or a callable
    read no folder of ours. A `reward_model` path that is no folder is refused here, as loading it would be."""
    if not isinstance(spec, Mapping):
        return None
    if spec.get("type") == "reward_model" and spec.get("path") is not None:
        if not (folder := Path(spec["path"]).expanduser()).is_dir():
            raise ValueError(f"ProjectRewardModel.path {spec['path']!r} is not a folder written by RewardModel.save.")
        return folder
    if spec.get("type") == "classifier" and isinstance(name := spec.get("name_or_path"), str):
        return folder if (folder := Path(name).expanduser()).is_dir() else None
    return None


REWARDS: dict[str, type] = {
    "length": LengthReward,
    "refusal": RefusalReward,
    "callable": CallableReward,
    "classifier": SequenceClassifierReward,
    "reward_model": ProjectRewardModel,
}  # the only list of reward kinds


def check_reward_spec(spec: Any, where: str = "reward") -> tuple[type, dict[str, Any]]:
    """The reward class a spec names and its settings, without loading anything (a config checks its specs so).

    One ValueError names `where`, the bad key and what was expected: not a mapping, an unknown type, an unknown
    key, or a runtime object (e.g. `tokenizer`) given as a setting.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a mapping with a 'type' key, got {type(spec).__name__} {spec!r}.")
    kind = spec.get("type")
    if kind not in REWARDS:
        raise ValueError(f"{where}.type: {kind!r} is not one of {sorted(REWARDS)}.")
    cls = REWARDS[kind]
    settings = {f.name for f in fields(cls) if not f.metadata.get("context")}
    unknown = sorted(set(spec) - settings - {"type"}, key=str)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for type {kind!r}; it accepts {sorted(settings)}.")
    return cls, {key: value for key, value in spec.items() if key != "type"}


def build_reward(spec: Mapping[str, Any], *, where: str = "reward", **context: Any) -> Callable[..., Tensor]:
    """The reward source a spec names, e.g. {"type": "length", "unit": "words"}, loaded now (fails at start-up).

    `context` holds runtime objects (`tokenizer`, `model`, `dimension`, `dimensions`) passed to the sources that
    declare them. One ValueError names `where`, the bad key and what was expected.
    """
    cls, arguments = check_reward_spec(spec, where)
    runtime = {f.name for f in fields(cls) if f.metadata.get("context")}
    arguments |= {key: value for key, value in context.items() if key in runtime}
    try:
        return cls(**arguments)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where} ({spec['type']}): {error}") from None


def _check_texts(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if isinstance(prompts, str) or isinstance(responses, str) or len(prompts) != len(responses):
        raise ValueError("A reward takes equal-length sequences of prompts and responses (not single strings).")
