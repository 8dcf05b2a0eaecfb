"""The training loop: sample λ, forward each dimension under it, combine, clip, step, log, checkpoint.

RL runs (every dimension's objective 'rl') enter the same loop one stage earlier: each step samples a rollout
batch (a λ per prompt, K responses each, in one mixed-λ sampling call), scores it with every dimension's reward,
and turns it into per-dimension PPO losses for the same gradient buffers, scalarisers and aggregators
(docs/algorithms.md §8). That step is `panacea.training.rl_step`; the update both kinds of step end in (the
gradient buffers, the combination into `.grad`, the clip) is `panacea.training.update`.

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
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from panacea.adapters import PanaceaModel, PlainLoraModel, get_lora_model, get_panacea_model
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_scheduler

from panacea._config import config_to_dict, dataclass_from_dict, dump_yaml, load_yaml
from panacea._io import file_sha256, read_json, write_json
from panacea.base_model import load_base_model
from panacea.data import PairSource, PromptSource, TokenizedPair, dimension_records, load_dimension, load_prompt_source

from ._distributed import all_gather, sum_over_processes
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
from .config import DimensionConfig, TrainConfig, follow_moved_data, moved_tree_paths, with_absolute_data_paths
from .draws import SeededStream, StepPreferences, draw_preferences
from .logprobs import collate_pairs, response_log_probs
from .objectives import dpo_loss, reward_margin, sft_loss
from .reference import reference_log_probs
from .rl import RunningMoments, reward_fit_sources, reward_folder
from .rl_step import check_rollout_split, load_rollout_source, rl_step
from .scalarisation import SCALARIZERS, GradientAggregation, Scalarizer
from .tracking import JSONLTracker
from .update import GradientBuffers, check_finite, write_update

CONFIG_FILE = "config.yaml"
DATA_FILE = "data.json"  # what the run trains on, by content (`training_data`)
# Data parallelism only: every process holds the whole adapter and the buffers are all-reduced. Sharded
# training would need each shard's partial Gram matrix; data parallelism on other accelerators is untested
# (their RNG states are not checkpointed). Both are refused at start-up.
SUPPORTED_DISTRIBUTED = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
SHARDED_DISTRIBUTED = {
    DistributedType.DEEPSPEED: "DeepSpeed",
    DistributedType.FSDP: "FSDP",
    DistributedType.MEGATRON_LM: "Megatron-LM",
}


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
        check_rollout_split(config, accelerator.num_processes)
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
                source = load_rollout_source(config, model, tokenizer)
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
                check_finite(unit_losses, step, config)
                metrics.update(write_update(config, step, model, scalarizer, buffers, unit_losses, preferences.groups))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            else:
                metrics = rl_step(
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
# One step (DPO, SFT; RL's step is rl_step.py)


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
            with model.isolated_dimension(i) if config.isolate_dimensions else nullcontext():
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
    sum_over_processes(accelerator, sums, stats, tokens)
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


def _resuming_message(resumed: Resumed) -> str:
    """One line: the checkpoint a run resumes from, and the newer ones it skipped and why."""
    skipped = "; ".join(f"skipped {path.name}, {reason}" for path, reason in resumed.skipped.items())
    return f"resuming from {resumed.path} (step {resumed.state.step})" + (f"; {skipped}" if skipped else "")


def _forget_failed_start(output_dir: Path, created: bool) -> None:
    """Remove what a new run's start wrote before its first step (config.yaml, data.json; the folder if it made it)."""
    (output_dir / CONFIG_FILE).unlink(missing_ok=True)
    (output_dir / DATA_FILE).unlink(missing_ok=True)
    if created and output_dir.is_dir() and not any(output_dir.iterdir()):
        output_dir.rmdir()


def check_output_dir(config: TrainConfig, output_dir: Path, resume: bool, accelerator) -> None:
    """Refuse to mix runs (`validate_output_dir`), then record the config (and a new run's data.json) in its folder.

    The config is saved with absolute data paths, so the run folder works from any directory. Every process checks
    the folder before the main process writes to it (another process would see its config.yaml's temporary file
    as a stranger's). `accelerator`: anything with `is_main_process` and `wait_for_everyone()` (an Accelerator, a
    PartialState).
    """
    new = not (output_dir / CONFIG_FILE).is_file()
    write = validate_output_dir(config, output_dir, resume)
    # what a new run trains on (a resumed run keeps its record or, trained before records, has none); read by every
    # process, so a data error raises in all of them, before the run's folder exists
    record = training_data(config) if new else None
    accelerator.wait_for_everyone()
    if write and accelerator.is_main_process:
        if record is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            write_json(output_dir / DATA_FILE, record)
        dump_yaml(with_absolute_data_paths(config_to_dict(config)), output_dir / CONFIG_FILE)
    accelerator.wait_for_everyone()


def validate_output_dir(config: TrainConfig, output_dir: Path, resume: bool) -> bool:
    """Refuse to mix runs: a new run needs a folder without one; a resumed run needs the same config
    (`config_changes`). Writes nothing; returns whether the folder's config.yaml is to be (re)written: for a new run,
    or for a resumed one that was moved, whose data moved, or that recorded its data paths relatively."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output_dir {output_dir} is a file, not a folder; choose another output_dir.")
    saved = output_dir / CONFIG_FILE
    if not saved.is_file():  # (a data.json alone is a start that stopped between its two writes: rewritten)
        if output_dir.is_dir() and (contents := sorted(e.name for e in output_dir.iterdir() if e.name != DATA_FILE)):
            shown = ", ".join(contents[:3]) + (", …" if len(contents) > 3 else "")
            if resume:  # the run to continue is elsewhere (a typo in output_dir?), or was never started here
                raise ValueError(
                    f"--resume: {output_dir} holds no panacea run to continue (no {CONFIG_FILE}; it holds {shown}). "
                    "Point output_dir at the run's folder, or start a new run in a new or empty folder."
                )
            raise ValueError(
                f"{output_dir} is not empty ({shown}) and holds no panacea run; a new run writes its log, "
                "checkpoints and adapter there and would mix with (or truncate) those files. Choose a new or empty "
                "output_dir."
            )
        return True
    if not resume:
        raise ValueError(
            f"{output_dir} already holds a run; pass --resume to continue it, or choose another output_dir."
        )
    if changed := config_changes(config, saved):
        raise ValueError(
            f"--resume: the config differs from {saved} in {changed}; resume with the same config, or start "
            f"a new run in another output_dir (--set output_dir=...) or after deleting {output_dir}."
        )
    if (recorded := output_dir / DATA_FILE).is_file() and (changed := data_changes(config, read_json(recorded))):
        raise ValueError(
            f"--resume: the config names the data the run in {output_dir} trained on, but its contents changed: "
            f"{'; '.join(changed)} ({recorded} records what it trained on). A data file or reward model was rebuilt, "
            "or the split or subsample rules changed; start a new run in another output_dir (--set output_dir=...) "
            f"or after deleting {output_dir}."
        )
    stored, resolved = load_yaml(saved), with_absolute_data_paths(config_to_dict(config))
    moved = stored.get("output_dir") != resolved.get("output_dir")
    return moved or any(stored.get(key) != resolved.get(key) for key in ("dimensions", "rl"))  # where it lies now


def follow_moved_run(config: TrainConfig, run_folder: Path) -> TrainConfig:
    """`config`, a run's saved config, with its data where it lies now if the run moved with its data as one tree
    (`moved_tree_paths`) and the training files found there are the ones the run trained on (its data.json,
    `data_changes`); otherwise `config` as it is, whose missing data is then named when it is read. `panacea eval`
    reads a run through this. A run without data.json (started before it was recorded) is not followed."""
    moved = moved_tree_paths(config_to_dict(config), run_folder)
    if moved is None or not (recorded := run_folder / DATA_FILE).is_file():
        return config
    candidate = dataclass_from_dict(TrainConfig, moved, where=str(run_folder / CONFIG_FILE))
    try:
        same = not data_changes(candidate, read_json(recorded))
    except (OSError, ValueError):  # unreadable data or record there: not the run's data
        return config
    return candidate if same else config


def config_changes(config: TrainConfig, saved: str | Path) -> list[str]:
    """The top-level fields in which `config` differs from a run's saved config.yaml (sorted; [] = the same run).

    Data paths compare as absolute paths (older runs saved relative ones), and data that moved as one tree (a checkout
    moved or renamed: `follow_moved_data`) is where it lies now: the training files' contents are data.json's to check
    where the run has one (`data_changes`, which `validate_output_dir` runs next). A field added after the run was saved
    counts as unchanged when `config` holds it at its default, at the top level and in each dimension (e.g.
    `reward`, added with objective 'rl'), and so does an adapter section that resolves to the same adapter. Where
    the run lies (`output_dir`) is not a setting: a run folder that was moved or copied is the same run.
    """
    resolved = with_absolute_data_paths(config_to_dict(config))
    previous = follow_moved_data(with_absolute_data_paths(load_yaml(saved)), resolved)
    _fill_fields_at_default(previous, resolved, TrainConfig)
    for before, now in zip(previous.get("dimensions") or [], resolved.get("dimensions") or [], strict=False):
        if isinstance(before, dict) and isinstance(now, dict):
            _fill_fields_at_default(before, now, DimensionConfig)
            for key in ("train", "eval"):  # ... and in each of its pair sources (e.g. `columns`)
                _fill_sources_at_default(before.get(key), now.get(key), PairSource)
    if isinstance(previous.get("rl"), dict) and isinstance(resolved.get("rl"), dict):
        _fill_sources_at_default(previous["rl"].get("prompts"), resolved["rl"].get("prompts"), PromptSource)
    if previous.get("adapter") != resolved.get("adapter") and _same_adapter(config, previous.get("adapter")):
        previous["adapter"] = resolved["adapter"]  # e.g. an adapter field added later, at its default
    keys = (set(previous) | set(resolved)) - {"output_dir"}
    return sorted(key for key in keys if previous.get(key) != resolved.get(key))


def training_data(config: TrainConfig) -> dict[str, Any]:
    """What a run trains on, by content (the run's data.json): for each set of pairs or prompts it reads, their
    count and a sha256 of their ids and texts in order (after split and max_pairs) — a DPO or SFT dimension's
    training pairs, an RL dimension's reward-model fit pairs (a fitted `reward_model`) and RL's prompts — and for
    each reward loaded from a local folder (a saved `reward_model`, a `classifier` folder), its files by name and
    content. `config_changes` compares data by path; this catches a file rebuilt in place or a changed split. A
    classifier named by hub id, a rule or a callable is recorded by its settings alone. Raises what loading the
    data raises."""
    data: dict[str, Any] = {}
    names = config.dimension_names
    for dimension in config.dimensions:
        if dimension.objective != "rl":
            records, _ = dimension_records(dimension.train, dimension.name, names)
            data[f"{dimension.name}: training pairs"] = _content(_pair_texts(records))
            continue
        sources, known = reward_fit_sources(dimension.reward, dimension.name, names)
        for part, part_sources in sources.items():
            records, _ = dimension_records(part_sources, dimension.name, known)
            data[f"{dimension.name}: reward model {part} pairs"] = _content(_pair_texts(records))
        if (folder := reward_folder(dimension.reward)) is not None:
            files = sorted(path for path in folder.rglob("*") if path.is_file())
            data[f"{dimension.name}: reward model files"] = _content(
                (path.relative_to(folder).as_posix(), file_sha256(path)) for path in files
            )
    if config.is_rl:
        prompts = (record for source in config.rl.prompts for record in load_prompt_source(source))
        data["RL prompts"] = _content((record.id, record.prompt) for record in prompts)
    return {"format": 1, "data": data}


def _pair_texts(records: Iterable[Any]) -> Iterator[tuple[str, ...]]:
    return ((record.id, record.prompt, record.chosen, record.rejected) for record in records)


def _content(items: Iterable[tuple[Any, ...]]) -> dict[str, Any]:
    """{"count", "sha256"} of items of texts, hashed one JSON line at a time."""
    digest, count = hashlib.sha256(), 0
    for item in items:
        digest.update(json.dumps(item, ensure_ascii=False).encode() + b"\n")
        count += 1
    return {"count": count, "sha256": digest.hexdigest()}


def data_changes(config: TrainConfig, recorded: dict[str, Any]) -> list[str]:
    """Where the data `config` trains on now differs from a run's data.json (`training_data`), one line each.

    An entry the record lacks is not compared: an older panacea did not record it (reward folders), and a set of
    data added since would be a changed config, which `config_changes` names."""
    now = training_data(config)
    if recorded.get("format") != now["format"] or not isinstance(recorded.get("data"), dict):
        return [f"data.json has format {recorded.get('format')!r}; this version writes {now['format']}"]
    before, after = recorded["data"], now["data"]
    return [
        f"{what}: {_describe_content(before.get(what))} then, {_describe_content(after.get(what))} now"
        for what in sorted(before)
        if before.get(what) != after.get(what)
    ]


def _describe_content(entry: Any) -> str:
    if not isinstance(entry, dict):
        return "none"
    return f"{entry.get('count')} items, sha256 {str(entry.get('sha256'))[:12]}"


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


def _fill_sources_at_default(saved: Any, resolved: Any, section: type) -> None:
    """`_fill_fields_at_default` for each pair of data-source entries of two lists (a saved run's and the config's)."""
    if isinstance(saved, list) and isinstance(resolved, list):
        for before, now in zip(saved, resolved, strict=False):
            if isinstance(before, dict) and isinstance(now, dict):
                _fill_fields_at_default(before, now, section)


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
        states.update({f"{key}.{rank}": tensor for rank, tensor in enumerate(all_gather(accelerator, value))})
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
