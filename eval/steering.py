"""How far λ steers: the range ratio R_i against single-objective models, and the runs that supply them.

For a score S of a pair set of dimension i (held-out accuracy or mean margin), with e_i the vertex of
dimension i and M_j a model trained on dimension j alone (same trainer, data and budget; λ fixed to e_j):

    R_i = [S(Panacea at e_i) − mean_{j≠i} S(Panacea at e_j)] / [S(M_i) − mean_{j≠i} S(M_j)]

For m = 2 this is the issue's [S(weight 1 on i) − S(weight 0 on i)] / [S(trained on i) − S(trained on
the other)]; for m > 2 the "weight 0" end is the mean over the other vertices (ours). R_i = 1: λ moves
the model as far on i as separate single-objective models lie apart; NaN when the single models tie.
The demo takes the rewarded-soups members as M_j (`vertex_scores`); the steering study trains the
Panacea adapter at each vertex instead (`single_objective_scores`).
"""

from __future__ import annotations

import dataclasses
import gc
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from panacea.training import TrainConfig, train

from .report import set_dimension, set_order
from .scorers import PairSet, score_run_pairs

SCORES = ("accuracy", "margin")
SINGLE_OBJECTIVE_DIR = "single-objective"


def vertex_index(grid: torch.Tensor, dimension: int) -> int:
    """The row of `grid` (n, m) that is the vertex e_dimension."""
    target = torch.zeros(grid.shape[1], dtype=grid.dtype)
    target[dimension] = 1
    matches = (grid == target).all(dim=1).nonzero().flatten().tolist()
    if not matches:
        raise ValueError(f"the λ grid has no vertex e_{dimension}; use simplex_grid, which always holds them.")
    return matches[0]


def vertex_scores(document: dict, dimensions: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """{dimension: the pair-set scores at its vertex} of an evaluation document: `single` of `range_ratios`.

    At e_i a rewarded-soups front serves member i alone, a plain LoRA trained on dimension i by itself;
    so a soups run's vertices are single-objective models (what the demo divides by).
    """
    grid = torch.tensor(document["grid"])
    points = document["scorers"]["pairs"]["points"]
    return {name: points[vertex_index(grid, index)]["sets"] for index, name in enumerate(dimensions)}


def range_ratios(
    grid: torch.Tensor,
    results: Sequence[dict[str, dict[str, float]]],
    dimensions: Sequence[str],
    single: dict[str, dict[str, dict[str, float]]],
) -> dict[str, dict[str, float]]:
    """{set name: {"accuracy": R, "margin": R}} for every pair set of the grid `results`.

    `single[name]` holds the scores ({set name: {"accuracy", "margin", ...}}) of the model trained on
    dimension `name` alone; every dimension needs one.
    """
    missing = [name for name in dimensions if name not in single]
    if missing:
        raise ValueError(f"range_ratios needs a single-objective model for every dimension; missing {missing}.")
    if len(dimensions) < 2:
        raise ValueError("range_ratios needs at least two dimensions (one to steer towards, one away from).")
    vertices = {name: results[vertex_index(grid, index)] for index, name in enumerate(dimensions)}
    ratios = {}
    for set_name in set_order(results[0], dimensions):
        own = set_dimension(set_name)
        others = [name for name in dimensions if name != own]
        ratios[set_name] = {}
        for score in SCORES:
            steered = _spread(vertices, own, others, set_name, score)
            apart = _spread(single, own, others, set_name, score)
            ratios[set_name][score] = steered / apart if apart != 0 else math.nan
    return ratios


def single_objective_config(config: TrainConfig, dimension: str, root: str | Path | None = None) -> TrainConfig:
    """`config` with λ fixed to the vertex of `dimension`, in `root`/<dimension> (default RUN/single-objective).

    Everything else (data, adapter, steps, pairs per step, optimiser) is the Panacea run's, so the
    single-objective model gets the same budget per dimension it trains.
    """
    names = config.dimension_names
    if dimension not in names:
        raise ValueError(f"no dimension {dimension!r} in the config; it has {names}.")
    return dataclasses.replace(
        config,
        output_dir=str(Path(root or Path(config.output_dir) / SINGLE_OBJECTIVE_DIR) / dimension),
        preference_sampling="fixed",
        fixed_preference=[float(name == dimension) for name in names],
        preference_groups=1,
    )


def single_objective_scores(
    config: TrainConfig, pair_sets: Sequence[PairSet], pad_token_id: int, root: str | Path | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """Train (or reuse, or resume) one single-objective model per dimension; score each at its own vertex.

    Returns {dimension: {set name: {"accuracy", "margin", "pairs"}}}, the `single` of `range_ratios`.
    """
    scores = {}
    for name in config.dimension_names:
        single_config = single_objective_config(config, name, root)
        print(f"\nsingle-objective model for {name!r} in {single_config.output_dir}")
        result = train(single_config, resume=True)
        vertex = torch.tensor([single_config.fixed_preference])
        scores[name] = score_run_pairs(result.model, pair_sets, vertex, config, pad_token_id, result.autocast)[0]
        del result
        gc.collect()
    return scores


def format_steering(
    rho: dict[str, dict[str, float]], ratios: dict[str, dict[str, float]], single: dict[str, dict[str, Any]]
) -> str:
    """A Markdown table: per pair set, Spearman's ρ with its own weight and R_i, for accuracy and margin."""
    lines = [
        "| pair set | Spearman ρ (acc / margin) | range ratio R (acc / margin) | single-objective models: own − other "
        "(acc / margin) |",
        "|---|---|---|---|",
    ]
    for name in ratios:
        own = set_dimension(name)
        others = [dimension for dimension in single if dimension != own]
        apart = [_spread(single, own, others, name, score) for score in SCORES]
        lines.append(
            f"| {name} | {rho[name]['accuracy']:+.2f} / {rho[name]['margin']:+.2f} | "
            f"{ratios[name]['accuracy']:+.2f} / {ratios[name]['margin']:+.2f} | {apart[0]:+.3f} / {apart[1]:+.3f} |"
        )
    return "\n".join(lines)


def _spread(
    scores: dict[str, dict[str, dict[str, float]]], own: str, others: list[str], set_name: str, score: str
) -> float:
    """scores[own] − mean of scores[other] over `others`, for one set and score: R's numerator or denominator."""
    rest = [scores[other][set_name][score] for other in others]
    return scores[own][set_name][score] - sum(rest) / len(rest)
