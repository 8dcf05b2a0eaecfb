"""Per-λ tables and plots of the pairs scorer, and the monotonicity of each score in its dimension's weight."""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from panacea._io import atomic_file

from .metrics import spearman


def set_dimension(name: str) -> str:
    """The dimension a pair set's name starts with: 'helpful/xstest' -> 'helpful' (`PairSet.name`)."""
    return name.split("/", 1)[0]


def set_order(names: Iterable[str], dimensions: Sequence[str]) -> list[str]:
    """Set names in one order, whatever order a point's dict came in.

    A scorer returns its sets in its own order, but a cached point or results.json comes back with sorted keys
    (`panacea._io.write_json`), so tables and plots that followed dict order changed their columns when points
    came from the cache. This order is the same for both: by the dimension that prefixes the name
    ('helpful/xstest'), in λ's order, then by name; names without a dimension prefix (prompt sets) last.
    """

    def key(name: str) -> tuple[int, str]:
        prefix = set_dimension(name)
        return (dimensions.index(prefix) if prefix in dimensions else len(dimensions), name)

    return sorted(names, key=key)


def format_weight(weight: float) -> str:
    """A λ weight as a label: at least one decimal and up to three, so every grid's points stay distinct.

    One decimal printed the 5-point grid's 0.25 and 0.75 as 0.2 and 0.8 (bug: the demo's table and plot showed
    λ = (0.8, 0.2) for (0.75, 0.25)).
    """
    text = f"{weight:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def format_preference(preference: Iterable[float]) -> str:
    """'(0.75, 0.25)': a λ as a table cell."""
    return "(" + ", ".join(format_weight(weight) for weight in preference) + ")"


def monotonicity(preferences: torch.Tensor, results: Sequence[dict[str, dict[str, float]]], dimensions: Sequence[str]):
    """{set name: {"accuracy": ρ, "margin": ρ}}: Spearman's ρ of each score with the weight on the set's dimension."""
    summary = {}
    for name in set_order(results[0], dimensions):
        weights = preferences[:, dimensions.index(set_dimension(name))].tolist()
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
    names = set_order(results[0], dimensions)
    header = ["λ (" + ", ".join(dimensions) + ")"] + [f"{name} (n={results[0][name]['pairs']})" for name in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for preference, point in zip(preferences.tolist(), results, strict=True):
        cells = [format_preference(preference)]
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
    for name in set_order(results[0], dimensions):
        weights = preferences[:, dimensions.index(set_dimension(name))].numpy()
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
    return _save(figure, path, title)


def undefined_resamples_note(boot: dict[str, Any]) -> str:
    """'; N of them drew none of some set's prompts …' for a bootstrap record with such resamples, else ''."""
    count = boot.get("undefined_resamples") or 0
    return f"; {count} of them drew none of some set's prompts and are left out of every interval" if count else ""


# A scorer entry's keys that results.md shows as tables (or leaves to results.json: settings, items, the points'
# values); every other key is written out as JSON below them.
TABLED = ("settings", "objective", "objectives", "points", "metrics", "fronts", "items", "statistics", "base")


def format_front(document: dict[str, Any]) -> str:
    """results.md of a sweep: per scorer, every objective's front with 95 % intervals, the per-set details, the
    front metrics with intervals, and monotonicity."""
    dimensions, grid = document["dimensions"], document["grid"]
    lines = [f"# {document.get('label', document['run'])}: {len(grid)} points of the λ grid, seed {document['seed']}"]
    for name, scored in document["scorers"].items():
        lines += ["", f"## {name}"]
        for objective, front in scored.get("fronts", {}).items():
            spec = scored["objectives"][objective]
            default = " (the default objective)" if objective == scored.get("default_objective") else ""
            lines += ["", f"### {objective}{default}: {spec['description']}", ""]
            lines.append(format_objectives_table(grid, front, dimensions))
            lines += ["", format_metrics_table(front["metrics"], front.get("metric_intervals"))]
            lines += ["", format_monotonicity(front["metrics"]["monotonicity"], dimensions)]
        if "bootstrap" in next(iter(scored.get("fronts", {}).values()), {}):
            boot = next(iter(scored["fronts"].values()))["bootstrap"]
            lines += [
                "",
                f"Intervals: 95 % paired bootstrap over {boot['clusters']} prompts ({boot['items']} items), "
                f"{boot['resamples']} resamples, seed {boot['seed']} (docs/algorithms.md §6)"
                f"{undefined_resamples_note(boot)}.",
            ]
        if scored.get("statistics"):
            table = format_statistics_table(grid, scored["statistics"], (scored.get("base") or {}).get("statistics"))
            lines += ["", "### Beside the objectives", "", table]
        lines += ["", "### Per set", "", format_sets_table(grid, scored["points"], dimensions)]
        for key, value in scored.items():
            if key not in TABLED:
                lines += ["", f"{key}: {json.dumps(value)}"]
    return "\n".join(lines)


def format_objectives_table(grid: Sequence[Sequence[float]], front: dict[str, Any], dimensions: Sequence[str]) -> str:
    """One row per λ: each dimension's objective with its 95 % interval."""
    header = ["λ (" + ", ".join(dimensions) + ")", *dimensions]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for preference, values, intervals in zip(grid, front["objectives"], front["intervals"], strict=True):
        cells = [format_preference(preference)]
        cells += [format_interval(value, interval) for value, interval in zip(values, intervals, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_statistics_table(
    grid: Sequence[Sequence[float]], statistics: dict[str, Any], base: dict[str, Any] | None = None
) -> str:
    """One row per λ: each statistic (refusal, loops, length, …) with its 95 % interval; with `base` (an entry's
    `base` statistics: one point each), a last row of the base model's own; a legend below."""
    names = list(statistics)
    header = ["λ", *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, preference in enumerate(grid):
        cells = [format_preference(preference)] + [format_statistic(statistics[name], index) for name in names]
        lines.append("| " + " | ".join(cells) + " |")
    legend = "; ".join(f"{name}: {statistics[name]['description']}" for name in names) + "."
    if base:
        cells = [format_statistic(base[name], 0) if name in base else "-" for name in names]
        lines.append("| " + " | ".join(["base model (adapter off)", *cells]) + " |")
        legend += " The base model's row: its own answers to the same prompts (adapter off, the same decoding)."
    return "\n".join(lines) + f"\n\n{legend}"


def format_statistic(entry: dict[str, Any], index: int) -> str:
    """A statistic (a generations scorer's `statistics` entry) at grid point `index`, with its interval."""
    return format_interval(entry["values"][index], entry["intervals"][index], statistic_digits(entry))


def statistic_digits(entry: dict[str, Any]) -> int:
    """The decimals a statistic is shown with: lengths to one, rates and rewards to three."""
    return 1 if entry["column"] in ("words", "tokens") else 3


def format_interval(value: float, interval: Sequence[float] | None, digits: int = 3, *, sign: bool = False) -> str:
    """'0.612 [0.581, 0.640]': a number and its interval (without one, the bare number); with `sign` every number
    carries its sign, as a difference does: '+0.030 [-0.010, +0.070]'."""
    spec = f"{'+' if sign else ''}.{digits}f"
    number = f"{value:{spec}}"
    return number if interval is None else f"{number} [{interval[0]:{spec}}, {interval[1]:{spec}}]"


def format_sets_table(grid: Sequence[Sequence[float]], points: Sequence[dict], dimensions: Sequence[str]) -> str:
    """One row per λ: every set's summary numbers joined by ' / ' (per-item values are in results.json)."""
    sets = set_order(points[0].get("sets", {}), dimensions)
    shown = {
        name: sorted(
            key
            for key, value in points[0]["sets"][name].items()
            if key not in ("pairs", "prompts") and isinstance(value, (int, float))
        )
        for name in sets
    }
    header = ["λ (" + ", ".join(dimensions) + ")"]
    header += [f"{name} ({' / '.join(shown[name])})" for name in sets]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for preference, point in zip(grid, points, strict=True):
        cells = [format_preference(preference)]
        cells += [" / ".join(_number(point["sets"][name][key]) for key in shown[name]) for name in sets]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_metrics_table(metrics: dict[str, Any], intervals: dict[str, Any] | None = None) -> str:
    """Hypervolume, inner product, sparsity, spacing (with 95 % intervals when given), and the reference point."""
    intervals = intervals or {}
    reference = "(" + ", ".join(f"{value:+.4f}" for value in metrics["reference"]) + ")"
    cells = [
        format_interval(metrics[name], intervals.get(name), 4)
        for name in ("hypervolume", "inner_product", "sparsity", "spacing")
    ]
    return (
        "| hypervolume ↑ | inner product ↑ | sparsity ↓ | spacing ↓ | non-dominated points | reference point |\n"
        "|---|---|---|---|---|---|\n"
        f"| {' | '.join(cells)} | {metrics['num_nondominated']} of {metrics['num_points']} | {reference} |"
    )


PANEL_TITLE_CHARACTERS = 60  # what a 5.2-inch subplot holds at 9 pt
MONOTONE_RHO = 0.9  # a dimension whose objective has Spearman ρ below this with its own weight is flagged


def rises(rho: float) -> bool:
    """Whether an objective rises steadily with its own weight: ρ ≥ MONOTONE_RHO (an undefined ρ does not)."""
    return rho >= MONOTONE_RHO  # NaN compares False


def format_monotonicity(rho: Sequence[float], dimensions: Sequence[str]) -> str:
    """Per dimension: Spearman's ρ of its objective with its own weight, flagged when below MONOTONE_RHO."""
    cells = []
    for name, value in zip(dimensions, rho, strict=True):
        if math.isnan(value):  # a constant objective (or one point) orders nothing: it does not rise
            flag = " **does not change with its weight (ρ undefined)**"
        else:
            flag = "" if rises(value) else f" **non-monotone (ρ < {MONOTONE_RHO})**"
        cells.append(f"{name}: ρ = {value:+.2f}{flag}")
    return "Does each objective rise with its own weight? " + "; ".join(cells) + "."


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def plot_fronts(
    panels: Sequence[tuple[str, Sequence[tuple[str, Sequence[Sequence[float]], Sequence[Sequence[float]]]]]],
    dimensions: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """A PNG with one row per panel (title, fronts); each front (label, grid λ (n, m), objectives (n, m)[, intervals
    (n, m, 2) or None]), drawn with 95 % interval bars on both axes when intervals are given.

    Fronts of one panel share its axes. m = 2: one scatter per row, points joined in grid order (along the
    simplex's one edge) and labelled with their weight on the first dimension. m ≥ 3: the pairwise projections
    of the first three objectives and a 3-D view, points not joined (grid order zigzags across the simplex, so
    lines would draw paths that are not there).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = len(dimensions)
    projections = [(0, 1)] if m == 2 else [(0, 1), (0, 2), (1, 2)]
    columns = len(projections) + (m >= 3)
    figure = plt.figure(figsize=(5.2 * columns, 4.6 * len(panels)))
    for row, (panel, fronts) in enumerate(panels):
        for slot, (i, j) in enumerate(projections):
            axis = figure.add_subplot(len(panels), columns, row * columns + slot + 1)
            for label, grid, objectives, *intervals in fronts:
                x, y = [point[i] for point in objectives], [point[j] for point in objectives]
                (line,) = axis.plot(x, y, marker="o", markersize=4, linewidth=0.8 if m == 2 else 0, label=label)
                if intervals and intervals[0] is not None:  # 95 % interval bars of both objectives
                    bars = np.asarray(intervals[0])  # (n, m, 2)
                    axis.errorbar(
                        x,
                        y,
                        xerr=np.abs(bars[:, i, :].T - np.asarray(x)),
                        yerr=np.abs(bars[:, j, :].T - np.asarray(y)),
                        fmt="none",
                        ecolor=line.get_color(),
                        elinewidth=0.6,
                        alpha=0.5,
                    )
                if m == 2:
                    for weights, xi, yi in zip(grid, x, y, strict=True):
                        axis.annotate(
                            format_weight(weights[0]), (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points"
                        )
            axis.set_xlabel(dimensions[i])
            axis.set_ylabel(dimensions[j])
            axis.grid(alpha=0.3)
            if slot == 0:
                axis.set_title(panel_title(panel, dimensions), fontsize=9)
                axis.legend(fontsize=8)
        if m >= 3:
            axis = figure.add_subplot(len(panels), columns, (row + 1) * columns, projection="3d")
            for label, _, objectives, *_ in fronts:
                axis.scatter(*[[point[k] for point in objectives] for k in range(3)], s=8, label=label)
            axis.set_xlabel(dimensions[0])
            axis.set_ylabel(dimensions[1])
            axis.set_zlabel(dimensions[2])
    return _save(figure, path, title)


def panel_title(panel: str, dimensions: Sequence[str]) -> str:
    """A panel's heading, wrapped to its subplot's width (a scorer's objective is a sentence)."""
    heading = panel + (f" (labels: weight on {dimensions[0]})" if len(dimensions) == 2 else "")
    return textwrap.fill(heading, width=PANEL_TITLE_CHARACTERS)


def plot_front(document: dict[str, Any], path: str | os.PathLike) -> Path:
    """front.png of a sweep: one row per scorer, the front of its default objective with 95 % interval bars."""
    dimensions = document["dimensions"]
    panels = []
    for name, scored in document["scorers"].items():
        objective = scored.get("default_objective")
        front = scored["fronts"][objective] if objective in scored.get("fronts", {}) else None
        objectives = front["objectives"] if front else _objectives(scored, dimensions)
        panels.append(
            (
                f"{name}: {scored['objective']}",
                [(document["run"], document["grid"], objectives, front["intervals"] if front else None)],
            )
        )
    return plot_fronts(panels, dimensions, path, title=f"{document['run']}: front over the λ grid")


def _objectives(scored: dict[str, Any], dimensions: Sequence[str]) -> list[list[float]]:
    return [[point["objectives"][name] for name in dimensions] for point in scored["points"]]


def _save(figure, path: str | os.PathLike, title: str = "") -> Path:
    """Title, lay out and write `figure` as a PNG (its folder created), then free it."""
    import matplotlib.pyplot as plt

    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    with atomic_file(path) as temporary:
        figure.savefig(temporary, dpi=110, format=path.suffix.lstrip(".") or "png")
    plt.close(figure)
    return path
