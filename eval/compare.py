"""`panacea compare RUN…`: the fronts of several evaluated runs side by side, measured against one reference point.

Each run must have been evaluated (`panacea eval RUN`, same grid and the same scorer settings: the same pairs
or prompts, reward models and decoding). A rewarded-soups run contributes one row per interpolation mode it
was evaluated in. The front metrics are recomputed here with one reference point for every run (ALGORITHMS.md,
"Front metrics": per objective, the minimum over every point of every run minus 1 % of the range, unless given),
so the numbers of one table are comparable; a run's own results.json used a reference of its own.

Writes `compare.json`, `compare.md` and `compare.png` (all fronts on shared axes) into the output folder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from panacea._io import read_json, write_json, write_text

from .metrics import front_metrics, reference_point
from .report import MONOTONE_RHO, plot_fronts, rises
from .sweep import RESULTS_JSON, run_label


def run_results(path: str | Path) -> list[dict]:
    """The evaluation documents of a run folder: RUN/eval/results.json, or one per soups mode in RUN/eval/<mode>/."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no run folder at {path}.")
    files = [path / "eval" / RESULTS_JSON] + sorted((path / "eval").glob(f"*/{RESULTS_JSON}"))
    documents = [_checked(read_json(file), file, path) for file in files if file.is_file()]
    if not documents:
        raise FileNotFoundError(f"{path} has not been evaluated (no eval/{RESULTS_JSON}); run `panacea eval {path}`.")
    return documents


def _checked(document: dict, file: Path, run: Path) -> dict:
    """`document` if it holds what a comparison reads, else one error naming the file and what is missing."""
    if (problem := _document_problem(document)) is not None:
        raise ValueError(
            f"{file} is not a complete `panacea eval` results document ({problem}); run `panacea eval {run}` again."
        )
    return document


def _document_problem(document: dict) -> str | None:
    for key, kind in (("run", str), ("dimensions", list), ("grid", list), ("scorers", dict)):
        if not isinstance(document.get(key), kind):
            return f"no {key!r} ({kind.__name__})"
    for name, scorer in document["scorers"].items():
        if not isinstance(scorer, dict) or not all(key in scorer for key in ("objective", "settings", "points")):
            return f"scorer {name!r} lacks its objective, settings or points"
        points = scorer["points"]
        if not isinstance(points, list) or len(points) != len(document["grid"]):
            return f"scorer {name!r} does not have one point per λ of its {len(document['grid'])}-point grid"
        for index, point in enumerate(points):
            objectives = point.get("objectives") if isinstance(point, dict) else None
            if not isinstance(objectives, dict) or not all(
                isinstance(objectives.get(dimension), (int, float)) for dimension in document["dimensions"]
            ):
                return f"scorer {name!r}, point {index}: not a number for every dimension of {document['dimensions']}"
    return None


def compare(documents: Sequence[dict], scorer: str = "pairs", reference: Sequence[float] | None = None) -> dict:
    """One row per document: the front metrics against one shared reference point, the training cost, the switch.

    `reference`: a point of your own (one value per dimension) instead of the shared minimum; a point not above it
    in every objective adds nothing to a hypervolume.
    """
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
    if reference is not None and (
        len(reference) != len(dimensions) or not all(math.isfinite(value) for value in reference)
    ):
        raise ValueError(
            f"the reference point needs {len(dimensions)} finite values ({', '.join(dimensions)}), "
            f"got {list(reference)}."
        )
    labels = [document.get("label", document["run"]) for document in documents]
    if repeated := sorted({label for label in labels if labels.count(label) > 1}):
        raise ValueError(f"two fronts are labelled {repeated[0]!r}: is one run given twice? Give each run once.")
    r = np.asarray(reference, dtype=float) if reference is not None else reference_point(fronts)
    panacea = [document for document in documents if document.get("kind", "panacea") == "panacea"]
    panacea_steps = {document.get("training", {}).get("steps") for document in panacea} - {None}
    rows = []
    for document, label, front in zip(documents, labels, fronts, strict=True):
        rows.append(
            {
                "label": label,
                "run": document["run"],
                "kind": document.get("kind", "panacea"),
                "mode": document.get("mode"),
                "metrics": front_metrics(grid, front, r),
                "training": document.get("training", {}),
                "budget_matches": _budget_matches(document.get("training", {}), panacea_steps, len(dimensions)),
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
            (training.get("budget") or ("Panacea" if row["kind"] == "panacea" else "-"))
            + ("" if row.get("budget_matches", True) is not False else " ✗"),
            _count(training.get("steps")),
            _count(training.get("tokens")),
            f"{training['train_seconds'] / 60:.1f}" if training.get("train_seconds") is not None else "-",
            f"{training['adapter_bytes'] / 2**20:.2f}" if training.get("adapter_bytes") is not None else "-",
            f"{row['switch_seconds'] * 1e3:.3f}" if row.get("switch_seconds") is not None else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    reference = "(" + ", ".join(f"{value:+.4f}" for value in comparison["reference"]) + ")"
    off_budget = ""
    if any(row.get("budget_matches") is False for row in comparison["rows"]):
        off_budget = (
            " ✗: the row's optimizer steps are not the Panacea rows' (split) or m× them (full), so it is not at the "
            "budget it names."
        )
    return (
        f"Objective ({comparison['scorer']} scorer): {comparison['objective']}. {len(comparison['grid'])} grid "
        f"points; one reference point for every run: {reference} ({comparison['reference_policy']}). "
        f"⚠: ρ < {MONOTONE_RHO} or undefined (the objective does not rise steadily with its own weight). "
        "Budget: 'split' = rewarded soups at Panacea's total steps and tokens, 'full' = each soup member at "
        "Panacea's whole budget." + off_budget + "\n\n" + "\n".join(lines)
    )


def compare_paths(
    paths: Sequence[str | Path],
    *,
    scorer: str = "pairs",
    output_dir: str | Path = "runs/compare",
    reference: Sequence[float] | None = None,
) -> dict:
    """`panacea compare`: read every run's evaluation, compare, write compare.json / compare.md / compare.png.

    Rows are labelled by their folder's name (`hh-2d (panacea)`); runs whose folders share a name (a run and its
    published copy, say) are labelled by the path given instead (`docs/results/hh-2d/hh-2d (panacea)`).
    """
    folders = [Path(path) for path in paths]
    names = [folder.name for folder in dict.fromkeys(folders)]  # a soups folder gives one document per mode
    documents = [
        {
            **document,
            "label": run_label(
                str(folder) if names.count(folder.name) > 1 else folder.name,
                document.get("kind", "panacea"),
                document.get("mode"),
            ),
        }
        for folder in folders
        for document in run_results(folder)
    ]
    comparison = compare(documents, scorer, reference)
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


def _budget_matches(training: dict, panacea_steps: set[int], m: int) -> bool | None:
    """Whether a soups row's optimizer steps are the budget it names against the table's Panacea rows.

    'split' must total the Panacea runs' steps, 'full' m× them; None where there is nothing to check (a Panacea
    row, no Panacea row in the table, or no steps recorded).
    """
    budget, steps = training.get("budget"), training.get("steps")
    if budget not in ("split", "full") or steps is None or not panacea_steps:
        return None
    factor = m if budget == "full" else 1
    return all(steps == factor * panacea for panacea in panacea_steps)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"
