"""Per-λ tables and plots of the pairs scorer, and the monotonicity of each score in its dimension's weight."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .metrics import spearman


def monotonicity(preferences: torch.Tensor, results: Sequence[dict[str, dict[str, float]]], dimensions: Sequence[str]):
    """{set name: {"accuracy": ρ, "margin": ρ}}: Spearman's ρ of each score with the weight on the set's dimension."""
    summary = {}
    for name in results[0]:
        weights = preferences[:, dimensions.index(name.split("/", 1)[0])].tolist()
        summary[name] = {
            score: spearman(weights, [point[name][score] for point in results]) for score in ("accuracy", "margin")
        }
    return summary


def format_table(
    preferences: torch.Tensor,
    results: Sequence[dict[str, dict[str, float]]],
    dimensions: Sequence[str],
    rho: dict[str, dict[str, float]],
) -> str:
    """A Markdown table: one row per λ, per pair set 'accuracy / margin'; a last row with Spearman's ρ."""
    names = list(results[0])
    header = ["λ (" + ", ".join(dimensions) + ")"] + [f"{name} (n={results[0][name]['pairs']})" for name in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for preference, point in zip(preferences.tolist(), results, strict=True):
        cells = ["(" + ", ".join(f"{weight:.1f}" for weight in preference) + ")"]
        cells += [f"{point[name]['accuracy']:.3f} / {point[name]['margin']:+.3f}" for name in names]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["Spearman ρ with own weight"] + [
        f"{rho[name]['accuracy']:+.2f} / {rho[name]['margin']:+.2f}" for name in names
    ]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_pairs(
    preferences: torch.Tensor,
    results: Sequence[dict[str, dict[str, float]]],
    dimensions: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Accuracy and margin of every pair set against the weight on its own dimension, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in results[0]:
        weights = preferences[:, dimensions.index(name.split("/", 1)[0])].numpy()
        order = weights.argsort(kind="stable")
        for axis, score in zip(axes, ("accuracy", "margin"), strict=True):
            values = [results[index][name][score] for index in order]
            axis.plot(weights[order], values, marker="o", label=name)
    for axis, score in zip(axes, ("held-out preference accuracy", "mean implicit-reward margin"), strict=True):
        axis.set_xlabel("weight λ_i on the set's own dimension")
        axis.set_ylabel(score)
        axis.grid(alpha=0.3)
    axes[0].axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    axes[1].axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
    axes[1].legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def results_document(
    preferences: torch.Tensor,
    results: Sequence[dict[str, dict[str, float]]],
    rho: dict[str, dict[str, float]],
    **extra: Any,
) -> dict[str, Any]:
    """The JSON-able record of a sweep: every λ with its scores, the monotonicity, and `extra` (settings, seeds)."""
    return {
        **extra,
        "points": [
            {"preference": preference, "scores": point}
            for preference, point in zip(preferences.tolist(), results, strict=True)
        ],
        "spearman": rho,
    }
