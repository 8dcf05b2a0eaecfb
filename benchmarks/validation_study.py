"""The validation study: which settings give Panacea — and rewarded soups, searched over as many configurations —
the best front on the deciding measure, chosen on validation pairs, never on test.

Every row is configs/hh-2d.yaml (helpful vs harmless, seed 0) trained on split 'fit' (the train prompts less the
validation ones) at the study's budget (`PROTOCOL`) plus its own `--set` overrides, then scored with
`panacea eval --split validation` on the grid (`GRID` points; the validation pairs carved from the train files,
`VALIDATION_PAIRS` per dimension). The study cannot score a test pair: it scores only through the validation split,
which refuses a run that trained on the validation prompts, and `study_config` refuses a protocol that would.

Per row (docs/steering.md, "Round 4"; decided before any row ran): the accuracy hypervolume (r = 0) with its 95 %
paired-bootstrap interval and its difference to the method's `defaults` row with interval and verdict (win / tie
/ loss, the interval alone); win-probability hypervolume beside it; the smallest Spearman ρ of a dimension's
accuracy with its weight; accuracy at each vertex; PLC's veto rate (from the training log; rows without PLC: -);
minutes of training steps (from the run's logs, so a resumed row counts them all). With `--generations`, also
each vertex's refusal rate on the harmful validation prompts, refusal on the helpful ones (over-refusal) and the
share of looping answers, with intervals.

Panacea and rewarded soups each get `len(PANACEA)` rows (a test keeps the counts equal): Panacea one lever at a
time around its defaults, soups a grid over its members' learning rate and β; each method also has one 80-step
row, which says whether the budget binds and is not chosen from (steps are a budget: both methods are compared at
the same one). `--table` names each method's chosen row by the protocol: the most accurate 40-step row whose
validation answers loop at most 5 % at every point (`--only ROW --generations` scores a finished row's answers).
Soups rows are scored in mode `ab`, the authors' recipe. Resumable: a finished row (its row.json) is skipped, an
interrupted training resumes, scored grid points come from the cache.

    nohup python benchmarks/validation_study.py > runs/validation-study.log 2>&1 &   # every row, in PRIORITY order
    python benchmarks/validation_study.py --only panacea/defaults soups/lr2e-3_beta0.1_steps40
    python benchmarks/validation_study.py --table                    # the finished rows
    python benchmarks/validation_study.py --only panacea/rpo1 --generations
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import sys
import time
from pathlib import Path

from panacea.eval.compare import compare
from panacea.eval.sweep import evaluate_path
from panacea.training import TrainConfig, train
from panacea.training.reference import SEED_DIRS_ENV
from panacea.training.soups import train_soups

from panacea._io import read_json, write_json, write_text

BASE_CONFIG = "configs/hh-2d.yaml"
DIMENSIONS = 2
# The study's protocol (docs/steering.md, "Round 4"): 40 steps of hh-2d's 8 pairs per dimension (40 % of its
# budget; the loops of the published hh-2d run showed at 100 steps, not at the demo's 24), trained on 'fit'.
PROTOCOL = [
    "max_steps=40",
    "warmup_steps=4",
    "save_steps=10",
    *(f"dimensions.{d}.train.0.split=fit" for d in range(DIMENSIONS)),
]
GRID = 3  # the vertices and λ = (½, ½): the study ranks settings; the published fronts use the config's grid
VALIDATION_PAIRS = 256  # per dimension (of 495 helpful, 284 harmless)
OUTPUT = Path("runs/validation-study")
# Each finished row's record, validation results and training record (no weights), in git: runs/ does not survive a
# machine change, and a row published here is neither trained nor scored again.
PUBLISHED = Path("docs/results/validation-study")
PUBLISHED_FILES = (
    "config.yaml", "log.jsonl", "manifest.json", "soups/*/config.yaml", "soups/*/log.jsonl",
    "eval-validation/results.json", "eval-validation/results.md", "eval-validation/ab/results.json",
    "eval-validation/ab/results.md",
)  # fmt: skip
AGGREGATOR_BATCH = ["preference_sampling=groups", "preference_groups=4", "micro_batch_size=2"]
BETA = [f"dimensions.{d}.beta" for d in range(DIMENSIONS)]


@dataclasses.dataclass(frozen=True)
class Setting:
    description: str
    overrides: list[str]


PANACEA = {
    "defaults": Setting("the defaults: k = 0, rank 2, σ/s at 10× lr 2e-3 constant, λ per pair, β 0.1", []),
    "lr1e-3": Setting("learning rate 1e-3", ["learning_rate=1e-3"]),
    "cosine": Setting("cosine decay after the warm-up", ["lr_scheduler=cosine"]),
    "diag3": Setting("σ and s at 3× the learning rate", ["diagonal_lr_ratio=3"]),
    "k4": Setting("k = 4 shared singular values", ["adapter.svd_rank=4"]),
    "rank1": Setting("one direction per preference weight", ["adapter.preference_rank=1"]),
    "beta0.3": Setting("DPO β = 0.3", [f"{key}=0.3" for key in BETA]),
    "per_step": Setting("one λ per step (Panacea's sampling)", ["preference_sampling=per_step"]),
    "alpha0.5": Setting("λ ~ Dirichlet(0.5): more weight near the vertices", ["dirichlet_alpha=0.5"]),
    "rpo1": Setting("RPO term α = 1 (the chosen answer's NLL beside DPO)", ["rpo_alpha=1"]),
    "steps80": Setting("twice the steps (80)", ["max_steps=80"]),
    "groups4": Setting("4 λ-groups of 2 pairs per dimension, LS (the aggregators' baseline)", AGGREGATOR_BATCH),
    "mgda": Setting("aggregator MGDA (4 λ-groups)", [*AGGREGATOR_BATCH, "aggregator=mgda"]),
    "pcgrad": Setting("aggregator PCGrad (4 λ-groups)", [*AGGREGATOR_BATCH, "aggregator=pcgrad"]),
    "cagrad": Setting("aggregator CAGrad c = 0.4 (4 λ-groups)", [*AGGREGATOR_BATCH, "aggregator=cagrad"]),
    "clipped_cagrad": Setting(
        "aggregator clipped CAGrad (RACO) c = 0.4 (4 λ-groups)", [*AGGREGATOR_BATCH, "aggregator=clipped_cagrad"]
    ),
    "plc": Setting("aggregator PLC τ = 2 (4 λ-groups)", [*AGGREGATOR_BATCH, "aggregator=plc"]),
    "plc_tau_inf": Setting(
        "aggregator PLC τ = ∞ (every degraded objective vetoed: PLC acting its most)",
        [*AGGREGATOR_BATCH, "aggregator=plc", "aggregator_kwargs.tau=.inf"],
    ),
    "normalized": Setting(
        "loss normalisation across dimensions: each dimension's gradient over its norm, then λ-weighted "
        "(aggregator normalized, 4 λ-groups)",
        [*AGGREGATOR_BATCH, "aggregator=normalized"],
    ),
}


def soups_setting(lr: str, beta: str, steps: int) -> Setting:
    """A rewarded-soups row at the same budget as its Panacea row: its members' learning rate, β and steps."""
    return Setting(
        f"rewarded soups (same budget), learning rate {lr}, β {beta}, {steps} steps",
        ["method=soups", "soups_budget=split", f"learning_rate={lr}", *(f"{key}={beta}" for key in BETA),
         f"max_steps={steps}"],
    )  # fmt: skip


# Its members' learning rate × β at the study's 40 steps, as many configurations as Panacea's 40-step rows, and one
# 80-step row beside Panacea's `steps80` (steps are a budget, not a setting to pick: docs/steering.md round 4).
SOUPS_LEARNING_RATES = ("2e-4", "5e-4", "1e-3", "2e-3", "3e-3", "5e-3", "7e-3", "1e-2", "2e-2")
SOUPS_GRID = [(lr, beta, 40) for lr in SOUPS_LEARNING_RATES for beta in ("0.1", "0.3")]
SOUPS_GRID += [("2e-3", "0.1", 80)]
SOUPS = {f"lr{lr}_beta{beta}_steps{steps}": soups_setting(lr, beta, steps) for lr, beta, steps in SOUPS_GRID}
# The proxy check (decided 2026-12-05, before any row finished): three of Panacea's settings again at hh-2d's own
# budget (100 steps, its warm-up), scored the same way; the 40-step study's ranking is used only if it orders these
# three as the 100-step rows do (docs/steering.md, round 4).
PROXY = ("defaults", "lr1e-3", "rpo1")
PROXY_BUDGET = ["max_steps=100", "warmup_steps=10", "save_steps=10"]  # configs/hh-2d.yaml's
PROXY_ROWS = {
    name: Setting(
        f"{PANACEA[name].description}, at hh-2d's 100 steps (the proxy check)",
        [*PANACEA[name].overrides, *PROXY_BUDGET],
    )
    for name in PROXY
}
METHODS = {"panacea": PANACEA, "soups": SOUPS, "proxy": PROXY_ROWS}
DEFAULTS = {"panacea": "defaults", "soups": "lr2e-3_beta0.1_steps40", "proxy": "defaults"}  # each one's baseline
LOOP_LIMIT = 0.05  # a chosen row's validation answers loop at most this often at every grid point (issue 28's target)
# The order rows run in: each method's defaults, then the levers the published run's failure points at
# (over-optimisation: learning rate, decay, β, the RPO term, steps), then the rest.
PRIORITY = [
    "panacea/defaults",
    "soups/lr2e-3_beta0.1_steps40",
    "panacea/rpo1",
    "panacea/lr1e-3",
    "soups/lr1e-3_beta0.1_steps40",
    "panacea/cosine",
    "proxy/defaults",  # moved up 2026-12-05: whether the defaults loop at the benchmark's 100 steps on validation
    "panacea/beta0.3",
    "soups/lr2e-3_beta0.3_steps40",
    "panacea/steps80",
    "soups/lr2e-3_beta0.1_steps80",
    *(f"proxy/{name}" for name in PROXY),  # before the rest: it decides whether the 40-step ranking may be used
    *(f"panacea/{name}" for name in PANACEA),
    *(f"soups/{name}" for name in SOUPS),
]
PRIORITY = list(dict.fromkeys(PRIORITY))


def folder_of(row: str) -> Path:
    return OUTPUT / row


def study_config(method: str, name: str) -> TrainConfig:
    """`configs/hh-2d.yaml` under the protocol and the row's overrides; refuses one that trains on validation."""
    overrides = [*PROTOCOL, *METHODS[method][name].overrides, f"output_dir={folder_of(f'{method}/{name}') / 'run'}"]
    config = TrainConfig.from_yaml(BASE_CONFIG, overrides)
    for index, dimension in enumerate(config.dimensions):
        splits = {source.split for source in dimension.train}
        if splits != {"fit"}:
            raise ValueError(f"row {method}/{name}: dimensions.{index} trains on {sorted(splits)}, not only 'fit'.")
    return config


def run_row(row: str, *, generations: bool = False) -> dict:
    """Train the row (or resume it), score it on validation, and write its row.json."""
    method, name = row.split("/")
    config = study_config(method, name)
    folder = folder_of(row) / "run"
    started = time.perf_counter()
    if config.method == "soups":
        train_soups(config, resume=True)
    else:
        train(config, resume=True)
    gc.collect()
    results = score_row(row, generations=generations)
    record = {
        "row": row,
        "method": method,
        "description": METHODS[method][name].description,
        "command": f"python benchmarks/validation_study.py --only {row}" + (" --generations" if generations else ""),
        "config": BASE_CONFIG,
        "overrides": [*PROTOCOL, *METHODS[method][name].overrides],
        "seed": config.seed,
        "results": results,
        "wall_minutes": (time.perf_counter() - started) / 60,  # this call's only (a resumed row's is partial)
        "veto_rate": veto_rate(folder),
    }
    write_json(folder_of(row) / "row.json", record)
    publish_row(row)
    return record


def has_generations(row: str) -> bool:
    return loop_shares(read_json(Path(finished_record(row)["results"]))) is not None


def score_generations(row: str) -> dict:
    """Score a finished row's validation prompt sets too (its pairs points come from the cache), then publish it
    again; it needs the row's weights in runs/ (rows are published without them)."""
    folder = folder_of(row) / "run"
    if not (folder / "adapter").is_dir() and not (folder / "manifest.json").is_file():
        raise SystemExit(
            f"{row}: its weights are not in {folder} (rows are published without them); train it again there "
            f"(`rm -r docs/results/validation-study/{row}` and rerun --only {row} --generations)."
        )
    if not (folder_of(row) / "row.json").is_file():
        raise SystemExit(f"{row}: no {folder_of(row) / 'row.json'} on this machine; rerun the row.")
    record = read_json(folder_of(row) / "row.json")
    record["results"] = score_row(row, generations=True)
    record["command"] = f"python benchmarks/validation_study.py --only {row} --generations"
    write_json(folder_of(row) / "row.json", record)
    return publish_row(row)


def score_row(row: str, *, generations: bool) -> str:
    """Score the row's run on validation — its pairs, and with `generations` its answers (scored points come from
    the cache) — and return its results file (soups: mode `ab`'s)."""
    folder = folder_of(row) / "run"
    evaluate_path(
        folder,
        grid_points=GRID,
        scorers=["pairs", "generations"] if generations else ["pairs"],
        limit=VALIDATION_PAIRS,
        mode="ab",
        split="validation",
        progress=False,
    )
    return str(folder / "eval-validation" / ("ab" if row.startswith("soups/") else "") / "results.json")


def publish_row(row: str) -> dict:
    """Copy a finished row's record and files to PUBLISHED/ROW/ (its row.json names the published results)."""
    run, target = folder_of(row) / "run", PUBLISHED / row
    for pattern in PUBLISHED_FILES:
        for file in run.glob(pattern):
            destination = target / "run" / file.relative_to(run)
            destination.parent.mkdir(parents=True, exist_ok=True)
            text = file.read_text()
            if file.name == "config.yaml":  # data paths inside the checkout, relative to it (as fronts.sh publishes)
                text = text.replace(f"{Path.cwd()}/", "")
            write_text(destination, text)
    record = read_json(folder_of(row) / "row.json")
    record["results"] = str(target / Path(record["results"]).relative_to(run.parent))
    write_json(target / "row.json", record)
    return record


def finished_record(row: str) -> dict | None:
    """The row's record: the published one (it survives a new machine), else the one in runs/, else None."""
    for folder in (PUBLISHED / row, folder_of(row)):
        if (folder / "row.json").is_file():
            return read_json(folder / "row.json")
    return None


def veto_rate(run: Path) -> float | None:
    """PLC's share of steps with a veto, from the last row of the run's log (None without PLC)."""
    log = run / "log.jsonl"
    if not log.is_file():
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    rates = [row[key] for row in rows[-1:] for key in row if key.endswith("veto_rate")]
    return float(rates[0]) if rates else None


def rows_table(records: list[dict]) -> str:
    """One row per setting: the accuracy hypervolume and its difference to its method's defaults, on one shared
    set of resamples (the rows share their validation pairs), then the diagnostics."""
    if len(records) < 2:
        return "(fewer than two finished rows)"
    documents = [{**read_json(Path(record["results"])), "label": record["row"]} for record in records]
    baselines = {f"{method}/{name}" for method, name in DEFAULTS.items()}
    present = [label for label in (document["label"] for document in documents) if label in baselines]
    lines = [
        "| row | accuracy HV [95 %] | vs its defaults [95 %], verdict | win-prob HV | min ρ | accuracy at "
        "(1,0) / (0,1) | loops, most at a point | PLC veto rate | train min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    accuracy = compare(documents, objective="accuracy", baseline=present[0] if present else None)
    by_label = {row["label"]: row for row in accuracy["rows"]}
    for other in present[1:]:  # every other method's defaults as its own baseline
        for row in compare(documents, objective="accuracy", baseline=other)["rows"]:
            by_label[row["label"]]["versus"].update(row["versus"])
    settings = [document["scorers"]["pairs"]["settings"] for document in documents]
    probability = compare(documents, objective="win_probability") if all(s == settings[0] for s in settings) else None
    for record in records:
        row = by_label[record["row"]]
        own = f"{record['method']}/{DEFAULTS[record['method']]}"
        versus = row["versus"].get(own, {}).get("hypervolume")
        difference = "-"
        if versus is not None:
            low, high = versus["interval"]
            difference = f"{versus['difference']:+.3f} [{low:+.3f}, {high:+.3f}] {versus['verdict']}"
        hv, interval = row["metrics"]["hypervolume"], row["metric_intervals"]["hypervolume"]
        rho = row["metrics"]["monotonicity"]  # per dimension: Spearman ρ of its accuracy with its weight
        vertices = [row["objectives"][0][0], row["objectives"][-1][1]]
        cells = [
            f"`{record['row']}`",
            f"{hv:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]",
            difference,
            "-" if probability is None else f"{_row(probability, record['row'])['metrics']['hypervolume']:.3f}",
            _lowest(rho),
            " / ".join(f"{value:.3f}" for value in vertices),
            "-" if (shares := loop_shares(_document(documents, record["row"]))) is None else f"{max(shares):.3f}",
            "-" if record["veto_rate"] is None else f"{record['veto_rate']:.2f}",
            _train_minutes(documents, record["row"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    hypervolumes = {label: row["metrics"]["hypervolume"] for label, row in by_label.items()}
    loops = {document["label"]: shares for document in documents if (shares := loop_shares(document)) is not None}
    notes = [proxy_agreement(hypervolumes), *(choice(hypervolumes, method, loops) for method in ("panacea", "soups"))]
    return "\n".join(lines + [f"\n{note}" for note in notes if note])


def _document(documents: list[dict], row: str) -> dict:
    return next(document for document in documents if document["label"] == row)


def _train_minutes(documents: list[dict], row: str) -> str:
    """Minutes of training steps, from the run's own logs (as `panacea compare` counts them): the same whether the
    row trained in one call or resumed in several (its `wall_minutes` counts only the last call)."""
    seconds = _document(documents, row).get("training", {}).get("train_seconds")
    return "-" if seconds is None else f"{seconds / 60:.0f}"


def budget_binds(method: str, name: str) -> bool:
    """Whether the row is one of the 80-step rows, which measure whether the budget binds rather than compete
    (docs/steering.md round 4, "Steps are a budget")."""
    return "max_steps=80" in METHODS[method][name].overrides


def ranking(
    hypervolumes: dict[str, float], method: str, loops: dict[str, list[float]] | None = None
) -> tuple[str | None, str | None, list[str]] | None:
    """The protocol's choice among the method's finished 40-step rows: (chosen, pending, looping). The rows in order
    of accuracy-hypervolume point estimate (an exact tie puts the defaults first); the first whose validation answers
    loop at most LOOP_LIMIT at every grid point (`loops`: per row, the loop share of each point) is `chosen`; a row
    met before it with no loop shares is `pending` (its answers are scored first) and stops the walk; the rows passed
    over for looping are `looping`. If every row loops, the best is chosen. None until the defaults row is finished."""
    loops = loops or {}
    rows = {row.split("/")[1]: value for row, value in hypervolumes.items() if row.startswith(f"{method}/")}
    if DEFAULTS[method] not in rows:
        return None
    candidates = {name: value for name, value in rows.items() if not budget_binds(method, name)}
    ranked = sorted(candidates, key=lambda name: (-candidates[name], name != DEFAULTS[method]))
    looping = []
    for name in ranked:
        shares = loops.get(f"{method}/{name}")
        if shares is None:
            return None, name, looping
        if max(shares) <= LOOP_LIMIT:
            return name, None, looping
        looping.append(name)
    return ranked[0], None, looping


def choice(hypervolumes: dict[str, float], method: str, loops: dict[str, list[float]] | None = None) -> str | None:
    """The method's chosen row by the protocol (`ranking`) as a sentence; with its 80-step rows finished, whether
    the budget binds. None until its defaults row is finished."""
    ranked = ranking(hypervolumes, method, loops)
    if ranked is None:
        return None
    loops = loops or {}
    chosen, pending, looping = ranked
    value = {row.split("/")[1]: hv for row, hv in hypervolumes.items() if row.startswith(f"{method}/")}
    candidates = [name for name in value if not budget_binds(method, name)]
    total = sum(not budget_binds(method, name) for name in METHODS[method])
    text = f"Chosen for {method} ({len(candidates)} of {total} 40-step rows finished): "
    if pending is not None:
        text += (
            f"pending — {pending} ({value[pending]:.3f}) is the best row not yet checked for loops: "
            f"`python benchmarks/validation_study.py --only {method}/{pending} --generations`"
        )
    elif chosen in looping:
        text += f"{chosen} ({value[chosen]:.3f}), though every row loops above {LOOP_LIMIT:.2f}"
    else:
        text += f"{chosen} ({value[chosen]:.3f}; loops at most {max(loops[f'{method}/{chosen}']):.3f})"
    if looping:
        shares = ", ".join(f"{name} {max(loops[f'{method}/{name}']):.3f}" for name in looping)
        text += f"; above it, looping more than {LOOP_LIMIT:.2f} at some point: {shares}"
    longer = {name: hv for name, hv in value.items() if budget_binds(method, name)}
    if longer:
        top, best = max(longer, key=longer.get), max(value[name] for name in candidates)
        verb = "binds" if longer[top] > best else "does not bind"
        text += f"; at 80 steps the best is {top} ({longer[top]:.3f}): the 40-step budget {verb} (point estimates)"
    return text + "."


def check_loops(unavailable: set[str]) -> None:
    """Score the answers of every row the protocol's choice waits on, until none is due (a row that loops makes the
    next one due); each is tried once per call (`unavailable` collects them): a row whose weights are not on this
    machine is reported and left."""
    while due := [row for row in loop_checks_due() if row not in unavailable]:
        for row in due:
            print(f"\n=== {row}: the best row of its method not yet checked for loops; scoring its answers", flush=True)
            unavailable.add(row)  # one try per call: a row that stays due is not scored again
            try:
                score_generations(row)
            except SystemExit as error:
                print(error, flush=True)


def loop_checks_due() -> list[str]:
    """The finished rows whose answers the protocol needs next: per method, the row its choice waits on."""
    hypervolumes, loops = {}, {}
    for row in PRIORITY:
        if (record := finished_record(row)) is None:
            continue
        document = read_json(Path(record["results"]))
        hypervolumes[row] = document["scorers"]["pairs"]["fronts"]["accuracy"]["metrics"]["hypervolume"]
        if (shares := loop_shares(document)) is not None:
            loops[row] = shares
    due = []
    for method in ("panacea", "soups"):
        ranked = ranking(hypervolumes, method, loops)
        if ranked is not None and ranked[1] is not None:
            due.append(f"{method}/{ranked[1]}")
    return due


def loop_shares(document: dict) -> list[float] | None:
    """The share of looping answers at each grid point of a row's validation results; None without generations."""
    generations = document["scorers"].get("generations")
    return None if generations is None else list(generations["statistics"]["loops"]["values"])


def proxy_agreement(hypervolumes: dict[str, float]) -> str | None:
    """Whether the 40-step rows order the PROXY settings by accuracy hypervolume as their 100-step rows do (point
    estimates); None until all six rows are finished."""
    study = [f"panacea/{name}" for name in PROXY]
    full = [f"proxy/{name}" for name in PROXY]
    if not all(row in hypervolumes for row in study + full):
        return None
    order_40 = sorted(PROXY, key=lambda name: -hypervolumes[f"panacea/{name}"])
    order_100 = sorted(PROXY, key=lambda name: -hypervolumes[f"proxy/{name}"])
    verdict = (
        "agree: the 40-step ranking is used"
        if order_40 == order_100
        else ("disagree: the 40-step ranking is not used until the chosen settings are confirmed at 100 steps")
    )
    return f"Proxy check: 40 steps order {' > '.join(order_40)}, 100 steps {' > '.join(order_100)}; {verdict}."


def _row(comparison: dict, label: str) -> dict:
    return next(row for row in comparison["rows"] if row["label"] == label)


def _lowest(values) -> str:
    numbers = [value for value in values if not math.isnan(value)]
    return f"{min(numbers):+.2f}" if numbers else "nan"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="ROW", help="run these rows, e.g. panacea/rpo1 (default: all)")
    parser.add_argument("--table", action="store_true", help="print the finished rows as a table and exit")
    parser.add_argument("--generations", action="store_true", help="also score the validation prompt sets")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(PRIORITY))
    if unknown:
        parser.error(f"no row {', '.join(unknown)}; rows are METHOD/NAME: {', '.join(PRIORITY)}")
    if not args.table:
        # The base model's log-probs on the fit pairs are committed there (as fronts.sh and make demo read them).
        seed = str(Path("benchmarks/reference-logps").resolve())
        os.environ[SEED_DIRS_ENV] = os.pathsep.join(filter(None, [seed, os.environ.get(SEED_DIRS_ENV)]))
        unavailable: set[str] = set()  # rows due a loop check whose weights are not on this machine
        for row in args.only or PRIORITY:
            if not args.only:
                check_loops(unavailable)
            if (folder_of(row) / "row.json").is_file() and not (PUBLISHED / row / "row.json").is_file():
                publish_row(row)  # finished before rows were published
            if finished_record(row) is not None:
                if args.generations and not has_generations(row):
                    print(f"\n=== {row}: finished; scoring its validation answers", flush=True)
                    score_generations(row)
                else:
                    print(f"{row}: done, skipped")
                continue
            print(f"\n=== {row}: {METHODS[row.split('/')[0]][row.split('/')[1]].description}", flush=True)
            # the 100-step proxy rows' answers too: whether the benchmark's budget loops where 40 steps do not
            run_row(row, generations=args.generations or row.startswith("proxy/"))
    if not args.table and not args.only:
        check_loops(unavailable)
    finished = [record for row in PRIORITY if (record := finished_record(row)) is not None]
    print(rows_table(finished))
    return 0


if __name__ == "__main__":
    sys.exit(main())
