"""The steering study: which settings make λ move the model as far as single-objective models lie apart.

Every setting is `configs/demo.yaml` (helpful vs harmless, seed 0) at the study's budget (`PROTOCOL`: 40
steps × 4 pairs per dimension, the demo's budget until 2026-12-02) plus a few `--set` overrides. For each:
train Panacea, score the 11-point λ grid on the held-out pairs, and report per pair set Spearman's ρ with its
own weight, the range ratio R_i (eval/steering.py), the accuracy at its own vertex and at the opposite one, and
the wall time.

The study runs in rounds, each varying one thing at a time around a set of defaults: round 1 around
the defaults before the study, round 2 around the defaults round 1 chose; round 3 turns on each
gradient aggregator (one pair per λ-group, so that λ still varies per pair) around round 2's defaults.
The yardstick R_i divides by is fixed per round's defaults and budget: one single-objective model per
dimension trained with them and the setting's budget overrides (steps) only, so a round's rows differ
only in what Panacea does. (`make demo` divides by the rewarded-soups members instead — plain LoRAs it trains
anyway; until 2026-12-01 it trained the Panacea adapter at each vertex with its full config, which for the
current defaults is the round-2 yardstick.)

Resumable: a finished setting (its study.json) is skipped and an interrupted training resumes.

    nohup python benchmarks/steering_study.py > runs/steering-study.log 2>&1 &   # round 2, every row
    python benchmarks/steering_study.py --table                 # round 2's finished rows as a table
    python benchmarks/steering_study.py --only k4 beta0.5
    python benchmarks/steering_study.py --round 1 --table
    python benchmarks/steering_study.py --points demo           # one row's per-λ table
    python benchmarks/steering_study.py --round 3               # the gradient aggregators at the study budget
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch
from panacea.eval.report import format_table, monotonicity, set_dimension, set_order
from panacea.eval.scorers import PairSet, load_pair_sets, score_run_pairs
from panacea.eval.steering import range_ratios, single_objective_config, single_objective_scores, vertex_index
from panacea.training import TrainConfig, train

from panacea import PanaceaModel, load_base_model
from panacea._io import write_json
from panacea.data import load_dimension
from panacea.preferences import simplex_grid

BASE_CONFIG = "configs/demo.yaml"
# The study's protocol: the budget and held-out pairs the study ran at (the demo's until 2026-12-02, when the demo
# went to 24 steps, 96 + 16 pairs per dimension and 5 grid points to fit ~25 min) and the 11-point grid. Pinned
# here, this also keeps every run's and yardstick's config (so the yardstick's folder digest) as the study trained it.
PROTOCOL = [
    "max_steps=40",
    "warmup_steps=4",
    "save_steps=10",
    "eval_grid=11",
    *(f"dimensions.{d}.train.0.max_pairs=160" for d in (0, 1)),
    *(f"dimensions.{d}.eval.0.max_pairs=12" for d in (0, 1)),
    *(f"dimensions.{d}.eval.1.max_pairs=8" for d in (0, 1)),
]
OUTPUT = Path("runs/steering-study")


@dataclasses.dataclass(frozen=True)
class Setting:
    description: str
    overrides: list[str]  # Panacea's changes from its round's defaults
    budget: list[str] = dataclasses.field(default_factory=list)  # shared with the single-objective yardstick


AGGREGATOR_BATCH = ["preference_sampling=groups", "preference_groups=4", "micro_batch_size=1"]

# Each round varies one thing at a time around a set of defaults, applied to Panacea and the yardstick alike.
# Round 1 ran around the defaults before the study (one direction per weight, one learning rate); its best row
# (`r2_diag_lr`) became the defaults, which round 2 varies around.
ROUNDS: dict[int, tuple[list[str], dict[str, Setting]]] = {
    1: (
        ["adapter.preference_rank=1", "diagonal_lr_ratio=1"],
        {
            "demo": Setting("the previous defaults: k=0, init lora, lr 2e-3 constant, one direction per weight", []),
            "per_step": Setting("one λ per step (Panacea's sampling)", ["preference_sampling=per_step"]),
            "diag_lr": Setting("σ and s at a 10× learning rate (2e-2)", ["diagonal_lr_ratio=10"]),
            "r2": Setting("2 directions per preference weight (ours)", ["adapter.preference_rank=2"]),
            "groups2": Setting(
                "two λ-groups per step, each a micro-batch of 2 pairs per dimension (as aggregators need)",
                ["preference_sampling=groups", "preference_groups=2", "micro_batch_size=2"],
            ),
            "r2_diag_lr": Setting(
                "preference_rank 2 and σ, s at 10× the learning rate (the two best single changes)",
                ["adapter.preference_rank=2", "diagonal_lr_ratio=10"],
            ),
            "alpha0.5": Setting("λ ~ Dirichlet(0.5): more weight near the vertices", ["dirichlet_alpha=0.5"]),
        },
    ),
    2: (
        [],
        {
            "demo": Setting("the defaults: round 1's r2_diag_lr (2 directions per weight, σ, s at 10× the rate)", []),
            "k2": Setting("k = 2 shared singular values", ["adapter.svd_rank=2"]),
            "k4": Setting("k = 4 shared singular values", ["adapter.svd_rank=4"]),
            "k8": Setting("k = 8 shared singular values", ["adapter.svd_rank=8"]),
            "s2": Setting("initial preference scale s = 2", ["adapter.init_preference_scale=2.0"]),
            "beta0.5": Setting("DPO β = 0.5", ["dimensions.0.beta=0.5", "dimensions.1.beta=0.5"]),
            "diag_lr_6e-2": Setting("σ and s at a 30× learning rate (6e-2)", ["diagonal_lr_ratio=30"]),
            "gaussian": Setting(
                "Panacea's own init: A, B ~ N(0, 0.02²), σ = s = 0 (the demo's lr and rates)", ["adapter.init=gaussian"]
            ),
            "steps80": Setting(
                "twice the steps (80 × 4 pairs per dimension, two epochs)", ["max_steps=80"], ["max_steps=80"]
            ),
        },
    ),
    # Round 3: the gradient aggregators at the study budget. They need one λ per step or per λ-group; per step
    # steers backwards here (round 1), so every row draws one λ per pair through λ-groups of one pair each.
    3: (
        [],
        {
            "groups4": Setting(
                "4 λ-groups of one pair per dimension, LS (the aggregators' baseline)", AGGREGATOR_BATCH
            ),
            **{
                method: Setting(f"4 λ-groups of one pair per dimension, aggregator {method}", [*AGGREGATOR_BATCH, a])
                for method, a in (
                    ("mgda", "aggregator=mgda"),
                    ("pcgrad", "aggregator=pcgrad"),
                    ("cagrad", "aggregator=cagrad"),
                    ("clipped_cagrad", "aggregator=clipped_cagrad"),
                    ("plc", "aggregator=plc"),
                )
            },
        },
    ),
}
CURRENT_ROUND = 2


def folder_of(round_: int, name: str) -> Path:
    return OUTPUT / f"round{round_}" / name


def study_config(overrides: list[str]) -> TrainConfig:
    """`configs/demo.yaml` under the study's protocol and `overrides`."""
    return TrainConfig.from_yaml(BASE_CONFIG, [*PROTOCOL, *overrides])


def run_setting(round_: int, name: str) -> dict:
    defaults, settings = ROUNDS[round_]
    setting, folder = settings[name], folder_of(round_, name)
    overrides = [*defaults, *setting.overrides]
    config = study_config([*overrides, f"output_dir={folder / 'run'}"])
    started = time.perf_counter()
    result = train(config, resume=True)
    names = config.dimension_names
    grid = simplex_grid(len(names), config.eval_grid)
    pair_sets = load_pair_sets(config, result.tokenizer)
    scores = score_run_pairs(result.model, pair_sets, grid, config, result.tokenizer.pad_token_id, result.autocast)
    state, tokenizer = result.state, result.tokenizer
    del result
    gc.collect()

    yardstick, root = yardstick_run([*defaults, *setting.budget])
    single = single_objective_scores(yardstick, pair_sets, tokenizer.pad_token_id, root=root)
    rho = monotonicity(grid, scores, names)
    ratios = range_ratios(grid, scores, names, single)
    vertices = {set_name: {} for set_name in rho}
    for set_name in rho:
        own = names.index(set_dimension(set_name))
        for label, index in (("own", own), ("other", 1 - own)):
            vertices[set_name][label] = scores[vertex_index(grid, index)][set_name]
    record = {
        "setting": name,
        "round": round_,
        "description": setting.description,
        "command": f"python benchmarks/steering_study.py --round {round_} --only {name}",
        "config": BASE_CONFIG,
        "overrides": overrides,
        "yardstick_overrides": [*defaults, *setting.budget],
        "yardstick": str(root),
        "seed": config.seed,
        "train_minutes": state.train_seconds / 60,
        "tokens": state.tokens_seen,
        "wall_minutes": (time.perf_counter() - started) / 60,
        "spearman": rho,
        "range_ratio": ratios,
        "vertices": vertices,
        "single_objective": single,
        "points": [{"preference": p, "scores": s} for p, s in zip(grid.tolist(), scores, strict=True)],
    }
    write_json(folder / "study.json", record)
    return record


def yardstick_run(overrides: list[str]) -> tuple[TrainConfig, Path]:
    """The yardstick's config and folder, named by a digest of its settings: each round's defaults and each budget
    get their own single-objective models, and a changed default trains new ones instead of reusing old ones."""
    config = study_config([*overrides, f"output_dir={OUTPUT / 'yardstick'}"])
    settings = {key: value for key, value in config.to_dict().items() if key != "output_dir"}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return config, OUTPUT / "yardstick" / digest


def generalisation(round_: int, name: str, pairs: int) -> dict:
    """Seen vs held-out: accuracy and margin on `pairs` training pairs (seen in training) and `pairs` test pairs
    per dimension, plus XSTest, for Panacea at each vertex and for each single-objective model (issue 7, item 5)."""
    defaults, settings = ROUNDS[round_]
    setting, folder = settings[name], folder_of(round_, name)
    config = study_config([*defaults, *setting.overrides, f"output_dir={folder / 'run'}"])
    base, tokenizer = load_base_model(config.model, dtype=config.dtype, device="cpu")
    names, pair_sets, truncation = config.dimension_names, [], {}
    for dimension in config.dimensions:
        seen, stats = load_dimension(
            dimension.train, dimension.name, names, tokenizer, config.max_length, config.max_prompt_length
        )
        truncation[dimension.name] = str(stats)
        pair_sets.append(PairSet(dimension.name, "seen", seen[:pairs], dimension.beta))
        for source in dimension.eval:
            source = dataclasses.replace(source, max_pairs=pairs)
            held_out, _ = load_dimension(
                [source], dimension.name, names, tokenizer, config.max_length, config.max_prompt_length
            )
            pair_sets.append(PairSet(dimension.name, Path(source.path).name.split(".")[0], held_out, dimension.beta))
    _, root = yardstick_run([*defaults, *setting.budget])
    models = {"panacea": (folder / "run", simplex_grid(len(names), 2))}
    for dimension in names:
        models[f"only {dimension}"] = (
            root / dimension,
            torch.tensor([single_objective_config(config, dimension).fixed_preference]),
        )
    rows = {}
    for label, (folder, preferences) in models.items():
        model = PanaceaModel.from_pretrained(base, folder)
        results = score_run_pairs(model, pair_sets, preferences, config, tokenizer.pad_token_id)
        base = model.unload()
        for preference, result in zip(preferences.tolist(), results, strict=True):
            rows[f"{label} at {preference}"] = result
    record = {"setting": name, "pairs": pairs, "truncation": truncation, "scores": rows}
    write_json(folder / "generalisation.json", record)
    sets = [pair_set.name for pair_set in pair_sets]
    lines = ["| model | " + " | ".join(f"{s} (n={len(p.pairs)})" for s, p in zip(sets, pair_sets, strict=True)) + " |"]
    lines.append("|" + "---|" * (len(sets) + 1))
    for label, result in rows.items():
        cells = [f"{result[s]['accuracy']:.3f} / {result[s]['margin']:+.3f}" for s in sets]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    return record


def table(records: list[dict]) -> str:
    """One row per setting: R (margin, then accuracy) per pair set, the smallest ρ, accuracy at the own vertex, time."""
    sets = set_order(records[0]["spearman"], study_config([]).dimension_names)
    short = " / ".join(sets)
    header = [
        "setting",
        f"R margin ({short})",
        "R accuracy (same order)",
        "min ρ margin / accuracy",
        "accuracy at own vertex (same order)",
        "train min",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in records:
        ratio, rho, vertex = record["range_ratio"], record["spearman"], record["vertices"]
        cells = [
            f"`{record['setting']}`",
            " / ".join(_signed(ratio[s]["margin"]) for s in sets),
            " / ".join(_signed(ratio[s]["accuracy"]) for s in sets),
            " / ".join(_signed(_lowest(rho[s][score] for s in sets)) for score in ("margin", "accuracy")),
            " / ".join(f"{vertex[s]['own']['accuracy']:.2f}" for s in sets),
            f"{record['train_minutes']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _signed(value: float) -> str:
    """+0.25, -1.00, or nan (R is nan where the single-objective models tie)."""
    return "nan" if math.isnan(value) else f"{value:+.2f}"


def _lowest(values) -> float:
    """The smallest value that is not nan (a constant score has no ρ); nan if none is."""
    numbers = [value for value in values if not math.isnan(value)]
    return min(numbers) if numbers else math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--round",
        type=int,
        choices=list(ROUNDS),
        default=CURRENT_ROUND,
        help="the round (default: %(default)s)",
    )
    parser.add_argument("--only", nargs="+", metavar="SETTING", help="run these settings of the round (default: all)")
    parser.add_argument("--table", action="store_true", help="print the round's finished rows and exit")
    parser.add_argument("--points", metavar="SETTING", help="print one finished row's per-λ table and exit")
    parser.add_argument(
        "--generalisation",
        type=int,
        metavar="N",
        help="for each --only setting (default: demo): score N seen and N held-out pairs per dimension at the vertices",
    )
    args = parser.parse_args(argv)
    settings = ROUNDS[args.round][1]
    unknown = sorted(set(args.only or ()) - set(settings) | ({args.points} - set(settings) - {None}))
    if unknown:
        parser.error(f"round {args.round} has no setting {', '.join(unknown)}; it has {', '.join(settings)}")
    if args.points:
        record = json.loads((folder_of(args.round, args.points) / "study.json").read_text())
        grid = torch.tensor([point["preference"] for point in record["points"]])
        names = study_config([]).dimension_names
        scores = [point["scores"] for point in record["points"]]  # format_table orders the sets (set_order)
        print(format_table(grid, scores, names, record["spearman"]))
        return 0
    if args.generalisation:
        for name in args.only or ["demo"]:
            generalisation(args.round, name, args.generalisation)
        return 0
    if not args.table:
        for name in args.only or settings:
            if (folder_of(args.round, name) / "study.json").is_file():
                print(f"{name}: done, skipped")
                continue
            print(f"\n=== round {args.round}, {name}: {settings[name].description}", flush=True)
            record = run_setting(args.round, name)
            print(json.dumps({"setting": name, "range_ratio": record["range_ratio"], "spearman": record["spearman"]}))
    done = [folder_of(args.round, name) / "study.json" for name in settings]
    finished = [json.loads(path.read_text()) for path in done if path.is_file()]
    if finished:
        print(table(finished))
    return 0


if __name__ == "__main__":
    sys.exit(main())
