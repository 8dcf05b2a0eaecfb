"""`panacea compare RUN…`: the fronts of several evaluated runs side by side, measured against one reference point.

Each run must have been evaluated (`panacea eval RUN`, same grid and the same scorer settings: the same pairs
or prompts, reward models and decoding). A rewarded-soups run contributes one row per interpolation mode it
was evaluated in. The front metrics are recomputed here with one reference point for every run (ALGORITHMS.md,
"Front metrics": per objective, the minimum over every point of every run minus 1 % of the range, unless given),
so the numbers of one table are comparable; a run's own results.json used a reference of its own.

Writes `compare.json`, `compare.md` and `compare.png` (all fronts on shared axes) into the output folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from panacea._io import read_json, write_json, write_text

from .metrics import front_metrics, reference_point
from .report import MONOTONE_RHO, plot_fronts, rises
from .sweep import RESULTS_JSON


def run_results(path: str | Path) -> list[dict]:
    """The evaluation documents of a run folder: RUN/eval/results.json, or one per soups mode in RUN/eval/<mode>/."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no run folder at {path}.")
    files = [path / "eval" / RESULTS_JSON] + sorted((path / "eval").glob(f"*/{RESULTS_JSON}"))
    documents = [read_json(file) for file in files if file.is_file()]
    if not documents:
        raise FileNotFoundError(f"{path} has not been evaluated (no eval/{RESULTS_JSON}); run `panacea eval {path}`.")
    return documents


def compare(documents: Sequence[dict], scorer: str = "pairs", reference: Sequence[float] | None = None) -> dict:
    """One row per document: the front metrics against one shared reference point, the training cost, the switch."""
    if len(documents) < 2:
        raise ValueError(f"compare needs at least two evaluated runs, got {len(documents)}.")
    first = documents[0]
    for document in documents[1:]:
        _require_same(first, document, "dimensions", "dimensions")
        _require_same(first, document, "grid", "λ grid (use the same --grid)")
    for document in documents:
        if scorer not in document["scorers"]:
            raise ValueError(
                f"{document['run']} was not evaluated with the {scorer!r} scorer; run `panacea eval` on it."
            )
        if document["scorers"][scorer]["settings"] != first["scorers"][scorer]["settings"]:
            raise ValueError(
                f"{document['run']} and {first['run']} were scored with different {scorer!r} settings (other pairs, "
                "prompts, reward models or decoding); evaluate both with the same settings."
            )
    dimensions, grid = first["dimensions"], np.asarray(first["grid"])
    fronts = [_objectives(document, scorer) for document in documents]
    if reference is not None and len(reference) != len(dimensions):
        raise ValueError(f"the reference point needs {len(dimensions)} values ({dimensions}), got {list(reference)}.")
    r = np.asarray(reference, dtype=float) if reference is not None else reference_point(fronts)
    rows = []
    for document, front in zip(documents, fronts, strict=True):
        rows.append(
            {
                "label": document.get("label", document["run"]),
                "run": document["run"],
                "kind": document.get("kind", "panacea"),
                "mode": document.get("mode"),
                "metrics": front_metrics(grid, front, r),
                "training": document.get("training", {}),
                "switch_seconds": document.get("switch_seconds"),
                "objectives": front.tolist(),
            }
        )
    return {
        "scorer": scorer,
        "objective": first["scorers"][scorer]["objective"],
        "dimensions": dimensions,
        "grid": grid.tolist(),
        "reference": r.tolist(),
        "reference_policy": "given"
        if reference is not None
        else "shared: per objective, the minimum over every point of every run minus 1 % of its range",
        "rows": rows,
    }


def format_comparison(comparison: dict[str, Any]) -> str:
    """The Markdown table of a comparison, with its reference point and objective."""
    dimensions = comparison["dimensions"]
    header = ["run", "hypervolume ↑", "inner product ↑", "sparsity ↓", "spacing ↓"]
    header += [f"ρ {name}" for name in dimensions]
    header += ["budget", "steps", "tokens", "train min", "adapter MB", "switch ms"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in comparison["rows"]:
        metrics, training = row["metrics"], row["training"]
        rho = [f"{value:+.2f}" + ("" if rises(value) else " ⚠") for value in metrics["monotonicity"]]
        cells = [
            row["label"],
            f"{metrics['hypervolume']:.4g}",
            f"{metrics['inner_product']:+.4f}",
            f"{metrics['sparsity']:.4g}",
            f"{metrics['spacing']:.4g}",
            *rho,
            training.get("budget") or ("Panacea" if row["kind"] == "panacea" else "-"),
            _count(training.get("steps")),
            _count(training.get("tokens")),
            f"{training['train_seconds'] / 60:.1f}" if training.get("train_seconds") is not None else "-",
            f"{training['adapter_bytes'] / 2**20:.2f}" if training.get("adapter_bytes") is not None else "-",
            f"{row['switch_seconds'] * 1e3:.3f}" if row.get("switch_seconds") is not None else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    reference = "(" + ", ".join(f"{value:+.4f}" for value in comparison["reference"]) + ")"
    return (
        f"Objective ({comparison['scorer']} scorer): {comparison['objective']}. {len(comparison['grid'])} grid "
        f"points; one reference point for every run: {reference} ({comparison['reference_policy']}). "
        f"⚠: ρ < {MONOTONE_RHO} or undefined (the objective does not rise steadily with its own weight). "
        "Budget: 'split' = rewarded soups at Panacea's total steps and tokens, 'full' = each soup member at "
        "Panacea's whole budget.\n\n" + "\n".join(lines)
    )


def compare_paths(
    paths: Sequence[str | Path], *, scorer: str = "pairs", output_dir: str | Path = "runs/compare"
) -> dict:
    """`panacea compare`: read every run's evaluation, compare, write compare.json / compare.md / compare.png."""
    documents = [document for path in paths for document in run_results(path)]
    comparison = compare(documents, scorer)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "compare.json", comparison)
    write_text(output_dir / "compare.md", format_comparison(comparison) + "\n")
    fronts = [(row["label"], comparison["grid"], row["objectives"]) for row in comparison["rows"]]
    panel = f"{scorer}: {comparison['objective']}"
    plot_fronts([(panel, fronts)], comparison["dimensions"], output_dir / "compare.png", title="fronts over the λ grid")
    return comparison


def _objectives(document: dict, scorer: str) -> np.ndarray:
    points = document["scorers"][scorer]["points"]
    return np.asarray([[point["objectives"][name] for name in document["dimensions"]] for point in points])


def _require_same(first: dict, other: dict, key: str, what: str) -> None:
    if first[key] != other[key]:
        raise ValueError(
            f"{other['run']} and {first['run']} differ in their {what}: {other[key]!r} vs {first[key]!r}; "
            "a comparison needs the same."
        )


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"
