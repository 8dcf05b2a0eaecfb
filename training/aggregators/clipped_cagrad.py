"""Clipped CAGrad: RACO's rule (Chen, Li, Chen, Lin, ICML 2026, arXiv 2602.02495), from the authors' repository
PeterLauLukChen/RACO @ fd94b6f, script/m=3-RACO-CAGrad-Algo.md (Algorithm "RACO with CAGrad-Clip").

    g0 = Σ_i λ_i g_i,   p ∈ argmin_{p ∈ Δ} G_pᵀ g0 + c‖g0‖ ‖G_p‖   (CAGrad's dual; the least-‖p‖₂ optimum)
    p̃ = min(p, λ) elementwise, NOT put back on the simplex;   G̃ = Σ_i p̃_i g_i
    d  = g0 + c‖g0‖ G̃/‖G̃‖ if ‖G̃‖ > 0, else g0   ⇒   a_i = λ_i + (c‖g0‖/‖G̃‖) p̃_i,   ‖G̃‖² = p̃ᵀ M p̃

So ‖d − g0‖ = c‖g0‖ whenever G̃ ≠ 0, p = e_j with λ_j > 0 gives CAGrad, and λ_i = 0 keeps objective i out.
No rescale (the authors' code has none). The authors solve the dual per micro-batch; ours once per step on
the accumulated (all-reduced) gradients. This replaces our earlier reading α_i = min(ρ w*_i, κ λ_i).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import Aggregator, is_number
from ._cagrad_dual import ZERO
from .cagrad import cagrad_correction


def raco_coefficients(gram: Tensor, preference: Tensor, c: float) -> tuple[Tensor, Tensor, float, int, float]:
    """(a (m,), p (m,), c‖g0‖/‖G̃‖, solver evaluations, dual gap / ‖g0‖²) from M (m, m), λ (m,) and c.

    ‖G̃‖ below 1e-7·max_i ‖g_i‖ (ZERO) counts as 0, as ‖g_w*‖ does in CAGrad: then a = λ.
    """
    p, _, evaluations, gap = cagrad_correction(gram, preference, c)
    clipped = torch.minimum(p, preference)
    radius = c * math.sqrt(max(float(preference @ gram @ preference), 0.0))
    norm = math.sqrt(max(float(clipped @ gram @ clipped), 0.0))
    if radius == 0 or norm < ZERO * math.sqrt(max(float(gram.diagonal().max()), 0.0)):
        return preference.clone(), p, 0.0, evaluations, gap
    return preference + radius / norm * clipped, p, radius / norm, evaluations, gap


class ClippedCAGrad(Aggregator):
    """RACO's CAGrad-Clip with user weights λ; c ∈ [0, 1) is the radius of the ball around g0 (default 0.4)."""

    name: ClassVar[str] = "clipped_cagrad"
    defaults: ClassVar[dict[str, Any]] = {"c": 0.4}
    retired: ClassVar[dict[str, str]] = {
        "kappa": "the rule changed to RACO's own (p̃ = min(p, λ) on CAGrad's dual optimum, docs/aggregators.md), "
        "which has no κ; drop kappa (c, default 0.4, is the only setting).",
    }
    c: float
    rho: float = 0.0  # the last step's c‖g0‖/‖G̃‖
    clipped: int = 0  # ... how many dimensions had p_i > λ_i (clipped to λ_i)
    iterations: int = 0  # ... its dual solver's evaluations (0 for the closed form, m ≤ 2)
    gap: float = 0.0  # ... and the dual's gap / ‖g0‖²

    def validate(self) -> None:
        self.require(is_number(self.c) and 0 <= self.c < 1, "c", "a number in [0, 1)")

    def _coefficients(self, gram: Tensor, preference: Tensor, losses: Tensor) -> Tensor:
        a, p, self.rho, self.iterations, self.gap = raco_coefficients(gram, preference, self.c)
        self.clipped = int((p > preference).sum())
        return a

    def metrics(self) -> dict[str, float]:
        return {
            "rho": self.rho,
            "clipped": float(self.clipped),
            "solver_iterations": float(self.iterations),
            "duality_gap": self.gap,
        }
