"""Checkpoints without pickle: adapter, optimizer, scheduler, RNG and trainer state as safetensors + JSON.

accelerate's `save_state` pickles the optimizer and the RNG states, so we write our own. A
checkpoint folder `checkpoints/step-N/` is filled in a temporary sibling and renamed into place, so
a run killed at any moment leaves only complete checkpoints behind.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from panacea._io import atomic_directory, read_json, write_json

CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
STATE_FILE = "trainer_state.json"
_STEP_FOLDER = re.compile(r"^step-(\d+)$")


@dataclass
class TrainState:
    """Where a run stands: the step, the data position of each dimension, and running totals.

    RL runs (objective `rl`) draw prompts, not pairs: their position is `prompts_seen`, and `reward_moments` holds
    the per-dimension running reward moments (`panacea.training.rl.RunningMoments.state_dict`), restored exactly.
    """

    step: int = 0
    pairs_seen: dict[str, int] = field(default_factory=dict)  # per dimension: pairs drawn from its stream so far
    tokens_seen: int = 0  # non-padding tokens forwarded (prompt + responses), all processes
    train_seconds: float = 0.0  # wall time spent in steps (start-up and checkpoints excluded)
    scalarizer: dict[str, Any] = field(default_factory=dict)  # the scalariser's own state_dict
    prompts_seen: int = 0  # RL: prompts drawn from the prompt stream so far (each answered K times)
    rollouts_seen: int = 0  # RL: responses generated so far
    reward_moments: dict[str, Any] = field(default_factory=dict)  # RL: RunningMoments.state_dict(); {} before step 1


def checkpoint_path(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step}"


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """Every `checkpoints/step-N/` folder, newest first, complete or not (a killed write's temporary isn't one)."""
    folder = Path(output_dir) / CHECKPOINTS
    steps = [
        (int(match.group(1)), path)
        for path in (folder.iterdir() if folder.is_dir() else [])
        if (match := _STEP_FOLDER.match(path.name)) and path.is_dir()
    ]
    return [path for _, path in sorted(steps, reverse=True)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or None (temporary folders of a killed write are ignored)."""
    return next((path for path in checkpoint_folders(output_dir) if (path / STATE_FILE).is_file()), None)


def save_checkpoint(
    path: str | os.PathLike,
    model,
    optimizer: torch.optim.Optimizer,
    scheduler,
    state: TrainState,
    rng_states: dict[str, torch.Tensor],
) -> None:
    """Write one checkpoint folder atomically (call on the main process; `rng_states` hold every process's)."""
    with atomic_directory(path) as staging:
        model.save_pretrained(staging / ADAPTER)
        tensors, optimizer_json = _split_optimizer_state(optimizer.state_dict())
        save_file(tensors, staging / "optimizer.safetensors")
        write_json(staging / "optimizer.json", optimizer_json)
        write_json(staging / "scheduler.json", scheduler.state_dict())
        save_file({key: value.contiguous() for key, value in rng_states.items()}, staging / "rng.safetensors")
        write_json(staging / STATE_FILE, asdict(state))  # written last: its presence marks a complete checkpoint


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored: a file is missing, truncated or malformed, or it is not this run's."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"checkpoint {path} cannot be restored: {reason}.")
        self.path, self.reason = path, reason


@dataclass
class Resumed:
    """The checkpoint a run resumed from, its state, and the newer checkpoints skipped as unusable (with why)."""

    path: Path
    state: TrainState
    rng_states: dict[str, torch.Tensor]
    skipped: dict[Path, str]


def resume_from_latest(output_dir: str | os.PathLike, model, optimizer, scheduler) -> Resumed | None:
    """Restore the newest checkpoint that loads, skipping newer damaged ones; None when there is no checkpoint.

    When checkpoint folders exist but none loads, raise a `ValueError` naming each and why: going back to
    step 0 is the user's decision, never a silent fallback.
    """
    skipped = {}
    for path in checkpoint_folders(output_dir):
        try:
            state, rng_states = load_checkpoint(path, model, optimizer, scheduler)
        except CheckpointError as error:
            skipped[path] = error.reason
            continue
        return Resumed(path, state, rng_states, skipped)
    if not skipped:
        return None
    folder = Path(output_dir) / CHECKPOINTS
    reasons = "; ".join(f"{path.name}: {reason}" for path, reason in skipped.items())
    raise ValueError(
        f"--resume: no checkpoint in {folder} can be restored ({reasons}). Put back a good copy of one, or delete "
        f"{folder} to resume this run from step 0 (its config.yaml stays; its log restarts)."
    )


def load_checkpoint(path: str | os.PathLike, model, optimizer, scheduler) -> tuple[TrainState, dict[str, torch.Tensor]]:
    """Restore adapter weights, optimizer and scheduler in place; return (TrainState, RNG states).

    Every file is read and checked first, so a damaged checkpoint raises `CheckpointError`, naming the file,
    before the model changes.
    """
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(path, f"{STATE_FILE} is missing, so the folder is incomplete")
    adapter = _load_tensors(path, f"{ADAPTER}/adapter_model.safetensors")
    optimizer_tensors = _load_tensors(path, "optimizer.safetensors")
    rng_states = _load_tensors(path, "rng.safetensors")
    own = model.adapter_state_dict()
    if set(adapter) != set(own) or any(adapter[key].shape != parameter.shape for key, parameter in own.items()):
        raise CheckpointError(path, "its adapter weights do not fit this run's adapter")
    optimizer_json, scheduler_state = _read_json(path, "optimizer.json"), _read_json(path, "scheduler.json")
    try:
        optimizer_state = _join_optimizer_state(optimizer_tensors, optimizer_json)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(path, f"optimizer.json does not fit optimizer.safetensors ({error!r})") from None
    try:
        state = TrainState(**_read_json(path, STATE_FILE))
    except TypeError as error:
        raise CheckpointError(path, f"{STATE_FILE} is not a trainer state ({error})") from None
    try:
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(scheduler_state)
    except (KeyError, TypeError, ValueError) as error:  # torch: "loaded state dict contains a parameter group ..."
        raise CheckpointError(path, f"its optimizer state does not fit this run's optimizer ({error})") from None
    with torch.no_grad():
        for key, parameter in own.items():
            parameter.copy_(adapter[key])
    return state, rng_states


def _load_tensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(folder / name)
    except FileNotFoundError:
        raise CheckpointError(folder, f"{name} is missing") from None
    except (SafetensorError, OSError) as error:
        raise CheckpointError(folder, f"{name} is truncated or not a safetensors file ({error})") from None


def _read_json(folder: Path, name: str) -> dict[str, Any]:
    try:
        return read_json(folder / name)
    except FileNotFoundError:
        raise CheckpointError(folder, f"{name} is missing") from None
    except ValueError:
        raise CheckpointError(folder, f"{name} is not a valid JSON object") from None


def prune_checkpoints(output_dir: str | os.PathLike, keep: int | None) -> None:
    """Delete all but the newest `keep` complete checkpoints."""
    if keep is None:
        return
    complete = [path for path in checkpoint_folders(output_dir) if (path / STATE_FILE).is_file()]
    for path in complete[keep:]:
        shutil.rmtree(path)


def _split_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors ('state.<param>.<name>') for safetensors; everything else (param_groups, scalars) for JSON."""
    tensors, scalars = {}, {}
    for param_id, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, entries in data.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(entries)
    return {"state": state, "param_groups": data["param_groups"]}
