"""CAGrad (Liu et al., NeurIPS 2021, arXiv 2110.14048); code Cranial-XIX/CAGrad (`cagrad_fast` for user weights).

    g0 = Σ_i p_i g_i,   φ = c² ‖g0‖²,   p = λ
    w* = argmin_{w ∈ Δ} g_wᵀ g0 + √φ ‖g_w‖,   g_w = Σ_i w_i g_i
    d  = g0 + (√φ / ‖g_w*‖) g_w* = Σ_i (p_i + ρ w*_i) g_i,   ρ = √φ / ‖g_w*‖

d maximises the worst objective's first-order gain within the ball ‖d − g0‖ ≤ c‖g0‖; c = 0 is linear
scalarisation. The authors divide d by 1 + c² (or 1 + c); ours does not by default (`rescale`).
Unlike LibMTL's port, g0 is the λ-weighted sum, not the uniform mean (`GG.mean()`). The dual is solved
exactly (`_cagrad_dual.py`); among several optimal w* the least-‖w‖₂ one; ρ = 0 when g_w* = 0.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ._base import Aggregator, is_number
from ._cagrad_dual import cagrad_weights

RESCALES = ("none", "1+c^2", "1+c")


def cagrad_correction(gram: Tensor, p: Tensor, c: float) -> tuple[Tensor, float, int, float]:
    """(w* (m,), ρ, solver evaluations, duality gap / ‖g0‖²) from M (m, m), p (m,) and c.

    ρ = 0 when c‖g0‖ = 0 or g_w* = 0 (then d = g0).
    """
    return cagrad_weights(gram, p, c * c * max(float(p @ gram @ p), 0.0))


class CAGrad(Aggregator):
    """CAGrad with user weights p = λ; c ∈ [0, 1) is the radius of the ball around g0."""

    name: ClassVar[str] = "cagrad"
    defaults: ClassVar[dict[str, Any]] = {"c": 0.5, "rescale": "none"}
    c: float
    rescale: str
    rho: float = 0.0  # the last step's ρ
    iterations: int = 0  # ... its solver's evaluations (0 for the closed form, m ≤ 2)
    gap: float = 0.0  # ... and its duality gap / ‖g0‖²

    def validate(self) -> None:
        self.require(is_number(self.c) and 0 <= self.c < 1, "c", "a number in [0, 1)")
        self.require(self.rescale in RESCALES, "rescale", f"one of {list(RESCALES)}")

    @property
    def divisor(self) -> float:
        return {"none": 1.0, "1+c^2": 1 + self.c**2, "1+c": 1 + self.c}[self.rescale]

    def _coefficients(self, gram: Tensor, preference: Tensor, losses: Tensor) -> Tensor:
        w, self.rho, self.iterations, self.gap = cagrad_correction(gram, preference, self.c)
        return (preference + self.rho * w) / self.divisor

    def metrics(self) -> dict[str, float]:
        return {
            "rho": self.rho,
            "solver_iterations": float(self.iterations),
            "duality_gap": self.gap,
            "rescale_divisor": self.divisor,
        }
