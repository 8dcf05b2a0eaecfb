"""Normalised linear scalarisation: λ-weighted per-dimension gradients, each divided by its own scale first.

    ĝ_i = g_i / n_i,   d = Σ_i λ_i ĝ_i,   so c_i = λ_i / n_i

n_i is one of MGDA's gradient normalisers (Sener & Koltun 2018, isl-org/MultiObjectiveOptimization's
`gradient_normalizers`): ‖g_i‖ (`l2`, the default), the loss L_i (`loss`), or L_i ‖g_i‖ (`loss+`). Combining
the normalised gradients by λ instead of MGDA's min-norm weights is ours: it is the "loss normalisation across
dimensions" lever (docs/algorithms.md §5). With `l2`, a dimension whose loss has saturated (concise's DPO loss
falls to ~1e-7 while the others stay near 0.6, and its gradient with it) still pulls with weight λ_i; with
`loss`, d = ∇ Σ_i λ_i log L_i. `none` is linear scalarisation.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ._base import NORMALIZATIONS, Aggregator, gradient_normalizers


class Normalized(Aggregator):
    """c_i = λ_i / n_i: linear scalarisation of each dimension's gradient rescaled by its normaliser n_i."""

    name: ClassVar[str] = "normalized"
    defaults: ClassVar[dict[str, Any]] = {"normalization": "l2"}
    normalization: str

    def validate(self) -> None:
        self.require(self.normalization in NORMALIZATIONS, "normalization", f"one of {list(NORMALIZATIONS)}")

    def _coefficients(self, gram: Tensor, preference: Tensor, losses: Tensor) -> Tensor:
        return preference * gradient_normalizers(self.name, self.normalization, gram, losses)
