"""Clipped CAGrad, our reading of RACO (Chen, Li, Chen, Lin, arXiv 2602.02495).

RACO applies CAGrad to per-dimension DPO losses and caps the conflict-correction term so the update
stays faithful to the user's weights; its exact equation could not be read. Ours clips each
objective's share of the correction by its user weight:

    α_i = min(ρ w*_i, κ p_i),   d = Σ_i (p_i + α_i) g_i      (w*, ρ from CAGrad; p = λ)

so dimension i's total weight stays in [p_i, (1 + κ) p_i], and p_i = 0 keeps it out entirely.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import is_number
from .cagrad import CAGrad, cagrad_correction


class ClippedCAGrad(CAGrad):
    """CAGrad whose correction on dimension i is at most κ λ_i (our reading of RACO)."""

    name: ClassVar[str] = "clipped_cagrad"
    defaults: ClassVar[dict[str, Any]] = {"c": 0.5, "kappa": 1.0, "rescale": "none"}
    kappa: float
    clipped: int = 0  # how many dimensions the last step clipped

    def validate(self) -> None:
        super().validate()
        self.require(is_number(self.kappa) and 0 <= self.kappa < math.inf, "kappa", "a finite number ≥ 0")

    def _coefficients(self, gram: Tensor, preference: Tensor, losses: Tensor) -> Tensor:
        w, self.rho, self.iterations = cagrad_correction(gram, preference, self.c)
        correction = self.rho * w
        alpha = torch.minimum(correction, self.kappa * preference)
        self.clipped = int((alpha < correction).sum())
        return (preference + alpha) / self.divisor

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "clipped": float(self.clipped)}
