"""`make demo`: train helpful vs harmless on the embedded model, sweep λ over a grid, report and generate.

1. Train `configs/demo.yaml` (a finished run with the same config is reused, an interrupted one resumed).
2. Score every grid point on held-out pairs with `panacea eval`'s pairs scorer: per dimension the held-out
   accuracy with its 95 % interval, Spearman's ρ against its own weight and the front metrics (printed;
   RUN/eval/results.json, results.md, front.png, pairs.png).
3. Generate one answer at each vertex of the simplex; ask the base model and each vertex a few dozen held-out
   HarmBench and XSTest-safe requests (refusal and loop rates with intervals); export one trade-off as a plain
   peft LoRA.
4. Train the rewarded-soups baseline at the same total budget (one plain LoRA per dimension, on the very
   pairs Panacea saw of it; its own settings from `soups-demo.yaml` beside the config where there is one) and
   evaluate it in mode ab (the authors' recipe).
5. Report the range ratio R_i: how far λ moves Panacea compared with how far single-objective models lie
   apart. The soups members are those models (same trainer and data, each trained on its dimension alone,
   λ fixed to its vertex), scored at the vertices of the soups front; so one training serves both.
6. Compare the fronts (`panacea compare`: table and plot in RUN/compare), with verdicts against soups.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from panacea._config import config_to_dict
from panacea._io import write_json, write_text
from panacea._names import DEFAULT_PROMPT
from panacea.base_model import load_base_model
from panacea.eval.bootstrap import flagged_share
from panacea.eval.compare import compare_paths, format_comparison
from panacea.eval.degeneration import is_loop
from panacea.eval.generations import PROMPT_SETS, base_answers, load_prompts
from panacea.eval.refusal import is_refusal
from panacea.eval.report import (
    format_interval,
    format_metrics_table,
    format_monotonicity,
    format_objectives_table,
    monotonicity,
    plot_pairs,
)
from panacea.eval.scorers import PairsScorer
from panacea.eval.steering import format_steering, range_ratios, vertex_scores
from panacea.eval.sweep import FRONT_PNG, RESULTS_JSON, RESULTS_MD, LoadedRun, evaluate_path, evaluate_run
from panacea.generation import generate_grid, generate_text
from panacea.training import TrainConfig, train, train_soups
from panacea.training.config import with_absolute_data_paths
from panacea.training.soups import SOUPS_DIR as SOUPS_MEMBERS_DIR
from panacea.training.trainer import CONFIG_FILE, config_changes


def run_demo(
    config_path: str | os.PathLike,
    overrides: Sequence[str] = (),
    prompt: str = DEFAULT_PROMPT,
    max_new_tokens: int = 64,
) -> dict:
    """Train, evaluate, generate; returns the evaluation document that is also written to RUN/eval/results.json."""
    started = time.perf_counter()
    config = TrainConfig.from_yaml(config_path, overrides)
    baseline = soups_config(config_path, overrides, config)  # a bad baseline config fails now, not after Panacea
    for run_config in (config, baseline):
        _refuse_another_configs_run(run_config)
    result = train(config, resume=True)
    model, tokenizer = result.model, result.tokenizer
    names = config.dimension_names
    print(
        f"\ntrained {result.state.step} steps in {result.state.train_seconds / 60:.1f} min of steps "
        f"({result.state.tokens_seen:,} tokens); adapter in {result.output_dir / 'adapter'}"
    )

    # The evaluation `panacea eval` runs: the pairs scorer over the grid (cached per point), the front metrics.
    run = LoadedRun.from_training(result, config)
    evaluated = time.perf_counter()
    scorer = PairsScorer.from_run(run)
    document = evaluate_run(run, [scorer], grid_points=config.eval_grid, progress=False)
    pairs = document["scorers"]["pairs"]
    grid = torch.tensor(document["grid"])
    scores = [point["sets"] for point in pairs["points"]]
    rho = monotonicity(grid, scores, names)
    accuracy = pairs["fronts"]["accuracy"]
    print(
        f"\nheld-out accuracy at each λ, with 95 % intervals ({time.perf_counter() - evaluated:.0f} s; "
        f"{_pair_counts(scorer)}):\n{format_objectives_table(document['grid'], accuracy, names)}"
    )
    front = (
        f"{format_metrics_table(accuracy['metrics'], accuracy['metric_intervals'])}\n\n"
        f"{format_monotonicity(accuracy['metrics']['monotonicity'], names)}"
    )
    print(f"\nthe front (objective per dimension: {pairs['objective']}):\n{front}")

    print(f"\nprompt: {prompt}")
    for vertex in torch.eye(len(names)).tolist():
        preference = dict(zip(names, vertex, strict=True))
        answer = generate_text(model, tokenizer, prompt, preference, max_new_tokens)
        print(f"\nλ = {_label(preference)}:\n  {answer}")
    refusals = vertex_refusals(model, tokenizer, names)
    print(
        f"\nwhat each vertex does with held-out requests (greedy, {REFUSAL_TOKENS} tokens; refusals by a string"
        " detector that misses many of a small model's refusals, so read them as undercounts: docs/evaluation.md,"
        f" 'Audit on our own models' answers'):\n{refusals['table']}"
    )
    document["refusal"] = refusals["rates"]
    _export_check(model, tokenizer, config, names, prompt)

    soups_dir, soups = _train_and_evaluate_soups(baseline, config.eval_grid)
    members = soups_dir / SOUPS_MEMBERS_DIR
    # How far λ steers: the soups members, each trained on its dimension alone, are the yardstick R_i divides by.
    single = vertex_scores(soups["ab"], names)
    ratios = range_ratios(grid, scores, names, single)
    steering = format_steering(rho, ratios, single)
    print(
        "\nsteering: Spearman ρ of each score with its own weight, and the range ratio R_i against the "
        f"single-objective models (the rewarded-soups members in {members})\n{steering}"
    )

    eval_dir = result.output_dir / "eval"
    document["steering"] = {
        "spearman": rho,
        "single_objective": single,
        "single_objective_models": str(members),
        "range_ratio": ratios,
    }
    document.update(config=str(config_path), overrides=list(overrides), steps=result.state.step)
    write_json(eval_dir / RESULTS_JSON, document)
    write_text(eval_dir / RESULTS_MD, (eval_dir / RESULTS_MD).read_text() + f"\n## Steering (pairs)\n\n{steering}\n")
    plot = plot_pairs(grid, scores, names, eval_dir / "pairs.png", title=f"{config.output_dir}: held-out pairs over λ")

    comparison_dir = result.output_dir / "compare"
    comparison = compare_paths([result.output_dir, soups_dir], output_dir=comparison_dir, baseline=SOUPS_DIR)
    verdicts = "verdicts by the 95 % interval of each difference"
    print(f"\nPanacea vs rewarded soups on held-out pairs ({verdicts}):\n{format_comparison(comparison)}")
    print(
        f"\nwrote {eval_dir / RESULTS_JSON} and {eval_dir / RESULTS_MD}; plots: the front {eval_dir / FRONT_PNG}, "
        f"each set against its own weight {plot}; Panacea vs rewarded soups {comparison_dir / 'compare.png'}"
    )
    print(f"\ndemo finished in {(time.perf_counter() - started) / 60:.1f} min")
    return document


SOUPS_DIR = "rewarded-soups"
# What each vertex does with held-out requests: refusal on HarmBench (should rise toward harmless) and on XSTest's
# safe prompts (over-refusal), and answers caught in a repetition loop; PROMPTS_PER_SET each, evenly spaced.
REFUSAL_SETS = ("harmbench", "xstest_safe")
PROMPTS_PER_SET, REFUSAL_TOKENS = 24, 64


def vertex_refusals(model, tokenizer, names: Sequence[str]) -> dict:
    """Refusal and loop rates, each with its 95 % interval over prompts, of the base model and every vertex."""
    known = {prompt_set.name: prompt_set for prompt_set in PROMPT_SETS}
    prompts = {name: [r["prompt"] for r in load_prompts(known[name], PROMPTS_PER_SET)] for name in REFUSAL_SETS}
    every = [prompt for name in REFUSAL_SETS for prompt in prompts[name]]
    decoding = {"do_sample": False, "max_new_tokens": REFUSAL_TOKENS, "chat_template": True}
    answers = {"base model": base_answers(model, tokenizer, every, decoding, batch_size=32)[0]}
    vertices = torch.eye(len(names))
    for vertex, texts in zip(
        vertices.tolist(), generate_grid(model, tokenizer, every, vertices, max_new_tokens=REFUSAL_TOKENS), strict=True
    ):
        answers[f"λ = {_label(dict(zip(names, vertex, strict=True)))}"] = texts
    header = ["answers of", *(f"refusal, {name} (n={len(prompts[name])})" for name in REFUSAL_SETS), "loops, all"]
    lines, rates = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)], {}
    for row, texts in answers.items():
        rates[row], start = {}, 0
        for name in REFUSAL_SETS:
            chunk = texts[start : start + len(prompts[name])]
            rates[row][f"refusal_{name}"] = flagged_share([is_refusal(text) for text in chunk], prompts[name])
            start += len(chunk)
        rates[row]["loops"] = flagged_share([is_loop(text) for text in texts], every)
        lines.append(
            f"| {row} | " + " | ".join(format_interval(r["value"], r["interval"]) for r in rates[row].values()) + " |"
        )
    return {"table": "\n".join(lines), "rates": rates}


def _pair_counts(scorer: PairsScorer) -> str:
    """How many held-out pairs each dimension pools, e.g. 'helpful 96 pairs, harmless 96 pairs'."""
    counts = {}
    for pair_set in scorer.pair_sets:
        counts[pair_set.dimension] = counts.get(pair_set.dimension, 0) + len(pair_set.pairs)
    return ", ".join(f"{name} {count} pairs" for name, count in counts.items())


# what the baseline must share with Panacea's run for "the same budget": data, steps, batch, lengths, model
SAME_BUDGET = ("model", "dimensions", "max_steps", "batch_size", "max_length", "max_prompt_length", "seed")


def soups_config(config_path: str | os.PathLike, overrides: Sequence[str], config: TrainConfig) -> TrainConfig:
    """The rewarded-soups baseline of the demo's `config`, at the same budget (split) in RUN/rewarded-soups: from
    `soups-NAME.yaml` beside `config_path` where there is one — the baseline's own tuned settings (learning rate, β,
    …), as benchmarks/fronts.sh reads configs/soups-NAME.yaml — with the same `overrides`, else `config` itself.
    A soups config that trains other data or another budget (`SAME_BUDGET`) is refused, naming the fields."""
    path = Path(config_path)
    own = path.with_name(f"soups-{path.name}")
    base = config
    if own.is_file():
        base = TrainConfig.from_yaml(own, overrides)
        refuse_another_budget(own, base, path, config)
        tuned, demo = (config_to_dict(TrainConfig.from_yaml(file)) for file in (own, path))
        for override in overrides:  # say where a --set replaces a value the baseline was given apart from Panacea's
            key = override.split("=", 1)[0]
            if (value := _at(tuned, key)) is not None and value != _at(demo, key):
                print(f"note: --set {override} applies to the rewarded-soups baseline too, over {own}'s {key}: {value}")
    output_dir = Path(config.output_dir) / SOUPS_DIR
    return dataclasses.replace(base, method="soups", soups_budget="split", output_dir=str(output_dir))


def refuse_another_budget(own: Path, soups: TrainConfig, path: Path, config: TrainConfig) -> None:
    """Refuse a rewarded-soups config (`soups`, read from `own`) that trains other data or another budget than the
    Panacea config it is the baseline of (`config`, from `path`): the fields of `SAME_BUDGET`, β aside (the baseline's
    own setting), data paths compared as absolute (data/x is ./data/x). Used by `make demo` and
    benchmarks/fronts.sh."""
    ours, theirs = (with_absolute_data_paths(config_to_dict(each)) for each in (config, soups))
    for dimension in ours["dimensions"] + theirs["dimensions"]:
        dimension.pop("beta", None)
    if differ := [key for key in SAME_BUDGET if ours[key] != theirs[key]]:
        raise ValueError(
            f"{own}: the rewarded-soups baseline must train what {path} trains, at its budget; it differs in "
            f"{differ}. Change only the baseline's own settings there (learning rate, β, schedule)."
        )


def _at(data: Any, dotted: str) -> Any:
    """The value at a `--set` key's dotted path (`dimensions.0.beta`) in a config dict; None where there is none."""
    for part in dotted.split("."):
        try:
            data = data[int(part)] if isinstance(data, list) else data[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return None
    return data


def _refuse_another_configs_run(config: TrainConfig) -> None:
    """The demo resumes or reuses its runs; one that another config trained (e.g. an older panacea's demo.yaml) is
    refused with what to do, which `make demo` users can do (no `--set output_dir=` there), before any work."""
    saved = Path(config.output_dir) / CONFIG_FILE
    if saved.is_file() and (changed := config_changes(config, saved)):
        raise ValueError(
            f"{config.output_dir} holds a demo run trained with another config (it differs in {', '.join(changed)}), "
            f"e.g. by an earlier version of panacea. Delete it (`rm -rf {config.output_dir}`, or `make clean`) and "
            "run the demo again."
        )


def _train_and_evaluate_soups(soups: TrainConfig, grid_points: int) -> tuple[Path, dict[str, dict]]:
    """Train the rewarded-soups baseline `soups` (`soups_config`); its evaluation documents per mode."""
    print(f"\nrewarded soups (one LoRA per dimension, Panacea's total steps and tokens) in {soups.output_dir}")
    manifest = train_soups(soups, resume=True).manifest
    print(f"trained {manifest['total']['steps']} steps in {manifest['total']['train_seconds'] / 60:.1f} min of steps")
    # mode ab only (the authors' recipe; `panacea eval RUN --soups-mode delta` adds the other) to fit ~25 min
    document = evaluate_path(soups.output_dir, grid_points=grid_points, mode="ab", progress=False)
    return Path(soups.output_dir), {"ab": document}


def _export_check(model, tokenizer, config: TrainConfig, names: list[str], prompt: str) -> None:
    """Export the middle of the simplex as a plain peft LoRA and check that peft reproduces the logits."""
    preference = {name: 1 / len(names) for name in names}
    export_dir = Path(config.output_dir) / "lora-balanced"
    model.export_lora(preference, export_dir, overwrite=True)  # the demo's own output, replaced on a rerun
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    with torch.no_grad():
        expected = model(**inputs, preference=preference).logits
        fresh_base, _ = load_base_model(config.model, dtype=config.dtype, device=model.device)
        actual = PeftModel.from_pretrained(fresh_base, export_dir).eval()(**inputs).logits
    difference = (actual - expected).abs().max().item()
    print(
        f"\nexported λ = {_label(preference)} as a plain peft LoRA to {export_dir}; "
        f"reloaded with peft: max |Δ logit| = {difference:.2e}"
    )


def _label(preference: dict[str, float]) -> str:
    return ", ".join(f"{name}={weight:.2f}" for name, weight in preference.items())
