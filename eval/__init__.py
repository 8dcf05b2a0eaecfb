"""Evaluation (front metrics, per-dimension scorers, λ sweeps, the rewarded-soups baseline, reports).

Empty until the evaluation issue lands; the namespace exists so the package layout of DESIGN.md is installable.
"""
