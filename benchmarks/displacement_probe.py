"""Likelihood displacement at the vertices: how far a run moved the log-probability of the preferred and of the
dispreferred validation responses from the base model's, per response token, at each vertex of the simplex.

DPO raises the margin log π(y_w) − log π(y_l) relative to the reference; it can do so while *lowering* the
preferred response's own likelihood ("likelihood displacement", Razin et al. 2024, arXiv 2410.08847; the RPO
term, `rpo_alpha`, counters it). Mass taken from both responses goes somewhere else, and greedy decoding may
find it in a repetition loop. This probe asks whether the runs whose vertex loops (benchmarks/loop_probe.py)
are the ones whose preferred responses fell furthest. A diagnostic, not part of any choosing rule: it reads the
validation pairs (carved from `train`; a run trained on all of `train` has trained on some of them, which the
table says), never a test pair.

Per pair set and vertex: the mean over pairs of (log π(y) − log π_ref(y)) / |y| for y = chosen and rejected, in
nats per token, with 95 % intervals over prompts; given several runs, a second table gives each run's difference to
the first on the same pairs, with paired intervals over prompts (the same resamples for every run).

    python benchmarks/displacement_probe.py runs/hh-2d runs/validation-study/proxy/defaults/run --limit 64
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from panacea.eval.bootstrap import clustered_mean, contrast, resample_weights, token_cluster
from panacea.eval.compare import format_contrast
from panacea.eval.report import format_interval, format_preference
from panacea.eval.scorers import load_pair_sets
from panacea.eval.sweep import load_run
from panacea.training.logprobs import pair_log_probs
from panacea.training.reference import reference_log_probs
from panacea.training.trainer import reference_settings

from panacea.data import load_dimension

RESPONSES = ("chosen", "rejected")


def validation_pair_sets(config, tokenizer) -> tuple[list, dict[str, set[str]]]:
    """The validation pairs of the files the run trains on, whatever split it trained on (a published run trained
    on all of `train`: the scorer refuses it these pairs, this diagnostic reads them and says how many it trained
    on), and per dimension the ids of the run's training pairs."""
    fitted = dataclasses.replace(
        config,
        dimensions=[
            dataclasses.replace(d, train=[dataclasses.replace(s, split="fit") for s in d.train])
            for d in config.dimensions
        ],
    )
    pair_sets = load_pair_sets(fitted, tokenizer, "validation")
    trained = {}
    for dimension in config.dimensions:
        pairs, _ = load_dimension(
            dimension.train, dimension.name, config.dimension_names, tokenizer, config.max_length,
            config.max_prompt_length,
        )  # fmt: skip
        trained[dimension.name] = {pair.id for pair in pairs}
    return pair_sets, trained


def displacement(run: Path, *, limit: int | None = 64) -> dict:
    """{pair set: {vertex λ as text: {"chosen", "rejected": {"value", "interval"}, "pairs", "trained_on", "per_pair"}}}:
    per-token log-prob change from the base model at each vertex (a rewarded soup's vertex is its member alone), how
    many of the set's pairs the run trained on, and per pair {"ids", "clusters", "chosen", "rejected"} (what
    `paired_differences` compares)."""
    loaded = load_run(run, device="cpu")
    pad = loaded.tokenizer.pad_token_id
    vertices = torch.eye(len(loaded.dimensions))
    result = {}
    pair_sets, trained = validation_pair_sets(loaded.config, loaded.tokenizer)
    for pair_set in pair_sets:
        pairs = pair_set.pairs[:limit]
        # the base model's, from the cache the trainer and the pairs scorer share (computed once for every run)
        reference = reference_log_probs(
            loaded.model,
            pairs,
            pad_token_id=pad,
            batch_size=loaded.config.eval_batch_size,
            settings=reference_settings(loaded.config),
            autocast=loaded.autocast,
        )  # (pairs, 2)
        policy = [  # one vertex a call: a SoupModel takes one λ per call
            pair_log_probs(loaded.model, pairs, vertex[None], pad_token_id=pad, autocast=loaded.autocast)[0]
            for vertex in vertices
        ]
        lengths = torch.tensor([[len(pair.chosen_ids), len(pair.rejected_ids)] for pair in pairs], dtype=torch.float32)
        clusters = [token_cluster(pair.prompt_ids) for pair in pairs]
        result[pair_set.name] = {}
        for vertex, moved in zip(vertices, policy, strict=True):
            per_token = ((moved - reference) / lengths).tolist()
            per_pair = {name: [row[column] for row in per_token] for column, name in enumerate(RESPONSES)}
            result[pair_set.name][format_preference(vertex.tolist())] = {
                **{name: clustered_mean(per_pair[name], clusters) for name in RESPONSES},
                "pairs": len(pairs),
                "trained_on": sum(pair.id in trained[pair_set.dimension] for pair in pairs),
                "per_pair": {"ids": [pair.id for pair in pairs], "clusters": clusters, **per_pair},
            }
    return result


def paired_differences(table: dict, baseline: dict, *, where: str) -> dict:
    """{pair set: {vertex: {"chosen", "rejected": contrast}}}: `table` − `baseline` (two `displacement` results) on
    the pair sets and vertices both hold, each a paired interval over prompts. The two must hold the same pairs in
    each shared set (same data, split and --limit); `where` names the run in the error when they do not."""
    result = {}
    for name in (name for name in table if name in baseline):  # the table's order, sets and vertices alike
        result[name] = {}
        for vertex in (vertex for vertex in table[name] if vertex in baseline[name]):
            mine, theirs = table[name][vertex]["per_pair"], baseline[name][vertex]["per_pair"]
            if mine["ids"] != theirs["ids"]:
                raise ValueError(
                    f"{where}: pair set {name!r} holds other pairs than the first run's, so the two cannot be paired "
                    f"(same data files, split and --limit needed)."
                )
            weights = resample_weights(mine["clusters"])
            result[name][vertex] = {}
            for response in RESPONSES:
                gap = np.array(mine[response]) - np.array(theirs[response])
                result[name][vertex][response] = contrast(gap.mean(), weights @ gap / weights.sum(1))
    return result


def format_displacement(label: str, table: dict) -> str:
    """Markdown rows: run, pair set, vertex, n (of which trained on), chosen and rejected per-token change."""
    lines = []
    for name, vertices in table.items():
        for vertex, moved in vertices.items():
            cells = [format_interval(moved[key]["value"], moved[key]["interval"]) for key in RESPONSES]
            count = f"{moved['pairs']} ({moved['trained_on']} trained on)"
            lines.append(f"| {label} | {name} | {vertex} | {count} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_differences(label: str, differences: dict) -> str:
    """Markdown rows of `paired_differences`: run, pair set, vertex, chosen and rejected difference."""
    lines = []
    for name, vertices in differences.items():
        for vertex, gaps in vertices.items():
            cells = [format_contrast(gaps[key]) for key in RESPONSES]
            lines.append(f"| {label} | {name} | {vertex} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="Trained run folders (runs/NAME).")
    parser.add_argument("--limit", type=int, default=64, help="The first N validation pairs of each set.")
    args = parser.parse_args(argv)
    print("| run | pair set | λ | n | chosen Δ log π / token [95 %] | rejected Δ log π / token [95 %] |")
    print("|---|---|---|---|---|---|")
    tables = []
    for run in args.runs:
        tables.append(displacement(run, limit=args.limit))
        print(format_displacement(str(run), tables[-1]), flush=True)
    if len(tables) > 1:
        print(f"\nEach run − {args.runs[0]} on the same pairs (95 % paired intervals over prompts; higher / lower when")
        print("the interval excludes 0, else tie):\n")
        print("| run | pair set | λ | chosen: difference [95 %] | rejected: difference [95 %] |")
        print("|---|---|---|---|---|")
        for run, table in zip(args.runs[1:], tables[1:], strict=True):
            print(format_differences(str(run), paired_differences(table, tables[0], where=str(run))))


if __name__ == "__main__":
    main()
