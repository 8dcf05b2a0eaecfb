"""MGDA (Sener & Koltun, NeurIPS 2018, arXiv 1810.04650); rule and options from isl-org/MultiObjectiveOptimization.

    w* = argmin_{w ∈ Δ} ‖Σ_i w_i ĝ_i‖²,   ĝ_i = g_i / n_i,   d = Σ_i w*_i ĝ_i = Σ_i (w*_i / n_i) g_i

d = 0 exactly when the point is Pareto-stationary. The solve is exact (ours: Wolfe's min-norm-point method
on M, `_simplex.py`, not the reference's 250-step projected gradient), accepted at KKT residual ≤ 1e-9 max M_ii.
MGDA ignores λ: it finds *a* common descent direction, not the one the preference asks for, so it is a
baseline, not a way to follow λ (λ still reaches the model through the adapter).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ._base import NORMALIZATIONS, Aggregator, gradient_normalizers
from ._simplex import min_norm_weights


class MGDA(Aggregator):
    """MGDA-UB's min-norm weights on the Gram matrix; `normalization` rescales each gradient first."""

    name: ClassVar[str] = "mgda"
    defaults: ClassVar[dict[str, Any]] = {"normalization": "none"}
    normalization: str
    iterations: int = 0  # the last solve's Wolfe cycles (0 for the closed form, m ≤ 2)
    residual: float = 0.0  # ... and its KKT residual / max M̂_ii

    def validate(self) -> None:
        self.require(self.normalization in NORMALIZATIONS, "normalization", f"one of {list(NORMALIZATIONS)}")

    def _coefficients(self, gram: Tensor, preference: Tensor, losses: Tensor) -> Tensor:
        inverse = gradient_normalizers(self.name, self.normalization, gram, losses)
        w, self.iterations, self.residual = min_norm_weights(gram * inverse[:, None] * inverse[None, :])
        return w * inverse

    def metrics(self) -> dict[str, float]:
        return {"solver_iterations": float(self.iterations), "kkt_residual": self.residual}
