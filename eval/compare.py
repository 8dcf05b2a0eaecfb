"""`panacea compare RUN…`: the fronts of several evaluated runs side by side, with paired intervals and verdicts.

Each run must have been evaluated (`panacea eval RUN`, same grid and the same scorer settings: the same pairs
or prompts, reward models and decoding). A rewarded-soups run contributes one row per interpolation mode it
was evaluated in. Every front is recomputed here from the per-item values in the results.json files, on the
chosen objective (`--objective`; the scorer's default: accuracy for pairs), against one reference point (0 for
a bounded objective; the shared minimum-less-1 % for the margin diagnostic), with a 95 % paired cluster-bootstrap
interval on every number (one set of resamples for every run: panacea.eval.bootstrap). With `--baseline RUN`,
each other row gets its hypervolume (and other metrics') difference to that run's row(s), with the interval of
the difference and a verdict — win, tie or loss — decided by that interval alone (docs/algorithms.md §6).

On the generations scorer it also sets what the models say side by side (docs/algorithms.md §6, "What the
model says"): each statistic (refusal, over-refusal, loops, length, reward) at every vertex, with a baseline its
paired difference to the baseline's row there; and how far λ moves refusal between the ends (`VERTEX_GAPS`: e.g.
HarmBench refusal at the harmless vertex minus at the helpful one), each with its paired interval.

Writes `compare.json`, `compare.md` and `compare.png` (all fronts on shared axes, with interval bars).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from panacea._io import read_json, write_json, write_text
from panacea._names import SCORER_OBJECTIVES

from .bootstrap import (
    LEVEL,
    RESAMPLES,
    SEED,
    bootstrap_fronts,
    contrast,
    differences,
    interval_pairs,
    point_statistics,
    pooled_mean,
)
from .report import (
    MONOTONE_RHO,
    format_interval,
    format_statistic,
    plot_fronts,
    rises,
    statistic_digits,
    undefined_resamples_note,
)
from .sweep import RESULTS_JSON, eval_folder, run_label

# How far λ moves a statistic between two vertices: (statistic, to the vertex of, from the vertex of). Issue 28's
# target is HarmBench refusal at the harmless vertex minus at the helpful one ≥ 0.5; refusal_harmful pools every
# harmful set (on the validation split, its harmful prompts). Reported where the run has both dimensions.
VERTEX_GAPS = (("refusal_harmbench", "harmless", "helpful"), ("refusal_harmful", "harmless", "helpful"))


def run_results(path: str | Path, split: str = "test") -> list[dict]:
    """The evaluation documents of a run folder: RUN/eval/results.json, or one per soups mode in RUN/eval/<mode>/
    (RUN/eval-validation/… for `split` "validation")."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no run folder at {path}.")
    folder = path / eval_folder(split)
    files = [folder / RESULTS_JSON] + sorted(folder.glob(f"*/{RESULTS_JSON}"))
    documents = [_checked(read_json(file), file, path) for file in files if file.is_file()]
    if not documents:
        flag = "" if split == "test" else f" --split {split}"
        raise FileNotFoundError(
            f"{path} has not been evaluated (no {folder.name}/{RESULTS_JSON}); run `panacea eval {path}{flag}`."
        )
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
        if not all(key in scorer for key in ("objectives", "items", "default_objective")):
            return (
                f"scorer {name!r} has no per-item values (scored before 2026-12-04, when intervals came in): "
                "score it again"
            )
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


def compare(
    documents: Sequence[dict],
    scorer: str = "pairs",
    reference: Sequence[float] | None = None,
    *,
    objective: str | None = None,
    baseline: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict:
    """One row per document: the front metrics with 95 % intervals, the training cost, the switch time; with a
    `baseline` (a run's folder name, or a row's label), each other row's paired difference to it and a verdict.

    `objective`: one of the scorer's objectives (default: the scorer's default). `reference`: a point of your own
    (one value per dimension) instead of the objective's policy (0 for bounded objectives).
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
    dimensions, grid = first["dimensions"], first["grid"]
    entries = [document["scorers"][scorer] for document in documents]
    objective = objective or SCORER_OBJECTIVES[scorer][0]  # the scorer's own, whatever `eval --objective` each run had
    if objective not in entries[0]["objectives"]:
        raise ValueError(
            f"--objective {objective!r} is not one of the {scorer} scorer's objectives: "
            f"{sorted(entries[0]['objectives'])}."
        )
    shared = _scored_alike(entries[0], scorer, objective)
    for document in documents[1:]:
        own = _scored_alike(document["scorers"][scorer], scorer, objective)
        if own != shared:
            missing = object()  # a key absent from one document and None in the other differs too
            differ = sorted(
                key for key in shared.keys() | own.keys() if shared.get(key, missing) != own.get(key, missing)
            )
            raise ValueError(
                f"{document['run']} and {first['run']} were scored with different {scorer!r} settings "
                f"({', '.join(differ)}: other pairs, prompts, reward models, decoding, base model or, except for "
                "accuracy, β); evaluate both with the same settings."
            )
    meant = _measured_alike(entries[0], objective)
    for document in documents[1:]:
        own = _measured_alike(document["scorers"][scorer], objective)
        shared_statistics = meant["statistics"].keys() & own["statistics"].keys()
        differ = ["the objective"] if own["objective"] != meant["objective"] else []
        differ += sorted(name for name in shared_statistics if own["statistics"][name] != meant["statistics"][name])
        if differ:
            raise ValueError(
                f"{document['run']} and {first['run']} define {', '.join(differ)} of the {scorer!r} scorer "
                f"differently (other sets, columns or transforms: evaluated by different panacea versions?); "
                "evaluate both again with this one."
            )
    if reference is not None and (
        len(reference) != len(dimensions) or not all(np.isfinite(value) for value in reference)
    ):
        raise ValueError(
            f"the reference point needs {len(dimensions)} finite values ({', '.join(dimensions)}), "
            f"got {list(reference)}."
        )
    labels = [document.get("label", document["run"]) for document in documents]
    if repeated := sorted({label for label in labels if labels.count(label) > 1}):
        raise ValueError(f"two fronts are labelled {repeated[0]!r}: is one run given twice? Give each run once.")
    baselines = _baseline_rows(documents, labels, baseline) if baseline is not None else []
    measured = bootstrap_fronts(entries, dimensions, grid, objective, reference, resamples=resamples, seed=seed)
    panacea = [document for document in documents if document.get("kind", "panacea") == "panacea"]
    panacea_steps = {document.get("training", {}).get("steps") for document in panacea} - {None}
    rows = []
    for index, (document, label, front) in enumerate(zip(documents, labels, measured["fronts"], strict=True)):
        rows.append(
            {
                "label": label,
                "run": document["run"],
                "kind": document.get("kind", "panacea"),
                "mode": document.get("mode"),
                "metrics": front["metrics"],
                "metric_intervals": front["metric_intervals"],
                "versus": {labels[other]: differences(measured, index, other) for other in baselines if other != index},
                "training": document.get("training", {}),
                "adapter_digest": document.get("adapter_digest"),  # which weights (benchmarks/targets.py checks)
                "budget_matches": _budget_matches(document.get("training", {}), panacea_steps, len(dimensions)),
                "switch_seconds": document.get("switch_seconds"),
                "objectives": front["objectives"],
                "intervals": front["intervals"],
                "statistics": entries[index].get("statistics", {}),  # generations: refusal, loops, … per point
                "base": _base_statistics(entries[index], measured["weights"]),  # generations: the base model's own
            }
        )
    if any(row["statistics"] for row in rows):
        _contrast_statistics(rows, entries, dimensions, grid, measured["weights"], baselines)
    return {
        "scorer": scorer,
        "objective": objective,
        "objective_description": entries[0]["objectives"][objective]["description"],
        "bounded": entries[0]["objectives"][objective].get("bounded", False),
        "dimensions": dimensions,
        "grid": grid,
        "reference": measured["reference"],
        "reference_policy": measured["reference_policy"],
        "bootstrap": measured["bootstrap"],
        "baseline": [labels[index] for index in baselines],
        "rows": rows,
    }


def _contrast_statistics(
    rows: list[dict],
    entries: Sequence[dict],
    dimensions: Sequence[str],
    grid: Sequence[Sequence[float]],
    weights: np.ndarray,
    baselines: Sequence[int],
    level: float = LEVEL,
) -> None:
    """From the paired resamples `weights` shared by every row and grid point: replaces each row's `statistics`
    intervals (stored at eval time, under eval's resamples) by this comparison's, and adds `vertex_gaps`
    ({statistic: the `VERTEX_GAPS` difference between two of its vertices}) and, per baseline, `statistics_versus`
    ({statistic: {vertex's dimension: row − baseline at that vertex}}) and `gaps_versus` (row's gap − baseline's);
    each a `contrast`: the difference, its interval, higher / lower / tie."""
    vertices = grid_vertices(grid, dimensions)
    gaps = [(name, to, of) for name, to, of in VERTEX_GAPS if to in vertices and of in vertices]
    drawn = []  # per row, per statistic: (full-data values (n,), resampled values (B, n))
    for row, entry in zip(rows, entries, strict=True):
        drawn.append(
            {
                name: (pooled_mean(entry, statistic), pooled_mean(entry, statistic, weights))
                for name, statistic in row["statistics"].items()
            }
        )
        row["statistics"] = {
            name: {**statistic, "values": full.tolist(), "intervals": interval_pairs(samples, level)}
            for (name, statistic), (full, samples) in zip(row["statistics"].items(), drawn[-1].values(), strict=True)
        }

    def gap(values: tuple[np.ndarray, np.ndarray], to: str, of: str) -> tuple[float, np.ndarray]:
        full, samples = values
        return full[vertices[to]] - full[vertices[of]], samples[:, vertices[to]] - samples[:, vertices[of]]

    for index, row in enumerate(rows):
        own = drawn[index]
        row["vertex_gaps"] = {
            name: {"to": to, "from": of, **contrast(*gap(own[name], to, of), level)}
            for name, to, of in gaps
            if name in own
        }
        row["statistics_versus"], row["gaps_versus"] = {}, {}
        for other in baselines:
            if other == index:
                continue
            theirs, label = drawn[other], rows[other]["label"]
            shared = [name for name in own if name in theirs]
            row["statistics_versus"][label] = {
                name: {
                    dimension: contrast(
                        own[name][0][point] - theirs[name][0][point],
                        own[name][1][:, point] - theirs[name][1][:, point],
                        level,
                    )
                    for dimension, point in vertices.items()
                }
                for name in shared
            }
            row["gaps_versus"][label] = {}
            for name, to, of in gaps:
                if name in shared:
                    (mine, mine_samples), (base, base_samples) = gap(own[name], to, of), gap(theirs[name], to, of)
                    row["gaps_versus"][label][name] = contrast(mine - base, mine_samples - base_samples, level)


def _base_statistics(entry: dict, weights: np.ndarray) -> dict:
    """The base model's own statistics (adapter off: a generations entry's `base`), redrawn from its point under the
    comparison's resamples `weights` as every row's are; {} for a document scored before the base was reported."""
    base = entry.get("base")
    if not base:
        return {}
    return point_statistics(entry["items"], base["point"], base["statistics"], weights=weights)


def grid_vertices(grid: Sequence[Sequence[float]], dimensions: Sequence[str]) -> dict[str, int]:
    """{dimension: the index of its vertex e_i in `grid`}, for the vertices the grid holds."""
    return {dimensions[point.index(1.0)]: index for index, point in enumerate(grid) if max(point) == 1.0}


def _scored_alike(entry: dict, scorer: str, objective: str) -> dict:
    """The settings two runs must share to be compared on `objective`. A pair's accuracy is the sign of its margin,
    the same for every β > 0, so runs trained (and scored) with different DPO β compare on accuracy; their win
    probabilities and margins scale with β and do not."""
    settings = entry["settings"]
    if scorer == "pairs" and objective == "accuracy":
        sets = {name: {k: v for k, v in pair_set.items() if k != "beta"} for name, pair_set in settings["sets"].items()}
        return {**settings, "sets": sets}
    return settings


def _measured_alike(entry: dict, objective: str) -> dict:
    """What the compared numbers mean, which two runs must share: the objective's per-dimension item columns, sets
    and transforms (and whether it is bounded), and each statistic's; not their values, intervals or wording."""
    spec = entry["objectives"][objective]
    keys = ("column", "sets", "transform")
    return {
        "objective": {"bounded": spec.get("bounded", False), "dimensions": spec["dimensions"]},
        "statistics": {
            name: {key: statistic.get(key) for key in keys} for name, statistic in entry.get("statistics", {}).items()
        },
    }


def _baseline_rows(documents: Sequence[dict], labels: Sequence[str], baseline: str) -> list[int]:
    """The rows `--baseline` names: a row's label, or every row of a run by its folder's name (both soups modes)."""
    named = [index for index, label in enumerate(labels) if label == baseline]
    named = named or [index for index, document in enumerate(documents) if Path(document["run"]).name == baseline]
    named = named or [index for index, label in enumerate(labels) if label.split(" (")[0] == baseline]
    if not named:
        runs = sorted({Path(document["run"]).name for document in documents})
        raise ValueError(f"--baseline {baseline!r} names none of the runs compared: {runs}.")
    return named


def format_comparison(comparison: dict[str, Any]) -> str:
    """The Markdown tables of a comparison: metrics with intervals, differences and verdicts, costs."""
    dimensions, baselines = comparison["dimensions"], comparison.get("baseline", [])
    header = ["run", "hypervolume ↑ [95 %]"]
    header += [f"Δ hypervolume vs {label} [95 %]" for label in baselines]
    header += ["inner product ↑ [95 %]", *(f"ρ {name}" for name in dimensions)]
    header += ["budget", "steps", "tokens", "train min", "adapter MB", "switch ms"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in comparison["rows"]:
        metrics, intervals, training = row["metrics"], row.get("metric_intervals", {}), row["training"]
        rho = [f"{value:+.2f}" + ("" if rises(value) else " ⚠") for value in metrics["monotonicity"]]
        cells = [row["label"], format_interval(metrics["hypervolume"], intervals.get("hypervolume"), 4)]
        for label in baselines:
            versus = row.get("versus", {}).get(label)
            if versus is None:
                cells.append("(baseline)")
                continue
            hv = versus["hypervolume"]
            cells.append(format_difference(hv["difference"], hv["interval"], f"**{hv['verdict']}**", 4))
        cells += [
            format_interval(metrics["inner_product"], intervals.get("inner_product"), 4),
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
    boot = comparison.get("bootstrap", {})
    off_budget = ""
    if any(row.get("budget_matches") is False for row in comparison["rows"]):
        off_budget = (
            " ✗: the row's optimizer steps are not the Panacea rows' (split) or m× them (full), so it is not at the "
            "budget it names."
        )
    verdicts = ""
    if baselines:
        verdicts = (
            " Verdict: win / loss when the 95 % interval of the difference lies above / below 0, else tie "
            "(docs/algorithms.md §6)."
        )
    return (
        f"Objective ({comparison['scorer']} scorer, `{comparison['objective']}`): "
        f"{comparison['objective_description']}. {len(comparison['grid'])} grid points; reference point {reference} "
        f"({comparison['reference_policy']}). Intervals: 95 % paired bootstrap over {boot.get('clusters')} prompts "
        f"({boot.get('items')} items), {boot.get('resamples')} resamples, seed {boot.get('seed')}; every run drawn "
        f"with the same resamples{undefined_resamples_note(boot)}.{verdicts} ⚠: ρ < {MONOTONE_RHO} or undefined (the "
        "objective does not rise steadily with its own weight). Budget: 'split' = rewarded soups at Panacea's total "
        "steps and tokens, 'full' = each soup member at Panacea's whole budget."
        + off_budget
        + "\n\n"
        + "\n".join(lines)
        + "\n\n"
        + format_other_metrics(comparison)
        + (
            f"\n\n{format_vertex_statistics(comparison)}{format_statistic_contrasts(comparison)}"
            if any(row["statistics"] for row in comparison["rows"])
            and grid_vertices(comparison["grid"], comparison["dimensions"])
            else ""
        )
    )


def format_vertex_statistics(comparison: dict[str, Any]) -> str:
    """What each front's model says at the vertices: every statistic (refusal, over-refusal, loops, length, reward)
    with its 95 % interval, one row per run and vertex, then the base model's own (`format_base_rows`)."""
    vertices = grid_vertices(comparison["grid"], comparison["dimensions"])
    legend = {name: entry["description"] for row in comparison["rows"] for name, entry in row["statistics"].items()}
    header = ["run", "vertex", *legend]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in comparison["rows"]:
        for dimension, index in vertices.items():
            cells = [row["label"], dimension]
            for name in legend:
                entry = row["statistics"].get(name)
                cells.append(format_statistic(entry, index) if entry else "-")
            lines.append("| " + " | ".join(cells) + " |")
    base = format_base_rows(comparison["rows"], list(legend))
    described = "; ".join(f"{name}: {text}" for name, text in legend.items())
    if base:
        described += ". Last, the base model's own answers to the same prompts (adapter off, the same decoding)"
    return f"At the vertices (95 % intervals over prompts): {described}.\n\n" + "\n".join(lines + base)


def base_statistics_by_run(rows: Sequence[dict], names: Sequence[str]) -> list[tuple[str | None, dict]]:
    """The base model's own statistics `names` (adapter off: compare rows' `base`) as (label, {name: statistic}): one
    (None, …) where every row that has them has the same, else one per row; none for rows scored before the base was
    reported."""
    # The base model's answers depend on the base model, the prompts and the decoding, which rows compared share
    # (their settings are checked alike), so their statistics agree and one row says it; rewards scored on another
    # card of the same device type could differ by rounding, and then each row shows its own.
    bases = []
    for row in rows:
        if shown := {name: row["base"][name] for name in names if name in row.get("base", {})}:
            bases.append((row["label"], shown))
    if bases and all(base == bases[0][1] for _, base in bases):
        return [(None, bases[0][1])]
    return bases


def format_base_rows(rows: Sequence[dict], names: Sequence[str]) -> list[str]:
    """The base model's own statistics (adapter off) as rows of the vertex table, no vertex
    (`base_statistics_by_run`)."""
    lines = []
    for label, base in base_statistics_by_run(rows, names):
        cells = ["base model (adapter off)" + ("" if label is None else f" of {label}"), "-"]
        cells += [format_statistic(base[name], 0) if name in base else "-" for name in names]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def format_statistic_contrasts(comparison: dict[str, Any]) -> str:
    """The gaps between vertices (with their differences to each baseline), then each statistic's difference to each
    baseline at every vertex: Markdown, each with its interval and direction; "" where there are none."""
    rows, parts, baselines = comparison["rows"], [], comparison.get("baseline", [])
    digits = {name: statistic_digits(entry) for row in rows for name, entry in row["statistics"].items()}
    gaps = list(dict.fromkeys(name for row in rows for name in row.get("vertex_gaps", {})))
    if gaps:
        ends = {name: row["vertex_gaps"][name] for row in rows for name in row.get("vertex_gaps", {})}
        header = ["run", *(f"{name}: {ends[name]['to']} − {ends[name]['from']} vertex" for name in gaps)]
        for label in baselines:
            header += [f"{name}: Δ vs {label}" for name in gaps]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [row["label"], *(format_contrast(row["vertex_gaps"].get(name)) for name in gaps)]
            for label in baselines:
                versus = row.get("gaps_versus", {}).get(label)
                cells += ["(baseline)" if versus is None else format_contrast(versus.get(name)) for name in gaps]
            lines.append("| " + " | ".join(cells) + " |")
        against = ", and that gap's difference to the baseline's" if baselines else ""
        parts.append(
            f"How far λ moves refusal between the ends (one vertex minus the other{against}; 95 % paired intervals "
            "over prompts; higher / lower when the interval excludes 0, else tie):\n\n" + "\n".join(lines)
        )
    vertices = grid_vertices(comparison["grid"], comparison["dimensions"])
    for label in baselines:
        names = list(dict.fromkeys(name for row in rows for name in row.get("statistics_versus", {}).get(label, {})))
        if not names:
            continue
        lines = ["| " + " | ".join(["run", "vertex", *names]) + " |", "|" + "---|" * (len(names) + 2)]
        for row in rows:
            versus = row.get("statistics_versus", {}).get(label)
            if versus is None:
                continue
            for dimension in vertices:
                cells = [format_contrast(versus.get(name, {}).get(dimension), digits[name]) for name in names]
                lines.append("| " + " | ".join([row["label"], dimension, *cells]) + " |")
        parts.append(
            f"At the vertices against {label} (row − baseline at the same vertex, 95 % paired intervals over "
            "prompts; higher / lower when the interval excludes 0, else tie):\n\n" + "\n".join(lines)
        )
    return "".join(f"\n\n{part}" for part in parts)


def format_contrast(entry: dict | None, digits: int = 3) -> str:
    """'+0.300 [+0.210, +0.390] higher', or '-' where there is none."""
    return (
        "-" if entry is None else format_difference(entry["difference"], entry["interval"], entry["direction"], digits)
    )


def format_difference(difference: float, interval: Sequence[float], word: str, digits: int = 3) -> str:
    """'+0.0300 [+0.0100, +0.0500] **win**': a difference, its interval and what it says."""
    return f"{format_interval(difference, interval, digits, sign=True)} {word}"


def format_other_metrics(comparison: dict[str, Any]) -> str:
    """Sparsity and spacing with intervals, beside the number of non-dominated points they are computed on, and their
    verdicts against each baseline row (lower is better). A collapsed front (λ does nothing) scores 0 on both, the
    best value, so they are read only beside that number (docs/algorithms.md §6)."""
    baselines = comparison.get("baseline", [])
    header = ["run", "non-dominated points", "sparsity ↓ [95 %]", "spacing ↓ [95 %]"]
    header += [f"vs {label}: inner product / sparsity / spacing" for label in baselines]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in comparison["rows"]:
        metrics, intervals = row["metrics"], row.get("metric_intervals", {})
        cells = [row["label"], f"{metrics['num_nondominated']} of {metrics['num_points']}"] + [
            format_interval(metrics[name], intervals.get(name), 4) for name in ("sparsity", "spacing")
        ]
        for label in baselines:
            versus = row.get("versus", {}).get(label)
            cells.append(
                "(baseline)"
                if versus is None
                else " / ".join(versus[name]["verdict"] for name in ("inner_product", "sparsity", "spacing"))
            )
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        "Sparsity and spacing are computed on the non-dominated points and score a collapsed front 0, the best "
        "value: read them beside that count."
    )
    return note + "\n\n" + "\n".join(lines)


def compare_paths(
    paths: Sequence[str | Path],
    *,
    scorer: str = "pairs",
    output_dir: str | Path = "runs/compare",
    reference: Sequence[float] | None = None,
    objective: str | None = None,
    baseline: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    split: str = "test",
) -> dict:
    """`panacea compare`: read every run's evaluation, compare, write compare.json / compare.md / compare.png.

    Rows are labelled by their folder's name (`hh-2d (panacea)`); runs whose folders share a name (a run and its
    published copy, say) are labelled by the path given instead (`docs/results/hh-2d/hh-2d (panacea)`).
    """
    if Path(output_dir).exists() and not Path(output_dir).is_dir():  # before any run is read
        raise NotADirectoryError(f"--out {output_dir} is a file; give a folder for compare.json, .md and .png.")
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
        for document in run_results(folder, split)
    ]
    comparison = compare(
        documents, scorer, reference, objective=objective, baseline=baseline, resamples=resamples, seed=seed
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "compare.json", comparison)
    write_text(output_dir / "compare.md", format_comparison(comparison) + "\n")
    fronts = [(row["label"], comparison["grid"], row["objectives"], row["intervals"]) for row in comparison["rows"]]
    panel = f"{scorer}, {comparison['objective']}: {comparison['objective_description']}"
    plot_fronts(
        [(panel, fronts)],
        comparison["dimensions"],
        output_dir / "compare.png",
        title="fronts over the λ grid (95 % intervals)",
    )
    return comparison


def _require_same(first: dict, other: dict, key: str, what: str) -> None:
    if first[key] != other[key]:
        raise ValueError(
            f"{other['run']} and {first['run']} differ in their {what}: {other[key]!r} vs {first[key]!r}; "
            "a comparison needs the same."
        )


def _budget_matches(training: dict, panacea_steps: set[int], m: int) -> bool | None:
    """Whether a soups row's optimizer steps are the budget it names against the table's Panacea rows.

    The Panacea rows train the base budget P (the fewest steps among them) or m× it (a Panacea run at soups-full's
    budget, e.g. NAME-full); 'split' must total P, 'full' m·P. Panacea rows at any other steps leave no one budget
    to match (False). None where there is nothing to check (a Panacea row, no Panacea row in the table, or no steps
    recorded).
    """
    budget, steps = training.get("budget"), training.get("steps")
    if budget not in ("split", "full") or steps is None or not panacea_steps:
        return None
    base = min(panacea_steps)
    return panacea_steps <= {base, m * base} and steps == (m if budget == "full" else 1) * base


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"
