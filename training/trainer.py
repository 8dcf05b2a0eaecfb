"""The training loop: sample λ, forward each dimension under it, combine, clip, step, log, checkpoint.

RL runs (every dimension's objective 'rl') enter the same loop one stage earlier: each step samples a rollout
batch (a λ per prompt, K responses each, in one mixed-λ sampling call), scores it with every dimension's reward,
and turns it into per-dimension PPO losses for the same gradient buffers, scalarisers and aggregators
(docs/algorithms.md §8).

One process by default; N data-parallel processes (`accelerate launch --num_processes N` on CUDA GPUs; on CPUs
`torchrun --nproc_per_node N`, as accelerate's launcher starts CPU processes only through mpirun) split every step:
each dimension's pair batch, or (RL) the rollout batch by whole prompts, each process sampling, scoring and
forwarding its own rows. The model is not wrapped in DDP: each (λ-group, dimension) unit is back-propagated into a
flat gradient buffer of its own, the buffers are all-reduced (summed) once per update, and the
scalariser's coefficients combine them into `.grad`. That is DDP's arithmetic, plus the separate
per-dimension gradients that Tchebycheff (and the gradient aggregators) need. The metric sums are all-reduced
with the buffers, and RL's raw rewards are gathered, so that every process normalises, checks and logs the whole
batch and takes the same decisions (a stop, Tchebycheff's arg max) as one process would.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from panacea.adapters import PanaceaModel, PlainLoraModel, get_lora_model, get_panacea_model
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_scheduler

from panacea._config import config_to_dict, dump_yaml, load_yaml
from panacea.base_model import load_base_model
from panacea.data import TokenizedPair, load_dimension, load_prompt_source, tokenize_prompts
from panacea.generation import eos_token_ids, sample_responses
from panacea.preferences import sample_preferences
from panacea.serving.sampling import row_generator

from .aggregators import build_aggregator
from .checkpoint import (
    ADAPTER,
    CHECKPOINTS,
    Resumed,
    TrainState,
    checkpoint_path,
    prune_checkpoints,
    resume_from_latest,
    save_checkpoint,
)
from .config import DimensionConfig, TrainConfig, with_absolute_data_paths
from .logprobs import PairBatch, collate_pairs, response_log_probs
from .objectives import dpo_loss, reward_margin, sft_loss
from .reference import reference_log_probs
from .rl import (
    RunningMoments,
    build_reward,
    kl_estimate,
    kl_penalised_rewards,
    pama_combine,
    ppo_clipped_loss,
    response_token_log_probs,
    rloo_advantages,
    rollout_seed,
)
from .scalarisation import SCALARIZERS, GradientAggregation, Scalarizer
from .tracking import JSONLTracker

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
# Data parallelism only: every process holds the whole adapter and the buffers are all-reduced. Sharded
# training would need each shard's partial Gram matrix; data parallelism on other accelerators is untested
# (their RNG states are not checkpointed). Both are refused at start-up.
SUPPORTED_DISTRIBUTED = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
SHARDED_DISTRIBUTED = {
    DistributedType.DEEPSPEED: "DeepSpeed",
    DistributedType.FSDP: "FSDP",
    DistributedType.MEGATRON_LM: "Megatron-LM",
}


class TrainingError(RuntimeError):
    """The run cannot go on (a non-finite loss or gradient); the last checkpoint is left as it was."""


class SeededStream:
    """An endless stream over `stream_size()` items, one seeded shuffle per epoch: `indices` at any positions.

    The order is a function of (seed, epoch) alone, so resuming needs no RNG state. Subclasses are dataclasses
    with `seed` and `_order` fields.
    """

    seed: int
    _order: tuple[int, Tensor] | None

    def stream_size(self) -> int:
        """How many items one epoch holds."""
        raise NotImplementedError

    def indices(self, positions: Tensor) -> Tensor:
        """Item indices at stream `positions` (a 1-D run of consecutive positions): epoch-wise seeded shuffles."""
        result = torch.empty_like(positions)
        for slot, position in enumerate(positions.tolist()):
            epoch, offset = divmod(position, self.stream_size())
            if self._order is None or self._order[0] != epoch:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._order = (epoch, torch.randperm(self.stream_size(), generator=generator))
            result[slot] = self._order[1][offset]
        return result


@dataclass
class DimensionData(SeededStream):
    """One dimension's training pairs, their reference log-probs (DPO), and its deterministic data order."""

    config: DimensionConfig  # name, objective, β
    pairs: list[TokenizedPair]
    reference: Tensor | None  # (pairs, 2): log π_ref of chosen, rejected; None for SFT
    seed: int
    _order: tuple[int, Tensor] | None = None  # (epoch, permutation) of the last epoch used

    @property
    def name(self) -> str:
        return self.config.name

    def stream_size(self) -> int:
        return len(self.pairs)


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


@dataclass
class TrainResult:
    """The run folder, the final state, and the trained model with its tokenizer (ready for evaluation)."""

    output_dir: Path
    state: TrainState
    model: PanaceaModel | PlainLoraModel  # PlainLoraModel for method 'lora' (a rewarded-soups member)
    tokenizer: PreTrainedTokenizerBase
    autocast: Callable[[], AbstractContextManager]  # the run's mixed-precision context, for evaluation


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush subnormal floats to zero in this process's CPU arithmetic while the block runs; then restore.

    As a DPO loss nears zero its gradient scales every entry of the logits' gradient (batch × tokens ×
    vocabulary) by σ(−margin), and the vocabulary's many tiny probabilities become subnormal, which x86
    CPUs compute with in microcode: hhc-3d's concise-only LoRA (loss ~4e-6) ran its 19th step at 25
    tokens/s against 194 with subnormals flushed, whose losses agreed with the unflushed run's to every
    digit logged. Flushing changes values below ~1e-38 only. A no-op on CPUs that lack the mode, and
    for CUDA kernels (their own settings decide).
    """
    was_flushing = torch.tensor(1e-323, dtype=torch.float64).item() == 0.0  # torch has no getter
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_flushing)


@flush_denormals()
def train(config: TrainConfig, *, resume: bool = False) -> TrainResult:
    """Train a Panacea adapter as `config` says; with `resume`, continue from the last complete checkpoint.

    Method 'lora' trains one plain peft LoRA instead (a rewarded-soups member); method 'soups' is m such
    runs, which `panacea.training.soups.train_soups` drives.
    """
    if config.method == "soups":
        raise ValueError(
            "TrainConfig.method 'soups' trains one LoRA per dimension: call panacea.training.soups.train_soups(config) "
            "(`panacea train` does), not train()."
        )
    output_dir = Path(config.output_dir)
    tracker = JSONLTracker(output_dir)
    accelerator = Accelerator(
        cpu=config.device == "cpu",
        mixed_precision=config.mixed_precision,
        log_with=[tracker, "tensorboard"],  # TensorBoard only where it is installed (accelerate filters it)
        project_dir=output_dir,
    )
    _check_launch(accelerator.distributed_type)
    if config.device.startswith("cuda") and accelerator.device.type != "cuda":
        raise ValueError(f"TrainConfig.device is {config.device!r} but CUDA is not available; use 'cpu' or 'auto'.")
    rl = config.rl if config.is_rl else None
    group_size, round_size = config.batch_size // config.num_groups, config.micro_batch_size * accelerator.num_processes
    if rl is None and group_size % round_size:
        raise ValueError(
            f"each λ-group of {group_size} pairs must split into rounds of micro_batch_size × processes = {round_size} "
            "pairs; change batch_size, micro_batch_size or preference_groups for this number of processes."
        )
    if rl is not None:
        _check_rollout_split(config, accelerator.num_processes)
    resuming = resume and (output_dir / CONFIG_FILE).is_file()  # --resume on an empty folder starts a new run
    created = not output_dir.exists()
    check_output_dir(config, output_dir, resume, accelerator)
    set_seed(config.seed)
    try:
        # --- model (seeded: the adapter's initialisation is part of the run) ---
        base_model, tokenizer = load_base_model(config.model, dtype=config.dtype, device=accelerator.device)
        if config.disable_dropout:
            for module in base_model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0
        model = build_model(base_model, config).train()
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]

        # --- data and reference log-probs, or prompts and rewards: every error surfaces before the first step ---
        if rl is None:
            dimensions = _load_dimensions(config, model, tokenizer, accelerator)
        else:
            with accelerator.main_process_first():  # a reward model fitted here: the first caches it, the rest read it
                source = _load_rollout_source(config, model, tokenizer)
            moments = RunningMoments(len(config.dimensions))
    except BaseException:
        if not resuming and accelerator.is_main_process:  # a new run that never started leaves nothing behind,
            _forget_failed_start(output_dir, created)  # so the rerun after the fix just works
        raise

    # --- optimisation state, fresh or from the last checkpoint ---
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config),
        lr=config.learning_rate,
        betas=tuple(config.adam_betas),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
    )
    updates = 1 if rl is None else rl.ppo_epochs  # optimizer updates per step; the schedule counts updates
    scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=config.warmup_steps * updates,
        num_training_steps=config.max_steps * updates,
    )
    scalarizer = build_scalarizer(config)
    buffers = GradientBuffers(parameters, units=config.num_groups * len(config.dimensions))
    state = TrainState(pairs_seen={} if rl else {dimension.name: 0 for dimension in dimensions})
    resumed = resume_from_latest(output_dir, model, optimizer, scheduler) if resuming else None
    if resumed is not None:
        state = resumed.state
        scalarizer.load_state_dict(state.scalarizer)
        if rl is not None and state.reward_moments:
            moments.load_state_dict(state.reward_moments)
        _restore_rng(resumed.rng_states, accelerator)
        tracker.resume_step = state.step
        accelerator.print(_resuming_message(resumed))
    elif resuming:
        accelerator.print(f"no checkpoint in {output_dir / CHECKPOINTS}; starting from step 0")
    accelerator.init_trackers("panacea")

    # --- the loop (the bar closes however the loop ends: an error or Ctrl-C leaves no stray bar) ---
    bar = tqdm(total=config.max_steps, initial=state.step, desc="train", disable=not accelerator.is_main_process)
    with bar as progress:
        for step in range(state.step, config.max_steps):
            started = time.perf_counter()
            if rl is None:
                preferences = draw_preferences(config, step)
                metrics, unit_losses = _accumulate(
                    config,
                    step,
                    model,
                    tokenizer.pad_token_id,
                    dimensions,
                    preferences,
                    scalarizer,
                    buffers,
                    accelerator,
                )
                _check_finite(unit_losses, step, config)
                metrics.update(_update(config, step, model, scalarizer, buffers, unit_losses, preferences.groups))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            else:
                metrics = _rl_step(
                    config,
                    step,
                    model,
                    tokenizer,
                    source,
                    moments,
                    scalarizer,
                    buffers,
                    optimizer,
                    scheduler,
                    accelerator,
                )

            elapsed = time.perf_counter() - started
            state.step = step + 1
            state.scalarizer = scalarizer.state_dict()
            state.train_seconds += elapsed
            state.tokens_seen += int(metrics["tokens"])
            if rl is None:
                for dimension, trained in zip(dimensions, config.trained_dimensions, strict=True):
                    state.pairs_seen[dimension.name] += config.batch_size if trained else 0
            else:
                state.prompts_seen += rl.prompts_per_step
                state.rollouts_seen += rl.prompts_per_step * rl.rollouts_per_prompt
                state.reward_moments = moments.state_dict()
            metrics.update(lr=scheduler.get_last_lr()[0], tokens_per_second=metrics["tokens"] / elapsed)
            if state.step % config.logging_steps == 0 or state.step == config.max_steps:
                accelerator.log(metrics, step=state.step)
            progress.set_postfix(_postfix(metrics, config), refresh=False)
            progress.update()
            if state.step % config.save_steps == 0 or state.step == config.max_steps:
                _save_checkpoint(config, output_dir, model, optimizer, scheduler, state, accelerator)

    if accelerator.is_main_process:
        model.save_pretrained(output_dir / ADAPTER)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(output_dir, state, model.eval(), tokenizer, accelerator.autocast)


# ------------------------------------------------------------------------------------------------
# One step


@dataclass
class StepPreferences:
    """The λs of one step. groups: (G, m), one per λ-group; per_sample: (m, batch, m) or None."""

    groups: Tensor
    per_sample: Tensor | None = None

    def rows(self, dimension: int, positions: Tensor, group_size: int) -> Tensor:
        """λ of the samples at batch `positions` of `dimension`: (len(positions), m)."""
        if self.per_sample is not None:
            return self.per_sample[dimension, positions]
        return self.groups[positions // group_size]


def draw_preferences(config: TrainConfig, step: int) -> StepPreferences:
    """λ ~ Dirichlet(α·1) for `step`, from a generator seeded by (seed, step): resuming needs no RNG state.

    Under 'fixed' sampling, always `fixed_preference`.
    """
    if config.fixed_preference is not None:  # a single-objective (or any fixed-trade-off) model
        return StepPreferences(groups=torch.tensor([config.fixed_preference]))
    rng = np.random.default_rng([config.seed, step])
    m, alpha = len(config.dimensions), config.dirichlet_alpha
    if config.preference_sampling == "per_sample":  # one λ per pair of every dimension (LS only; ours)
        draws = sample_preferences(m, m * config.batch_size, concentration=alpha, rng=rng)
        per_sample = draws.view(m, config.batch_size, m)  # (dimension, pair, m)
        # LS, the only scalariser that allows per-sample λ, ignores the group λ: keep the step's mean for logs.
        return StepPreferences(groups=per_sample.mean(dim=(0, 1)).unsqueeze(0), per_sample=per_sample)
    return StepPreferences(groups=sample_preferences(m, config.num_groups, concentration=alpha, rng=rng))


def _accumulate(
    config: TrainConfig,
    step: int,
    model: PanaceaModel,
    pad_token_id: int,
    dimensions: list[DimensionData],
    preferences: StepPreferences,
    scalarizer: Scalarizer,
    buffers: GradientBuffers,
    accelerator: Accelerator,
) -> tuple[dict[str, float], Tensor]:
    """Forward and backward every micro-batch of every dimension into its unit's buffer; return metrics and L (G, m).

    A dimension's global batch of `batch_size` pairs is laid out as G λ-groups of consecutive pairs;
    each accumulation round takes `micro_batch_size` pairs per process, so a round lies in one group.
    """
    m, groups = len(dimensions), config.num_groups
    world, rank = accelerator.num_processes, accelerator.process_index
    micro, group_size = config.micro_batch_size, config.batch_size // groups
    rounds = config.batch_size // (micro * world)
    trained = config.trained_dimensions
    # Per unit (g, i): Σ w·ℓ (the unit's loss before division); per dimension: Σ ℓ, Σ correct, Σ margin; tokens.
    sums = torch.zeros(groups, m, dtype=torch.float64)
    stats = torch.zeros(m, 3, dtype=torch.float64)
    tokens = torch.zeros((), dtype=torch.float64)
    buffers.zero()
    for round_index in range(rounds):
        positions = round_index * micro * world + rank * micro + torch.arange(micro)  # in the global batch
        group = int(positions[0]) // group_size
        for i, dimension in enumerate(dimensions):
            if not trained[i]:  # weight 0 under 'fixed' sampling: its loss cannot move the update
                continue
            indices = dimension.indices(step * config.batch_size + positions)  # each step draws batch_size pairs
            rows = preferences.rows(i, positions, group_size)  # (micro, m)
            losses, correct, margins, batch_tokens = _pair_losses(
                config, model, pad_token_id, dimension, indices, rows, accelerator
            )
            weights = scalarizer.sample_weights(rows, i).to(losses)
            unit_loss = (weights * losses).sum() / group_size
            with buffers.accumulating(group * m + i):
                unit_loss.backward()
            sums[group, i] += float(unit_loss.detach()) * group_size
            stats[i] += torch.tensor([float(losses.detach().sum()), correct, margins])
            tokens += batch_tokens
    if world > 1:
        buffers.all_reduce()
    _sum_over_processes(accelerator, sums, stats, tokens)
    metrics = {"tokens": float(tokens)}
    for i, dimension in enumerate(dimensions):
        if not trained[i]:
            continue
        metrics[f"loss/{dimension.name}"] = float(stats[i, 0]) / config.batch_size
        if dimension.config.objective == "dpo":
            metrics[f"accuracy/{dimension.name}"] = float(stats[i, 1]) / config.batch_size
            metrics[f"margin/{dimension.name}"] = float(stats[i, 2]) / config.batch_size
    return metrics, (sums / group_size).float()


def _pair_losses(
    config: TrainConfig,
    model: PanaceaModel,
    pad_token_id: int,
    dimension: DimensionData,
    indices: Tensor,
    preferences: Tensor,
    accelerator: Accelerator,
) -> tuple[Tensor, float, float, int]:
    """Per-pair losses (micro,) of one micro-batch at per-pair preferences (micro, m); plus DPO stats and tokens."""
    objective = dimension.config.objective
    pairs = [dimension.pairs[index] for index in indices.tolist()]
    batch = collate_pairs(pairs, pad_token_id, with_rejected=objective == "dpo").to(accelerator.device)
    shared = bool((preferences == preferences[0]).all())  # one λ for the whole micro-batch: the cheaper shape
    rows = preferences if objective == "sft" else preferences.repeat(2, 1)  # chosen rows, then rejected rows
    with accelerator.autocast():
        logps = response_log_probs(model, batch, preference=preferences[0] if shared else rows)
    if objective == "sft":
        return sft_loss(logps, batch.response_tokens.to(logps.device)), 0.0, 0.0, batch.num_tokens
    chosen, rejected = logps.view(2, len(pairs))
    reference = dimension.reference[indices].to(logps.device)  # (micro, 2)
    beta = dimension.config.beta
    losses = dpo_loss(chosen, rejected, reference[:, 0], reference[:, 1], beta)
    if config.rpo_alpha:  # RPO: the chosen response's mean token NLL beside the preference (docs/algorithms.md)
        losses = losses + config.rpo_alpha * sft_loss(chosen, batch.response_tokens[: len(pairs)].to(chosen.device))
    margins = reward_margin(chosen, rejected, reference[:, 0], reference[:, 1], beta).detach()
    return losses, float((margins > 0).sum()), float(margins.sum()), batch.num_tokens


# ------------------------------------------------------------------------------------------------
# One RL step: one rollout batch, then rl.ppo_epochs updates (docs/algorithms.md §8)


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

    'per_sample': one draw per prompt (the group row is their mean, for the logs); otherwise `draw_preferences`'s
    λ per group, shared by the group's consecutive prompts. The K responses of a prompt share its λ (§8).
    """
    prompts = config.rl.prompts_per_step
    if config.preference_sampling == "per_sample":
        rng = np.random.default_rng([config.seed, step])
        rows = sample_preferences(len(config.dimensions), prompts, concentration=config.dirichlet_alpha, rng=rng)
        return rows, rows.mean(0, keepdim=True)
    groups = draw_preferences(config, step).groups
    return groups.repeat_interleave(prompts // len(groups), dim=0), groups


def _rl_step(
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
        _check_finite(unit_losses, step, config, names=["PAMA"] * len(config.dimensions) if pama else None)
        levels = rollouts.levels if scalarizer.name == "tche" else None  # Tchebycheff's arg max on rewards (§8)
        metrics |= epoch_metrics | _update(
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
    levels = -normalised.view(len(groups), -1, m).mean(1)  # (G, m): each group's rows are consecutive
    rollouts = Rollouts(batches, old_logprobs, preferences, groups, None, levels, local.start, len(rewards))
    if fused:  # the update forms the KL-penalised rewards and advantages per micro-batch (and logs the KL)
        rollouts.reference_logprobs, rollouts.normalised = references, normalised[local]
    else:
        rollouts.advantages, metrics["kl"] = _rollout_advantages(
            config, rollouts, references, normalised[local], accelerator
        )
    return rollouts, metrics


def _process_rows(n: int, accelerator: Accelerator) -> slice:
    """This process's rows of a rollout batch of n: the p-th of W equal runs (whole prompts: `_check_rollout_split`)."""
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
    _sum_over_processes(accelerator, generated)  # every process's response tokens
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
    for batch, old, reference, rows in pieces:
        batch_penalised, batch_kl = _penalised_rewards(config, old, reference, batch, normalised[rows])
        penalised.append(batch_penalised.cpu())
        kl += batch_kl.double().sum().cpu()
    _sum_over_processes(accelerator, kl)
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
    penalised = kl_penalised_rewards(normalised.to(old.device), old, reference, mask, rl.kl_coef, rl.kl_estimator)
    return penalised, kl


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
        rewards = torch.cat(_all_gather(accelerator, rewards))
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
    fused = rollouts.old_logprobs is None
    buffers.zero()
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
            losses = _pama_losses(
                config, logprobs, old, advantages[:, active], mask, preferences[:, active]
            )  # (rows, 1)
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
    _sum_over_processes(accelerator, unit_losses, per_dimension, totals)
    metrics: dict[str, float] = {"tokens": float(totals[0])}
    if fused:
        metrics["kl"] = float(totals[1]) / rows_total
    if rl.advantage_combiner != "none":
        metrics["loss/pama"] = float(per_dimension[0]) / rows_total
    else:
        metrics |= {f"loss/{config.dimension_names[i]}": float(per_dimension[i]) / rows_total for i in active}
    return metrics, unit_losses.float()


def _pama_losses(
    config: TrainConfig, logprobs: Tensor, old: Tensor, advantages: Tensor, mask: Tensor, preferences: Tensor
) -> Tensor:
    """PAMA's one PPO loss per row, (rows, 1), on the combined advantage s* of this micro-batch's current ratio.

    'pama' is as published (no λ); 'pama_lambda' (ours) applies Theorem 1 to λ-scaled advantages. Under
    granularity 'batch' the batch is the micro-batch, as the port takes the PPO minibatch (under several processes
    a process's micro-batch: the one-process micro-batches, dealt out).
    """
    rl = config.rl
    ratio = torch.exp(torch.where(mask, logprobs.detach() - old, 0.0))
    scaled = preferences.to(advantages) if rl.advantage_combiner == "pama_lambda" else None
    combined = pama_combine(advantages, ratio, mask, rl.clip_epsilon, rl.pama_granularity, preference=scaled)
    return ppo_clipped_loss(
        logprobs, old, combined.unsqueeze(-1), mask, rl.clip_epsilon, rl.token_aggregation, rl.max_new_tokens
    )


def _one_or_rows(preferences: Tensor) -> Tensor:
    """One λ (m,) when every row has the same (the cheaper shape), else the rows' (rows, m)."""
    return preferences[0] if bool((preferences == preferences[0]).all()) else preferences


def _check_finite(unit_losses: Tensor, step: int, config: TrainConfig, names: list[str] | None = None) -> None:
    names = names or config.dimension_names
    for group, i in (~torch.isfinite(unit_losses)).nonzero().tolist():
        raise TrainingError(
            f"step {step}: the {names[i]!r} loss is {float(unit_losses[group, i])} (λ-group {group}); "
            "stopped before the update, the last checkpoint is intact. Lower the learning rate or check the data."
        )


def _update(
    config: TrainConfig,
    step: int,
    model: PanaceaModel,
    scalarizer: Scalarizer,
    buffers: GradientBuffers,
    unit_losses: Tensor,
    groups: Tensor,
    levels: Tensor | None = None,
) -> dict[str, float]:
    """Write the combined, clipped update into `.grad` (the caller steps the optimizer); return its metrics.

    The scalariser (or aggregator) maps the unit losses L (G, m), or `levels` in their place (RL's Tchebycheff
    levels), and the group λs (G, m) to coefficients on the unit gradients.
    """
    metrics: dict[str, float] = {}
    gram = buffers.gram(groups.shape[0]) if scalarizer.needs_gram else None
    coefficients, metrics["loss"] = scalarizer.coefficients(unit_losses if levels is None else levels, groups, gram)
    metrics.update(scalarizer.metrics())
    if scalarizer.name != "ls":  # the weight each dimension's gradient got (LS puts λ inside the losses)
        for i, name in enumerate(config.dimension_names):
            metrics[f"coefficient/{name}"] = float(coefficients[:, i].sum())
    regulariser = None
    orthogonality_weight = config.adapter_config().orthogonality_weight
    if orthogonality_weight > 0:  # AdaLoRA's regulariser (peft's orth_reg_weight): in the loss, in no unit
        penalty = model.orthogonality_penalty()
        metrics["orthogonality"] = float(penalty.detach())
        regulariser = orthogonality_weight * penalty
    metrics["grad_norm"] = buffers.combine(coefficients.flatten(), config.max_grad_norm, regulariser)
    if not math.isfinite(metrics["grad_norm"]):
        raise TrainingError(
            f"step {step}: the update's norm is {metrics['grad_norm']}; stopped, the last checkpoint is intact."
        )
    return metrics


class GradientBuffers:
    """One flat gradient buffer per unit, with every parameter's `.grad` a view into it while that unit runs.

    Backward accumulates into the active unit's buffer in place (no copy); one all-reduce per unit
    syncs processes; `combine` writes Σ_u c_u g_u into a final buffer that the optimizer reads.
    Memory: (units + 1) × trainable parameters.
    """

    def __init__(self, parameters: list[nn.Parameter], units: int) -> None:
        self.parameters = parameters
        size = sum(parameter.numel() for parameter in parameters)
        anchor = parameters[0]
        self.flat = torch.zeros(units + 1, size, dtype=anchor.dtype, device=anchor.device)  # last row: the update
        self._views = [self._split(row) for row in self.flat]

    def _split(self, row: Tensor) -> list[Tensor]:
        views, offset = [], 0
        for parameter in self.parameters:
            views.append(row[offset : offset + parameter.numel()].view_as(parameter))
            offset += parameter.numel()
        return views

    def zero(self) -> None:
        self.flat.zero_()

    @contextmanager
    def accumulating(self, unit: int) -> Iterator[None]:
        """Within the block, backward adds into unit `unit`'s buffer."""
        for parameter, view in zip(self.parameters, self._views[unit], strict=True):
            parameter.grad = view
        try:
            yield
        finally:
            for parameter in self.parameters:
                parameter.grad = None

    def all_reduce(self) -> None:
        dist.all_reduce(self.flat[:-1])

    def gram(self, groups: int) -> Tensor:
        """Each λ-group's M = G Gᵀ of its m unit gradients, (groups, m, m), float64 for the small solvers.

        Units are laid out group-major (unit g·m + i), so the blocks across groups, which no rule uses,
        are never computed.
        """
        units = self.flat[:-1].view(groups, -1, self.flat.shape[1])
        return torch.bmm(units, units.transpose(1, 2)).double()

    def combine(self, coefficients: Tensor, max_norm: float | None, regulariser: Tensor | None = None) -> float:
        """`.grad` ← Σ_u c_u g_u (+ ∇ `regulariser`), clipped to `max_norm`; returns the norm before clipping.

        `regulariser`, a scalar of the parameters, joins the combined update and no unit's gradient, so the
        scalariser or aggregator never weighs it.
        """
        update = self.flat[-1]
        torch.mv(self.flat[:-1].T, coefficients.to(self.flat), out=update)  # (P,) = Σ_u c_u g_u
        for parameter, view in zip(self.parameters, self._views[-1], strict=True):
            parameter.grad = view
        if regulariser is not None:
            regulariser.backward()  # accumulates into `.grad`, i.e. into `update`
        norm = float(update.norm())
        if max_norm is not None and norm > max_norm:
            update.mul_(max_norm / (norm + 1e-6))  # torch.nn.utils.clip_grad_norm_'s rule
        return norm


# ------------------------------------------------------------------------------------------------
# Across processes (data parallelism: every process holds the whole adapter)


def _all_gather(accelerator: Accelerator, tensor: Tensor) -> list[Tensor]:
    """Every process's `tensor` (one shape on all), in process order, on the CPU; on every process.

    The exchange runs on the accelerator's device: NCCL, the backend accelerate starts for CUDA processes, moves
    no CPU tensors (gloo, the CPU processes' backend, moves both).
    """
    local = tensor.to(accelerator.device)
    gathered = [torch.empty_like(local) for _ in range(accelerator.num_processes)]
    dist.all_gather(gathered, local)
    return [part.cpu() for part in gathered]


def _sum_over_processes(accelerator: Accelerator, *tensors: Tensor) -> None:
    """Sum each of `tensors` (CPU metric sums, any shapes) in place over the processes; nothing in one process.

    One all-reduce of them all, flattened into one float64 vector on the accelerator's device (see `_all_gather`).
    """
    if accelerator.num_processes == 1:
        return
    flat = torch.cat([tensor.detach().reshape(-1).double() for tensor in tensors]).to(accelerator.device)
    dist.all_reduce(flat)
    parts = flat.cpu().split([tensor.numel() for tensor in tensors])
    for tensor, part in zip(tensors, parts, strict=True):
        tensor.copy_(part.view_as(tensor))


# ------------------------------------------------------------------------------------------------
# Start-up, checkpoints, logging


def build_model(base_model: nn.Module, config: TrainConfig) -> PanaceaModel | PlainLoraModel:
    """The model to train on `base_model` (frozen): a Panacea adapter, or for method 'lora' a plain peft LoRA.

    The LoRA has the adapter's rank k + m·r, modules, alpha and dropout, and is created right after
    seeding the global RNG with `config.seed`, so every member of a rewarded soup starts alike.
    """
    if config.method == "lora":
        return get_lora_model(base_model, config.adapter_config(), seed=config.seed)
    return get_panacea_model(base_model, config.adapter_config())


def _check_launch(launch: DistributedType) -> None:
    """Refuse a launch other than one process, or data parallelism on CPUs or CUDA GPUs, naming the launch."""
    if launch in SUPPORTED_DISTRIBUTED:
        return
    if launch in SHARDED_DISTRIBUTED:
        how = f"with {SHARDED_DISTRIBUTED[launch]} ({launch.value}), which shards the model"
        fix = f"Launch without the {SHARDED_DISTRIBUTED[launch]} options"
    else:
        devices = "torch_xla" if launch == DistributedType.XLA else launch.value.removeprefix("MULTI_")
        how = f"as {launch.value} (on {devices} devices), which panacea is not tested on"
        fix = "Launch on CPUs (--cpu) or CUDA GPUs, or as one process"
    raise ValueError(
        f"accelerate launched this run {how}; panacea's trainer supports one process on any device, or data "
        f"parallelism on CPUs (MULTI_CPU) or CUDA GPUs (MULTI_GPU), each process holding the whole adapter. {fix}."
    )


def _check_rollout_split(config: TrainConfig, processes: int) -> None:
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


def _resuming_message(resumed: Resumed) -> str:
    """One line: the checkpoint a run resumes from, and the newer ones it skipped and why."""
    skipped = "; ".join(f"skipped {path.name}, {reason}" for path, reason in resumed.skipped.items())
    return f"resuming from {resumed.path} (step {resumed.state.step})" + (f"; {skipped}" if skipped else "")


def _forget_failed_start(output_dir: Path, created: bool) -> None:
    """Remove what a new run's start wrote before its first step (its config.yaml; the folder if it made it)."""
    (output_dir / CONFIG_FILE).unlink(missing_ok=True)
    if created and output_dir.is_dir() and not any(output_dir.iterdir()):
        output_dir.rmdir()


def check_output_dir(config: TrainConfig, output_dir: Path, resume: bool, accelerator) -> None:
    """Refuse to mix runs: a new run needs a folder without one; a resumed run needs the same config.

    The config is saved with absolute data paths, so the run folder works from any directory. Every process checks
    the folder before the main process writes to it (another process would see its config.yaml's temporary file
    as a stranger's). `accelerator`: anything with `is_main_process` and `wait_for_everyone()` (an Accelerator, a
    PartialState).
    """
    saved = output_dir / CONFIG_FILE
    resolved = with_absolute_data_paths(config_to_dict(config))
    write = not saved.is_file()
    if (
        not saved.is_file()
        and output_dir.is_dir()
        and (contents := sorted(entry.name for entry in output_dir.iterdir()))
    ):
        shown = ", ".join(contents[:3]) + (", …" if len(contents) > 3 else "")
        raise ValueError(
            f"{output_dir} is not empty ({shown}) and holds no panacea run; a new run writes its log, checkpoints "
            "and adapter there and would mix with (or truncate) those files. Choose a new or empty output_dir."
        )
    if saved.is_file():
        if not resume:
            raise ValueError(
                f"{output_dir} already holds a run; pass --resume to continue it, or choose another output_dir."
            )
        stored = load_yaml(saved)
        previous = with_absolute_data_paths(stored)  # older runs saved relative paths: the same files are the same
        # A field added after the run was saved counts as unchanged when it holds its default (older runs resume),
        # at the top level and in each dimension (e.g. `reward`, added with objective 'rl').
        _fill_fields_at_default(previous, resolved, TrainConfig)
        for before, now in zip(previous.get("dimensions") or [], resolved.get("dimensions") or [], strict=False):
            if isinstance(before, dict) and isinstance(now, dict):
                _fill_fields_at_default(before, now, DimensionConfig)
        if previous.get("adapter") != resolved.get("adapter") and _same_adapter(config, previous.get("adapter")):
            previous["adapter"] = resolved["adapter"]  # e.g. an adapter field added later, at its default
        # Where the run lies is not a setting: a run folder that was moved or copied resumes where it is now.
        keys = (set(previous) | set(resolved)) - {"output_dir"}
        changed = sorted(key for key in keys if previous.get(key) != resolved.get(key))
        if changed:
            raise ValueError(
                f"--resume: the config differs from {saved} in {changed}; resume with the same config, or start "
                f"a new run in another output_dir (--set output_dir=...) or after deleting {output_dir}."
            )
        moved = stored.get("output_dir") != resolved.get("output_dir")
        write = moved or stored.get("dimensions") != resolved.get("dimensions")  # where it lies now, absolute paths
    accelerator.wait_for_everyone()
    if write and accelerator.is_main_process:
        dump_yaml(resolved, saved)
    accelerator.wait_for_everyone()


def _same_adapter(config: TrainConfig, saved: Any) -> bool:
    """Whether a saved adapter section resolves to the same PanaceaConfig as `config`'s."""
    try:
        saved_config = dataclasses.replace(config, adapter=dict(saved)).adapter_config()
    except (TypeError, ValueError):
        return False
    return saved_config.to_dict() == config.adapter_config().to_dict()


def _fill_fields_at_default(saved: dict, resolved: dict, section: type) -> None:
    """Copy into `saved` each field of dataclass `section` that it lacks and `resolved` holds at its default."""
    for item in dataclasses.fields(section):
        if item.name not in saved and item.name in resolved and resolved[item.name] == _default(item):
            saved[item.name] = resolved[item.name]


def _default(item: dataclasses.Field):
    """A field's default as a saved config holds it (a nested config section as its dict)."""
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is dataclasses.MISSING:
        return dataclasses.MISSING
    value = item.default_factory()
    return config_to_dict(value) if dataclasses.is_dataclass(value) else value


def _load_dimensions(
    config: TrainConfig, model: PanaceaModel, tokenizer, accelerator: Accelerator
) -> list[DimensionData]:
    """Tokenized training pairs per dimension, with reference log-probs computed once (main process first)."""
    result = []
    for index, dimension in enumerate(config.dimensions):
        pairs, stats = load_dimension(
            dimension.train,
            dimension.name,
            config.dimension_names,
            tokenizer,
            config.max_length,
            config.max_prompt_length,
        )
        reference = None
        if dimension.objective == "dpo" and config.trained_dimensions[index]:
            with accelerator.main_process_first():  # the first computes and caches; the others then read the cache
                reference = reference_log_probs(
                    model,
                    pairs,
                    pad_token_id=tokenizer.pad_token_id,
                    batch_size=config.eval_batch_size,
                    settings=reference_settings(config),
                    autocast=accelerator.autocast,
                )
        result.append(DimensionData(dimension, pairs, reference, seed=config.seed * 1000 + index))
    return result


def _load_rollout_source(config: TrainConfig, model: nn.Module, tokenizer) -> RolloutSource:
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


DIAGONAL = ("singular_values", "preference_scale")  # σ and s of every PanaceaLinear


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW groups: A and B at learning_rate; σ and s at learning_rate × diagonal_lr_ratio when the ratio is not 1."""
    trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    if config.diagonal_lr_ratio == 1:
        return [{"params": [parameter for _, parameter in trainable]}]
    diagonal = [parameter for name, parameter in trainable if name.rsplit(".", 1)[-1] in DIAGONAL]
    factors = [parameter for name, parameter in trainable if name.rsplit(".", 1)[-1] not in DIAGONAL]
    return [{"params": factors}, {"params": diagonal, "lr": config.learning_rate * config.diagonal_lr_ratio}]


def reference_settings(config: TrainConfig) -> dict:
    """What reference log-probs depend on besides the model and the token ids (part of the cache key)."""
    return {"dtype": config.dtype, "mixed_precision": config.mixed_precision, "format": 1}


def build_scalarizer(config: TrainConfig) -> Scalarizer:
    """The scalariser of `config`, or its gradient aggregator in the scalariser seam."""
    if config.aggregator != "none":
        return GradientAggregation(
            build_aggregator(config.aggregator, config.aggregator_kwargs, config.seed, config.dimension_names)
        )
    return SCALARIZERS[config.scalarization].from_config(config)


def _save_checkpoint(config, output_dir, model, optimizer, scheduler, state, accelerator: Accelerator) -> None:
    rng_states = _gather_rng(accelerator)
    if accelerator.is_main_process:
        save_checkpoint(checkpoint_path(output_dir, state.step), model, optimizer, scheduler, state, rng_states)
        prune_checkpoints(output_dir, config.save_total_limit)
    accelerator.wait_for_everyone()


def _gather_rng(accelerator: Accelerator) -> dict[str, Tensor]:
    """Every process's torch RNG states (dropout is their only user), gathered to the main process."""
    local = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        local["cuda"] = torch.cuda.get_rng_state(accelerator.device)
    if accelerator.num_processes == 1:
        return {f"{key}.0": value for key, value in local.items()}
    states = {}
    for key, value in local.items():
        states.update({f"{key}.{rank}": tensor for rank, tensor in enumerate(_all_gather(accelerator, value))})
    return states


def _restore_rng(states: dict[str, Tensor], accelerator: Accelerator) -> None:
    rank = accelerator.process_index
    if f"cpu.{rank}" not in states:
        raise ValueError(
            f"the checkpoint has no RNG state for process {rank}; resume with the same number of processes."
        )
    torch.set_rng_state(states[f"cpu.{rank}"])
    if torch.cuda.is_available() and f"cuda.{rank}" in states:
        torch.cuda.set_rng_state(states[f"cuda.{rank}"], accelerator.device)


def _postfix(metrics: dict[str, float], config: TrainConfig) -> dict[str, str]:
    """Per dimension its loss, or for RL its mean raw reward; then tokens/s."""
    kind = "reward" if config.is_rl else "loss"
    postfix = {
        name: f"{metrics[f'{kind}/{name}']:.3f}" for name in config.dimension_names if f"{kind}/{name}" in metrics
    }
    postfix["tok/s"] = f"{metrics['tokens_per_second']:.0f}"
    return postfix
