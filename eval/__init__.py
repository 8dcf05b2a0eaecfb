"""Evaluation: scorers over a λ grid (pairs, generations), the sweep behind `panacea eval`, and front metrics."""

from .bootstrap import bootstrap_fronts, differences, percentile_interval, resample_weights, verdict
from .degeneration import LoopInfo, is_loop, loop_rate, repetition
from .metrics import (
    front_metrics,
    hypervolume,
    inner_product,
    nondominated,
    reference_point,
    spacing,
    sparsity,
    spearman,
)
from .refusal import is_refusal, refusal_rate
from .scorers import PairSet, PairsScorer, score_pairs
from .sweep import evaluate_path, evaluate_run, load_run

__all__ = [
    "LoopInfo",
    "PairSet",
    "PairsScorer",
    "bootstrap_fronts",
    "differences",
    "evaluate_path",
    "evaluate_run",
    "front_metrics",
    "hypervolume",
    "inner_product",
    "is_loop",
    "is_refusal",
    "load_run",
    "loop_rate",
    "nondominated",
    "percentile_interval",
    "reference_point",
    "refusal_rate",
    "repetition",
    "resample_weights",
    "score_pairs",
    "sparsity",
    "spacing",
    "spearman",
    "verdict",
]
