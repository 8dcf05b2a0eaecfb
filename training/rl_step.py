"""One RL step: one rollout batch, then rl.ppo_epochs updates (objective 'rl'; docs/algorithms.md §8).

The step draws a λ per prompt (`draw_rollout_preferences`), samples K responses per prompt in one mixed-λ call,
scores every response with every dimension's reward, normalises the rewards with the running moments and turns
them into KL-penalised RLOO advantages. Each PPO epoch then forwards the batch in micro-batches and
back-propagates the per-dimension PPO losses (or PAMA's one combined loss) into the same gradient buffers,
scalarisers and aggregators as a DPO step (`update.write_update`). With one epoch and no dropout the update's own
forward stands in for the separate π_old pass.

Several processes split the batch by whole prompts (`check_rollout_split`), each sampling, scoring and forwarding
its own rows; the raw rewards are gathered, so that every process normalises, checks and logs the whole batch.
The maths is `panacea.training.rl`; `trainer.train` calls `rl_step` once per step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from panacea.adapters import PanaceaModel
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from panacea.data import TokenizedPair, load_prompt_source, tokenize_prompts
from panacea.generation import eos_token_ids, sample_responses
from panacea.preferences import sample_preferences
from panacea.serving.sampling import row_generator

from ._distributed import all_gather, sum_over_processes
from .config import TrainConfig
from .draws import SeededStream, draw_preferences
from .logprobs import PairBatch, collate_pairs
from .rl import (
    RunningMoments,
    build_reward,
    kl_estimate,
    kl_penalised_rewards,
    pama_batch_value,
    pama_combine,
    pama_indicated,
    pama_token_sums,
    ppo_clipped_loss,
    response_token_log_probs,
    rloo_advantages,
    rollout_seed,
)
from .scalarisation import Scalarizer
from .update import GradientBuffers, TrainingError, check_finite, write_update

logger = logging.getLogger(__name__)


@dataclass
class Rollouts:
    """One process's share of a step's rollout batch, and what the whole batch decides.

    The batch is n = prompts · K rows, a prompt's K rows consecutive, λ-groups of consecutive prompts; a process
    holds the rows [first_row, first_row + rows), whole prompts (all n in one process). `batches` are the update's
    forwards (micro_batch_size rows each, prompt + response, right-padded) and `old_logprobs` their response
    tokens' log π_old, (rows, seq − 1) each, 0 off the response. When the update's own forward gives π_old
    (`_old_logprobs_from_update`), `old_logprobs` and `advantages` are None and each micro-batch forms them in the
    update from `reference_logprobs` and `normalised`.
    """

    batches: list[PairBatch]
    old_logprobs: list[Tensor] | None
    preferences: Tensor  # (rows, m): each row's λ (its prompt's)
    groups: Tensor  # (G, m): the step's group λs (per_sample: their mean, for the logs)
    advantages: Tensor | None  # (rows, m): RLOO on the KL-penalised normalised rewards; 0 for dimensions of weight 0
    levels: Tensor  # (G, m): −(mean normalised reward) per λ-group of the whole batch, Tchebycheff's levels
    first_row: int  # this process's first row in the batch: with rows_total, each micro-batch's λ-group
    rows_total: int  # n, every process's rows: the unit losses divide by a λ-group's rows in the whole batch
    reference_logprobs: list[Tensor] | None = None  # log π_ref per batch, (rows, seq − 1); with old_logprobs None
    normalised: Tensor | None = None  # (rows, m): r̃, the rewards after the running moments; with old_logprobs None


def draw_rollout_preferences(config: TrainConfig, step: int) -> tuple[Tensor, Tensor]:
    """(λ per prompt (prompts_per_step, m), the group λs (G, m)) for RL `step`, seeded by (seed, step).

    'per_sample': one draw per prompt (ours; the group row is their mean, for the logs); otherwise `draw_preferences`'s
    λ per group, shared by the group's consecutive prompts. The K responses of a prompt share its λ (§8).
    """
    prompts = config.rl.prompts_per_step
    if config.preference_sampling == "per_sample":
        rng = np.random.default_rng([config.seed, step])
        rows = sample_preferences(len(config.dimensions), prompts, concentration=config.dirichlet_alpha, rng=rng)
        return rows, rows.mean(0, keepdim=True)
    groups = draw_preferences(config, step).groups
    return groups.repeat_interleave(prompts // len(groups), dim=0), groups


def rl_step(
    config: TrainConfig,
    step: int,
    model: PanaceaModel,
    tokenizer: PreTrainedTokenizerBase,
    source: RolloutSource,
    moments: RunningMoments,
    scalarizer: Scalarizer,
    buffers: GradientBuffers,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    accelerator: Accelerator,
) -> dict[str, float]:
    """Sample and score one rollout batch, then `ppo_epochs` updates on it, each like a DPO step's."""
    rollouts, metrics = _collect_rollouts(config, step, model, tokenizer, source, moments, accelerator)
    pama = config.rl.advantage_combiner != "none"
    started, tokens = time.perf_counter(), 0
    for _ in range(config.rl.ppo_epochs):
        epoch_metrics, unit_losses = _rl_accumulate(config, model, rollouts, scalarizer, buffers, accelerator)
        check_finite(unit_losses, step, config, names=["PAMA"] * len(config.dimensions) if pama else None)
        levels = rollouts.levels if scalarizer.name == "tche" else None  # Tchebycheff's arg max on rewards (§8)
        metrics |= epoch_metrics | write_update(
            config, step, model, scalarizer, buffers, unit_losses, rollouts.groups, levels
        )
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += epoch_metrics["tokens"]
    # Every process's tokens over this process's seconds (the main process's are logged), as for the rollouts.
    metrics.update(tokens=tokens, update_tokens_per_second=tokens / (time.perf_counter() - started))
    return metrics


def _collect_rollouts(
    config: TrainConfig,
    step: int,
    model: PanaceaModel,
    tokenizer: PreTrainedTokenizerBase,
    source: RolloutSource,
    moments: RunningMoments,
    accelerator: Accelerator,
) -> tuple[Rollouts, dict[str, float]]:
    """Generate this process's rows of the step's batch, score them, and form the advantages; eval mode, no grad.

    The raw rewards of every process are gathered: the running moments are updated with the whole batch (alike on
    every process) and normalise it, and its normalised rewards give Tchebycheff's levels and the logs. The KL
    (policy vs the adapter disabled, per response token) enters the reward in the process that sampled the row (§8).
    """
    rl, m = config.rl, len(config.dimensions)
    per_prompt, groups = draw_rollout_preferences(config, step)
    preferences = per_prompt.repeat_interleave(rl.rollouts_per_prompt, dim=0)  # (n, m): a prompt's K rows share it
    prompts = source.indices(step * rl.prompts_per_step + torch.arange(rl.prompts_per_step))
    prompts = prompts.repeat_interleave(rl.rollouts_per_prompt).tolist()  # (n,) the prompt of each row
    local = _process_rows(len(prompts), accelerator)  # this process's rows: whole prompts
    preferences, prompts = preferences[local], prompts[local]  # (rows, m), (rows,)
    model.eval()  # rollouts and π_old without dropout
    try:
        responses, metrics = _sample_rollouts(
            config, step, model, tokenizer, source, prompts, preferences, local, accelerator
        )
        texts = [text.strip() for text in tokenizer.batch_decode(responses, skip_special_tokens=True)]
        rewards, metrics["scoring_seconds"] = _score_rollouts(config, source, prompts, texts)  # (rows, m) raw
        rewards = _gather_rewards(config, step, rewards, accelerator)  # (n, m): every process's, checked
        moments.update(rewards)
        normalised = moments.normalise(rewards)  # (n, m)
        rows = [
            TokenizedPair(str(local.start + row), source.prompt_ids[prompt], response, [])
            for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True))
        ]
        micro = config.micro_batch_size  # the update's forwards: consecutive rows, so each lies in one λ-group
        batches = [
            collate_pairs(rows[start : start + micro], tokenizer.pad_token_id, with_rejected=False).to(
                accelerator.device
            )
            for start in range(0, len(rows), micro)
        ]
        fused = _old_logprobs_from_update(config, model)
        old_logprobs, references = _rollout_log_probs(config, model, batches, preferences, accelerator, old=not fused)
    finally:
        model.train()
    for i, (name, trained) in enumerate(zip(config.dimension_names, config.trained_dimensions, strict=True)):
        if trained:
            metrics[f"reward/{name}"] = float(rewards[:, i].mean())
            metrics[f"reward_normalised/{name}"] = float(normalised[:, i].mean())
    # Tchebycheff's levels on the normalised rewards (ours, §8): (G, m), each group's rows are consecutive
    levels = -normalised.view(len(groups), -1, m).mean(1)
    rollouts = Rollouts(batches, old_logprobs, preferences, groups, None, levels, local.start, len(rewards))
    if fused:  # the update forms the KL-penalised rewards and advantages per micro-batch (and logs the KL)
        rollouts.reference_logprobs, rollouts.normalised = references, normalised[local]
    else:
        rollouts.advantages, metrics["kl"] = _rollout_advantages(
            config, rollouts, references, normalised[local], accelerator
        )
    return rollouts, metrics


def _process_rows(n: int, accelerator: Accelerator) -> slice:
    """This process's rows of a rollout batch of n: the p-th of W equal runs (whole prompts: `check_rollout_split`)."""
    share = n // accelerator.num_processes
    return slice(accelerator.process_index * share, (accelerator.process_index + 1) * share)


def _sample_rollouts(
    config: TrainConfig,
    step: int,
    model: PanaceaModel,
    tokenizer: PreTrainedTokenizerBase,
    source: RolloutSource,
    prompts: list[int],
    preferences: Tensor,
    rows: slice,
    accelerator: Accelerator,
) -> tuple[list[list[int]], dict[str, float]]:
    """The responses (token ids) of the batch's `rows`, in one mixed-λ call, and their length and speed metrics.

    Row r of the step's batch samples with its own generator seeded by (seed, step, r) (`rollout_seed`), so a
    resumed run, or a run in any number of processes, draws the same batch with no RNG state.
    """
    rl = config.rl
    generators = [
        row_generator(rollout_seed(config.seed, step, row), accelerator.device) for row in range(rows.start, rows.stop)
    ]
    started = time.perf_counter()
    with accelerator.autocast():
        responses = sample_responses(
            model,
            [source.prompt_ids[prompt] for prompt in prompts],
            preferences,
            generators,
            max_new_tokens=rl.max_new_tokens,
            temperature=rl.temperature,
            top_p=rl.top_p,
            eos_token_ids=eos_token_ids(model, tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
    seconds = time.perf_counter() - started
    generated = torch.tensor(float(sum(len(response) for response in responses)), dtype=torch.float64)
    sum_over_processes(accelerator, generated)  # every process's response tokens
    return responses, {
        "response_length": float(generated) / (len(responses) * accelerator.num_processes),
        # Every process's tokens over this process's seconds (the main process's are logged): the processes sample
        # at once, so this is the run's rate.
        "rollout_tokens_per_second": float(generated) / seconds,
    }


def _rollout_advantages(
    config: TrainConfig, rollouts: Rollouts, references: list[Tensor], normalised: Tensor, accelerator: Accelerator
) -> tuple[Tensor, float]:
    """(RLOO advantages (rows, m) of this process's rows after the separate π_old pass, the whole batch's mean KL).

    references: log π_ref per batch of `rollouts`; normalised: r̃ of this process's rows (rows, m).
    """
    batches, penalised, kl = rollouts.batches, [], torch.zeros((), dtype=torch.float64)  # kl: Σ_b Σ_t KL_t
    pieces = zip(batches, rollouts.old_logprobs, references, _row_slices(batches), strict=True)
    with _stopping_together(accelerator):
        for batch, old, reference, rows in pieces:
            batch_penalised, batch_kl = _penalised_rewards(config, old, reference, batch, normalised[rows])
            penalised.append(batch_penalised.cpu())
            kl += batch_kl.double().sum().cpu()
    sum_over_processes(accelerator, kl)
    return _advantages(config, torch.cat(penalised)), float(kl) / rollouts.rows_total


def _old_logprobs_from_update(config: TrainConfig, model: nn.Module) -> bool:
    """Whether the update's own forward stands in for the π_old pass, as TRL's RLOO skips that pass (§8).

    With one PPO epoch π_old is π_θ at the update, so log π_old is the update forward's log-probs, detached
    (u = 1). That needs the train-mode forward to equal the eval-mode pass, i.e. no dropout: no dropout module
    with p > 0 (the adapter's or the base model's) and no positive `*dropout*` setting in the model config (Llama's
    `attention_dropout`, Falcon's `hidden_dropout` are applied functionally, in train mode only; a setting that
    never acts only costs the saving). And every micro-batch must hold whole prompts, so that each row's
    leave-one-out baseline lies in its micro-batch. Otherwise π_old is a separate pass.
    """
    rl = config.rl
    settings = model.config.to_dict() if hasattr(model.config, "to_dict") else {}
    dropout = any(
        isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0 for module in model.modules()
    ) or any("dropout" in name and isinstance(value, (int, float)) and value > 0 for name, value in settings.items())
    return rl.ppo_epochs == 1 and not dropout and config.micro_batch_size % rl.rollouts_per_prompt == 0


@torch.no_grad()
def _rollout_log_probs(
    config: TrainConfig,
    model: PanaceaModel,
    batches: list[PairBatch],
    preferences: Tensor,
    accelerator: Accelerator,
    *,
    old: bool,
) -> tuple[list[Tensor] | None, list[Tensor]]:
    """(log π_old per batch, or None without `old`; log π_ref per batch), each (rows, seq − 1), without gradient.

    π_old is the policy at each row's λ, π_ref the base model (the adapter disabled, as for DPO); both of logits /
    temperature.
    """
    temperature = config.rl.temperature
    old_logprobs, references = [], []
    for batch, rows in zip(batches, _row_slices(batches), strict=True):
        with accelerator.autocast():
            if old:
                preference = _one_or_rows(preferences[rows])
                old_logprobs.append(response_token_log_probs(model, batch, temperature, preference=preference))
            with model.disable_adapter():
                references.append(response_token_log_probs(model, batch, temperature))
    return (old_logprobs if old else None), references


def _penalised_rewards(
    config: TrainConfig, old: Tensor, reference: Tensor, batch: PairBatch, normalised: Tensor
) -> tuple[Tensor, Tensor]:
    """(r̂ = r̃ − β Σ_t KL_t (rows, m), Σ_t KL_t (rows,)) of one micro-batch, on the log-probs' device, detached.

    old, reference: log π_old and log π_ref of the batch's response tokens (rows, seq − 1); normalised: r̃ (rows, m).
    """
    rl, mask = config.rl, batch.response_mask[:, 1:]
    old, reference = old.detach(), reference.to(old.device)
    kl = torch.where(mask, kl_estimate(old, reference, rl.kl_estimator), 0.0).sum(1)
    if (bad := ~torch.isfinite(kl)).any():  # else every advantage turns NaN, and the error blames a dimension's loss
        finite = bool(
            torch.isfinite(torch.where(mask, old, 0.0)).all()
            and torch.isfinite(torch.where(mask, reference, 0.0)).all()
        )
        why = (
            f"the policy's and the reference's log-probs are finite, so the estimator {rl.kl_estimator!r} "
            "overflowed (a per-token log-ratio beyond ~88: the policy has left the reference)"
            if finite
            else "the policy's or the reference's log-probs of their responses are not finite"
        )
        raise TrainingError(
            f"the KL to the reference is {float(kl[bad][0])} for {int(bad.sum())} of {len(kl)} rollouts: {why}; "
            "stopped before the update, the last checkpoint is intact."
        )
    penalised = kl_penalised_rewards(normalised.to(old.device), old, reference, mask, rl.kl_coef, rl.kl_estimator)
    return penalised, kl


@contextmanager
def _stopping_together(accelerator: Accelerator) -> Iterator[None]:
    """Run the block; a TrainingError in it (a non-finite KL of this process's rows) stops every process.

    The error is raised on every process once each has finished the block (its process names the rows, the others
    point to it), so that no process waits alone in the step's next collective. One process: raised at once.
    """
    if accelerator.num_processes == 1:
        yield
        return
    error: TrainingError | None = None
    try:
        yield
    except TrainingError as raised:
        error = raised
    stopped = torch.tensor(float(error is not None))
    sum_over_processes(accelerator, stopped)
    if error is not None:
        raise error
    if stopped > 0:
        raise TrainingError(
            "another process's rollouts stopped this step (its error names them); stopped before the update, the "
            "last checkpoint is intact."
        )


def _advantages(config: TrainConfig, penalised: Tensor) -> Tensor:
    """RLOO advantages (rows, m) of KL-penalised rewards r̂ (rows, m) of whole prompts; 0 in dimensions of weight 0."""
    advantages = rloo_advantages(penalised, config.rl.rollouts_per_prompt)
    untrained = ~torch.tensor(config.trained_dimensions, device=advantages.device)
    advantages[:, untrained] = 0.0  # weight 0 under 'fixed': no signal, not even KL
    return advantages


def _row_slices(batches: list[PairBatch]) -> list[slice]:
    """Each batch's rows in the rollout batch (batches are consecutive rows)."""
    ends = np.cumsum([0] + [batch.num_pairs for batch in batches]).tolist()
    return [slice(start, stop) for start, stop in zip(ends[:-1], ends[1:], strict=True)]


def _score_rollouts(
    config: TrainConfig, source: RolloutSource, prompts: list[int], texts: list[str]
) -> tuple[Tensor, float]:
    """Every dimension's raw reward of this process's rollouts, (rows, m) float32 (0 for dimensions of weight 0), and
    the seconds; `_gather_rewards` checks them."""
    started = time.perf_counter()
    prompt_texts = [source.texts[prompt] for prompt in prompts]
    rewards = torch.zeros(len(texts), len(config.dimensions))
    for i, reward in enumerate(source.rewards):
        if reward is not None:
            rewards[:, i] = torch.as_tensor(reward(prompt_texts, texts), dtype=torch.float32).cpu()
    return rewards, time.perf_counter() - started


def _gather_rewards(config: TrainConfig, step: int, rewards: Tensor, accelerator: Accelerator) -> Tensor:
    """The whole batch's raw rewards (n, m), every process's rows (rows, m) in row order, on every process; checked.

    A non-finite reward stops the run naming the dimension, before the running moments or the model change. The
    check reads the gathered batch, so every process raises the same error: a process that stopped alone would
    leave the others waiting in their next collective.
    """
    if accelerator.num_processes > 1:
        rewards = torch.cat(all_gather(accelerator, rewards))
    for i, dimension in enumerate(config.dimensions):
        bad = ~torch.isfinite(rewards[:, i])
        if bad.any():
            raise TrainingError(
                f"step {step}: the {dimension.name!r} reward ({dimension.reward['type']}) is "
                f"{float(rewards[:, i][bad][0])} for {int(bad.sum())} of {len(rewards)} rollouts; stopped before the "
                "update, the last checkpoint is intact. Check that reward source."
            )
    return rewards


def _rl_accumulate(
    config: TrainConfig,
    model: PanaceaModel,
    rollouts: Rollouts,
    scalarizer: Scalarizer,
    buffers: GradientBuffers,
    accelerator: Accelerator,
) -> tuple[dict[str, float], Tensor]:
    """Forward and backward every micro-batch of rollouts into the units' buffers; return metrics and L (G, m).

    Every rollout has a reward in every dimension, so row b enters each unit (its group g, dimension i) with the
    scalariser's weight (LS: λ_{b,i}) and the factor 1 / (the group's rows), as DPO's pairs do. Under LS the
    coefficients are the same for every unit of a group, so Σ_i of a group's units is back-propagated once (into
    unit (g, 0)): the same update as m backward passes. PAMA's one combined loss also goes to unit (g, 0).

    Without `rollouts.old_logprobs` (one epoch, no dropout, whole prompts per micro-batch), π_old is this forward's
    log-probs, detached, and each micro-batch forms its KL-penalised rewards and RLOO advantages here, with the
    same functions as the separate pass; the mean KL is then logged from here.

    A process forwards its own rows; the buffers and sums are then summed over the processes, and the factors count
    the whole batch's rows, so the sums are the one-process sums.
    """
    rl, m = config.rl, len(config.dimensions)
    groups, rows_total = len(rollouts.groups), rollouts.rows_total
    group_rows = rows_total // groups
    active = [i for i, trained in enumerate(config.trained_dimensions) if trained]
    unit_losses = torch.zeros(groups, m, dtype=torch.float64)
    per_dimension = torch.zeros(m, dtype=torch.float64)  # Σ_b ℓ_i(b), unweighted, for the logs
    totals = torch.zeros(2, dtype=torch.float64)  # Σ tokens, Σ_b Σ_t KL_t (the fused path's)
    pama_sums = torch.zeros(groups, len(active) + 1, dtype=torch.float64)  # 'batch' PAMA: `pama_token_sums` per group
    fused = rollouts.old_logprobs is None
    buffers.zero()
    with _stopping_together(accelerator):  # a non-finite KL in the fused path stops every process
        for index, (batch, rows) in enumerate(zip(rollouts.batches, _row_slices(rollouts.batches), strict=True)):
            group = (rollouts.first_row + rows.start) // group_rows  # the row's λ-group in the whole batch
            preferences, mask = rollouts.preferences[rows], batch.response_mask[:, 1:]
            with accelerator.autocast():
                logprobs = response_token_log_probs(model, batch, rl.temperature, preference=_one_or_rows(preferences))
            if fused:  # π_old = π_θ: u = 1, and the advantages of this micro-batch's whole prompts
                old = logprobs.detach()
                penalised, batch_kl = _penalised_rewards(
                    config, old, rollouts.reference_logprobs[index], batch, rollouts.normalised[rows]
                )
                advantages = _advantages(config, penalised)
                totals[1] += float(batch_kl.double().sum())
            else:
                old, advantages = rollouts.old_logprobs[index], rollouts.advantages[rows].to(logprobs.device)
            if rl.advantage_combiner != "none":
                losses, sums = _pama_losses(
                    config, logprobs, old, advantages[:, active], mask, preferences[:, active]
                )  # (rows, 1); under 'batch' at s* = 1, with the sums that decide s*
                if sums is not None:
                    pama_sums[group] += sums.cpu()
                units = torch.zeros(m, dtype=losses.dtype, device=losses.device)
                units[0] = losses.sum() / group_rows
            else:
                losses = ppo_clipped_loss(
                    logprobs, old, advantages, mask, rl.clip_epsilon, rl.token_aggregation, rl.max_new_tokens
                )  # (rows, m)
                weights = torch.stack([scalarizer.sample_weights(preferences, i) for i in range(m)], 1).to(losses)
                units = (weights * losses).sum(0) / group_rows  # (m,)
            if scalarizer.name == "ls":
                with buffers.accumulating(group * m):
                    units.sum().backward()
            else:
                for i in active:
                    with buffers.accumulating(group * m + i):
                        units[i].backward(retain_graph=i != active[-1])
            unit_losses[group] += units.detach().double().cpu()
            per_dimension[: losses.shape[1]] += losses.detach().double().sum(0).cpu()
            totals[0] += batch.num_tokens
    if accelerator.num_processes > 1:
        buffers.all_reduce()
    sum_over_processes(accelerator, unit_losses, per_dimension, totals, pama_sums)
    metrics: dict[str, float] = {"tokens": float(totals[0])}
    if rl.advantage_combiner != "none" and rl.pama_granularity == "batch":
        # The loss is linear in s* ≥ 0 (Noon's advantages and λ are ≥ 0): each group's gradient and loss at s* = 1,
        # scaled by the group's s* of the whole batch, are those of the loss on s*, whatever the micro-batches.
        s_star = pama_batch_value(pama_sums)  # (G,)
        buffers.flat[: groups * m].view(groups, m, -1).mul_(s_star.to(buffers.flat).view(-1, 1, 1))
        unit_losses *= s_star.unsqueeze(1)
        per_dimension[0] = unit_losses[:, 0].sum() * group_rows
        metrics["pama_s_star"] = float(s_star.mean())
    if fused:
        metrics["kl"] = float(totals[1]) / rows_total
    if rl.advantage_combiner != "none":
        metrics["loss/pama"] = float(per_dimension[0]) / rows_total
    else:
        metrics |= {f"loss/{config.dimension_names[i]}": float(per_dimension[i]) / rows_total for i in active}
    return metrics, unit_losses.float()


def _pama_losses(
    config: TrainConfig, logprobs: Tensor, old: Tensor, advantages: Tensor, mask: Tensor, preferences: Tensor
) -> tuple[Tensor, Tensor | None]:
    """PAMA's one PPO loss per row, (rows, 1), on the combined advantage s* at this micro-batch's current ratio, and
    under granularity 'batch' the micro-batch's `pama_token_sums` (else None).

    'pama' is as published (no λ); 'pama_lambda' (ours) applies Theorem 1 to λ-scaled advantages. 'batch' takes
    one s* per λ-group of the step's whole rollout batch (`_rl_accumulate`), so the loss returned is at s* = 1.
    """
    rl = config.rl
    ratio = torch.exp(torch.where(mask, logprobs.detach() - old, 0.0))
    scaled = preferences.to(advantages) if rl.advantage_combiner == "pama_lambda" else None
    if rl.pama_granularity == "batch":
        sums = pama_token_sums(pama_indicated(advantages, ratio, mask, rl.clip_epsilon, preference=scaled), mask)
        combined = mask.to(logprobs.dtype)
    else:
        sums, combined = None, pama_combine(advantages, ratio, mask, rl.clip_epsilon, "token", preference=scaled)
    losses = ppo_clipped_loss(
        logprobs, old, combined.unsqueeze(-1), mask, rl.clip_epsilon, rl.token_aggregation, rl.max_new_tokens
    )
    return losses, sums


def _one_or_rows(preferences: Tensor) -> Tensor:
    """One λ (m,) when every row has the same (the cheaper shape), else the rows' (rows, m)."""
    return preferences[0] if bool((preferences == preferences[0]).all()) else preferences


# ------------------------------------------------------------------------------------------------
# Start-up: the prompts and reward sources, and the split across processes


@dataclass
class RolloutSource(SeededStream):
    """RL's prompts (pooled over `rl.prompts`, distinct) and each dimension's reward source (None: weight 0)."""

    texts: list[str]
    prompt_ids: list[list[int]]  # chat-templated, the last max_prompt_length tokens
    rewards: list[Callable[..., Tensor] | None]
    seed: int
    _order: tuple[int, Tensor] | None = None

    def stream_size(self) -> int:
        return len(self.texts)


def check_rollout_split(config: TrainConfig, processes: int) -> None:
    """Refuse an RL run whose rollout batch does not split into whole prompts and whole micro-batches per process.

    Process p owns rows [p·n/W, (p+1)·n/W) of the step's n = P·K (`_process_rows`). Whole prompts keep each
    prompt's K rows, and so RLOO's leave-one-out baseline, in one process. A multiple of micro_batch_size rows per
    process makes its micro-batches the one-process micro-batches, so each lies in one λ-group (the config checks
    that micro_batch_size divides a group's rows) and holds whole prompts whenever K divides micro_batch_size.
    """
    rl = config.rl
    prompts, k, micro = rl.prompts_per_step, rl.rollouts_per_prompt, config.micro_batch_size
    if processes == 1 or (prompts % processes == 0 and prompts // processes * k % micro == 0):
        return
    share = f"{prompts} / {processes} prompts"
    if prompts % processes == 0:
        share += f" = {prompts // processes} × {k} rollouts = {prompts // processes * k} rows"
    raise ValueError(
        f"RL splits each step's rl.prompts_per_step = {prompts} prompts across the {processes} processes, whole "
        f"prompts each, and each process's rows into micro-batches of micro_batch_size = {micro}; a process's share "
        f"is {share}. Make rl.prompts_per_step a multiple of {processes} and (rl.prompts_per_step / {processes}) × "
        f"rl.rollouts_per_prompt a multiple of micro_batch_size, or launch another number of processes."
    )


def load_rollout_source(config: TrainConfig, model: nn.Module, tokenizer) -> RolloutSource:
    """RL's prompts (distinct over all `rl.prompts`, tokenized as training renders prompts) and reward sources.

    Rewards are built now, so a reward model that does not load (or a bad spec) fails before step 0; dimensions
    of weight 0 under 'fixed' sampling get none (they are neither scored nor trained, as DPO's are not forwarded).
    """
    records = [record for prompt_source in config.rl.prompts for record in load_prompt_source(prompt_source)]
    texts = list(dict.fromkeys(record.prompt for record in records))  # a prompt in two sources is drawn as one
    prompt_ids = tokenize_prompts(texts, tokenizer, config.max_prompt_length)
    rewards = [
        build_reward(
            dimension.reward,
            where=f"dimensions.{index}.reward",
            tokenizer=tokenizer,
            model=model,
            dimension=dimension.name,
            dimensions=config.dimension_names,
        )
        if trained
        else None
        for index, (dimension, trained) in enumerate(zip(config.dimensions, config.trained_dimensions, strict=True))
    ]
    logger.info("RL: %d distinct prompts from %d sources", len(texts), len(config.rl.prompts))
    # The prompt stream's seed differs from every dimension's pair stream (seed · 1000 + index).
    return RolloutSource(texts, prompt_ids, rewards, seed=config.seed * 1000 + 999)
