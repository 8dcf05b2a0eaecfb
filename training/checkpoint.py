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
    """Where a run stands: the step, the data position of each dimension, and running totals."""

    step: int = 0
    pairs_seen: dict[str, int] = field(default_factory=dict)  # per dimension: pairs drawn from its stream so far
    tokens_seen: int = 0  # non-padding tokens forwarded (prompt + responses), all processes
    train_seconds: float = 0.0  # wall time spent in steps (start-up and checkpoints excluded)
    scalarizer: dict[str, Any] = field(default_factory=dict)  # the scalariser's own state_dict


def checkpoint_path(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step}"


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or None (temporary folders of a killed write are ignored)."""
    folder = Path(output_dir) / CHECKPOINTS
    steps = [
        (int(match.group(1)), path)
        for path in (folder.iterdir() if folder.is_dir() else [])
        if (match := _STEP_FOLDER.match(path.name)) and (path / STATE_FILE).is_file()
    ]
    return max(steps)[1] if steps else None


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


def load_checkpoint(path: str | os.PathLike, model, optimizer, scheduler) -> tuple[TrainState, dict[str, torch.Tensor]]:
    """Restore adapter weights, optimizer and scheduler in place; return (TrainState, RNG states)."""
    path = Path(path)
    try:
        adapter = load_file(path / ADAPTER / "adapter_model.safetensors")
        optimizer_tensors = load_file(path / "optimizer.safetensors")
        rng_states = load_file(path / "rng.safetensors")
    except (SafetensorError, OSError) as error:
        raise ValueError(f"checkpoint {path} is damaged ({error}); delete it to resume from the one before.") from None
    own = model.adapter_state_dict()
    if set(adapter) != set(own):
        raise ValueError(f"checkpoint {path} holds weights of another adapter; it does not belong to this run.")
    with torch.no_grad():
        for key, parameter in own.items():
            parameter.copy_(adapter[key])
    optimizer.load_state_dict(_join_optimizer_state(optimizer_tensors, read_json(path / "optimizer.json")))
    scheduler.load_state_dict(read_json(path / "scheduler.json"))
    raw = read_json(path / STATE_FILE)
    try:
        state = TrainState(**raw)
    except TypeError as error:
        raise ValueError(f"{path / STATE_FILE} is not a trainer state ({error}).") from None
    return state, rng_states


def prune_checkpoints(output_dir: str | os.PathLike, keep: int | None) -> None:
    """Delete all but the newest `keep` complete checkpoints."""
    if keep is None:
        return
    folder = Path(output_dir) / CHECKPOINTS
    complete = sorted(
        (int(match.group(1)), path)
        for path in folder.iterdir()
        if (match := _STEP_FOLDER.match(path.name)) and (path / STATE_FILE).is_file()
    )
    for _, path in complete[:-keep]:
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
