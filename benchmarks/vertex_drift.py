"""How far each vertex of a run moves the base model's weights: per adapted linear layer, the Frobenius norm of the
run's weight update ‖ΔW‖_F at λ = e_i — a Panacea run's update there, a rewarded-soups run's member i — read from the
plain peft LoRA that the run's own `export_lora` writes, so that both kinds are measured by one path.

A diagnostic for the issue "Win it fairly" (docs/benchmarks.md): whether a Panacea vertex drifts further from the base
model than the soups member trained on the same pairs, the suspected cause of over-optimisation (repetition loops).
It reads weights only (no forward pass), a few seconds per run.

    python benchmarks/vertex_drift.py runs/hh-2d runs/soups-hh-2d
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from panacea.eval.sweep import load_run
from safetensors.torch import load_file


def lora_update_norms(folder: str | Path) -> dict[str, float]:
    """‖scaling · B A‖_F of every module of the peft LoRA saved in `folder` (uniform rank and alpha)."""
    folder = Path(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(f"{folder}: per-module ranks or alphas (rank_pattern/alpha_pattern) are not supported here.")
    rank = config["r"]
    scaling = config["lora_alpha"] / (math.sqrt(rank) if config.get("use_rslora") else rank)
    weights = load_file(folder / "adapter_model.safetensors")
    suffix = ".lora_A.weight"
    return {
        key[: -len(suffix)]: float(
            torch.linalg.matrix_norm(weights[key[: -len(suffix)] + ".lora_B.weight"].double() @ weights[key].double())
            * scaling
        )
        for key in sorted(weights)
        if key.endswith(suffix)
    }


def vertex_drift(path: str | Path, mode: str = "ab") -> dict[str, dict[str, float]]:
    """Per dimension of the run: the mean and median over modules of ‖ΔW‖_F at its vertex, and the module count."""
    run = load_run(path, device="cpu", mode=mode)
    drift = {}
    for index, name in enumerate(run.dimensions):
        vertex = [float(index == other) for other in range(len(run.dimensions))]
        with tempfile.TemporaryDirectory() as scratch:
            run.model.export_lora(vertex, Path(scratch) / "lora")
            norms = np.array(list(lora_update_norms(Path(scratch) / "lora").values()))
        drift[name] = {"mean": float(norms.mean()), "median": float(np.median(norms)), "modules": len(norms)}
    return drift


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="training run folders (Panacea or rewarded soups)")
    args = parser.parse_args(argv)
    drifts = {run: vertex_drift(run) for run in args.runs}
    first = drifts[args.runs[0]]
    print(f"| run | vertex | mean ‖ΔW‖_F | median | modules | mean vs {args.runs[0]} |")
    print("|---|---|---|---|---|---|")
    for run, drift in drifts.items():
        for name, row in drift.items():
            ratio = f"{row['mean'] / first[name]['mean']:.2f}×" if name in first else "-"
            print(f"| {run} | {name} | {row['mean']:.4f} | {row['median']:.4f} | {row['modules']} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
