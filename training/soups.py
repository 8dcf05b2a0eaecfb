"""The rewarded-soups baseline (Ramé et al. 2023, arXiv 2306.04488; code alexrame/rewardedsoups): train m LoRAs.

Each member is the Panacea trainer run with `method: lora` at the vertex e_i (`preference_sampling:
fixed`, so only dimension i is forwarded and gets reference log-probs): a plain peft LoRA of the Panacea
adapter's rank and modules, with the same data, objective, optimiser and schedule, seeded alike. The run
folder holds RUN/config.yaml, RUN/soups/<dimension>/ (each a normal run folder whose adapter/ is a
plain peft LoRA) and RUN/manifest.json; `panacea.adapters.SoupModel.from_run` serves λ from it.

Budgets (ours; docs/algorithms.md §7). Panacea trains S = max_steps steps of B = batch_size pairs per
dimension. 'split': each member trains S/m steps of m·B pairs of its own dimension (micro-batches
unchanged, so accumulation grows m-fold): the m members together take S optimizer steps and exactly the
m·S·B pairs (and tokens) Panacea saw, each member the very pairs Panacea drew of its dimension.
warmup_steps shrink the same way (warmup/m, rounded half up). 'full': each member trains S steps of
m·B pairs, m× the budget. save_steps are clipped to a member's steps.
"""

from __future__ import annotations

import dataclasses
import gc
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import PartialState
from panacea.adapters.serialization import WEIGHTS_NAME, base_model_fingerprint
from panacea.adapters.soups import MANIFEST_FORMAT, MANIFEST_NAME

from panacea._io import read_json, write_json

from .checkpoint import ADAPTER, TrainState
from .config import TrainConfig
from .trainer import check_output_dir, train

SOUPS_DIR = "soups"  # RUN/soups/<dimension>/: one member run per dimension
COUNTS = ("steps", "pairs", "prompts", "rollouts", "tokens", "train_seconds")  # summed over the members


@dataclass
class SoupsResult:
    """The run folder and its manifest (per-member steps, pairs, tokens, seconds; totals once complete)."""

    output_dir: Path
    manifest: dict[str, Any]


def member_config(config: TrainConfig, dimension: str) -> TrainConfig:
    """The config of the member trained on `dimension` alone: method 'lora' at its vertex, with its budget."""
    names = config.dimension_names
    if dimension not in names:
        raise ValueError(f"no dimension {dimension!r} in the config; it has {names}.")
    m = len(names)
    split = config.soups_budget == "split"
    steps = config.max_steps // m if split else config.max_steps
    warmup = math.floor(config.warmup_steps / m + 0.5) if split else config.warmup_steps
    return dataclasses.replace(
        config,
        output_dir=str(Path(config.output_dir) / SOUPS_DIR / dimension),
        method="lora",
        soups_budget="split",
        preference_sampling="fixed",
        fixed_preference=[float(name == dimension) for name in names],
        preference_groups=1,
        scalarization="ls",  # one dimension at weight 1: every scalarisation is its loss alone
        aggregator="none",
        aggregator_kwargs={},
        max_steps=steps,
        batch_size=m * config.batch_size,
        warmup_steps=warmup,
        save_steps=min(config.save_steps, steps),
    )


def train_soups(config: TrainConfig, *, resume: bool = False) -> SoupsResult:
    """Train the m members into RUN/soups/<dimension>/ and keep RUN/manifest.json up to date after each.

    With `resume`, members already in the manifest (adapter saved) are skipped and an interrupted one
    continues from its last checkpoint; the config must be the one the run was started with.
    """
    if config.method != "soups":
        raise ValueError(f"train_soups needs TrainConfig.method 'soups', got {config.method!r}; use train().")
    output_dir, state = Path(config.output_dir), PartialState()
    resuming = resume and (output_dir / MANIFEST_NAME).is_file()
    check_output_dir(config, output_dir, resume, state)  # writes RUN/config.yaml, or checks it on --resume
    manifest = read_json(output_dir / MANIFEST_NAME) if resuming else _new_manifest(config)
    retrain = not all(_trained(member_config(config, name)) for name in config.dimension_names)
    if retrain and manifest.get("complete"):  # a member trains again: the run is not complete until it has
        manifest["complete"] = False
        _write_manifest(output_dir, manifest, state)
    for name in config.dimension_names:
        member = member_config(config, name)
        if name in manifest["runs"] and _trained(member):
            state.print(f"rewarded soups: {name!r} is trained already ({member.output_dir}); skipping it")
            continue
        state.print(f"\nrewarded soups: training the LoRA of {name!r} in {member.output_dir}")
        result = train(member, resume=resume)
        manifest["base_model"] = base_model_fingerprint(result.model.base_model)
        manifest["target_modules"] = sorted(result.model.peft_model.peft_config["default"].target_modules)
        manifest["runs"][name] = _member_entry(member, result.state, output_dir)
        _write_manifest(output_dir, manifest, state)
        del result
        gc.collect()
    manifest["complete"] = True
    runs = manifest["runs"].values()
    manifest["total"] = {  # pairs for DPO / SFT, prompts and rollouts for RL: what every member counted
        key: sum(run[key] for run in runs) for key in COUNTS if all(key in run for run in runs)
    }
    _write_manifest(output_dir, manifest, state)
    return SoupsResult(output_dir, manifest)


def _trained(member: TrainConfig) -> bool:
    """Whether the member's final adapter is saved in its folder."""
    return (Path(member.output_dir) / ADAPTER / WEIGHTS_NAME).is_file()


def _new_manifest(config: TrainConfig) -> dict[str, Any]:
    adapter = config.adapter_config()
    return {
        "format_version": MANIFEST_FORMAT,
        "method": "soups",
        "mode": "ab",  # how SoupModel mixes by default: the authors' entry-wise interpolation of A and B
        "dimensions": config.dimension_names,
        "budget": config.soups_budget,
        "rank": adapter.rank,
        "lora_alpha": adapter.rank if adapter.alpha is None else adapter.alpha,
        "seed": config.seed,
        "panacea_budget": _panacea_budget(config),  # what the Panacea run of this config trains, for comparison
        "runs": {},
        "complete": False,
    }


def _panacea_budget(config: TrainConfig) -> dict[str, Any]:
    """Steps and data of the Panacea run of `config`: pairs (B per dimension a step), or RL's prompts and rollouts."""
    steps = config.max_steps
    if config.is_rl:
        rl = config.rl
        return {
            "steps": steps,
            "prompts_per_step": rl.prompts_per_step,
            "rollouts_per_prompt": rl.rollouts_per_prompt,
            "prompts": steps * rl.prompts_per_step,
            "rollouts": steps * rl.prompts_per_step * rl.rollouts_per_prompt,
        }
    return {
        "steps": steps,
        "batch_size": config.batch_size,
        "pairs": len(config.dimensions) * steps * config.batch_size,
    }


def _member_entry(member: TrainConfig, state: TrainState, output_dir: Path) -> dict[str, Any]:
    """One member's budget and what it used (pairs, or an RL member's prompts and rollouts); paths relative to the
    run folder."""
    folder = Path(member.output_dir).relative_to(output_dir)
    data = (
        {"prompts": state.prompts_seen, "rollouts": state.rollouts_seen}
        if member.is_rl
        else {"pairs": sum(state.pairs_seen.values())}
    )
    return {
        "path": str(folder),
        "adapter": str(folder / ADAPTER),
        "max_steps": member.max_steps,
        "batch_size": member.batch_size,
        "warmup_steps": member.warmup_steps,
        "steps": state.step,
        **data,
        "tokens": state.tokens_seen,
        "train_seconds": state.train_seconds,
    }


def _write_manifest(output_dir: Path, manifest: dict[str, Any], state: PartialState) -> None:
    """Write RUN/manifest.json atomically (temporary file + rename), on the main process only."""
    if state.is_main_process:
        write_json(output_dir / MANIFEST_NAME, manifest)
    state.wait_for_everyone()
