"""Evaluation: per-dimension scorers over a λ grid and front metrics (more arrives with the evaluation issue)."""

from .metrics import spearman
from .scorers import PairSet, score_pairs

__all__ = ["PairSet", "score_pairs", "spearman"]
