"""Evaluation: scorers over a λ grid (pairs, generations), the sweep behind `panacea eval`, and front metrics."""

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
    "PairSet",
    "PairsScorer",
    "evaluate_path",
    "evaluate_run",
    "front_metrics",
    "hypervolume",
    "inner_product",
    "is_refusal",
    "load_run",
    "nondominated",
    "reference_point",
    "refusal_rate",
    "score_pairs",
    "sparsity",
    "spacing",
    "spearman",
]
