"""PLC, Pareto-Lenient Consensus (Tan, Li, Zhao, Zhang, arXiv 2604.05965, ACL Findings 2026): our reading.

Only the abstract could be read ("consensus-driven lenient gradient rectification, which dynamically
tolerates local degradation provided there is a sufficient dominant coalition surplus"). Ours:

    d0  = Σ_j λ_j g_j                      the consensus (LS) direction
    a_i = g_i · d0                         objective i's first-order gain along d0
    C_i = λ_i max(0, −a_i)                 its weighted degradation
    S_i = Σ_{j≠i} λ_j max(0, a_j)          the surplus of the coalition that gains
    V   = {i : C_i > 0 and S_i < τ C_i}    degradations not tolerated (the veto)
    g_j' = g_j projected (PCGrad rule) off each conflicting g_i, i ∈ V, i ≠ j, in index order
    d   = Σ_j λ_j g_j'

Since Σ_j λ_j a_j = ‖d0‖² ≥ 0, every degraded i has S_i ≥ C_i, so τ ≤ 1 is linear scalarisation and
τ = ∞ protects every degraded objective (one-sided PCGrad).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ._base import Aggregator, CountsEvents, is_number
from ._simplex import project_conflicts


class PLC(CountsEvents, Aggregator):
    """PLC (our reading); `tau` is how much coalition surplus per unit of degradation buys tolerance."""

    name: ClassVar[str] = "plc"
    defaults: ClassVar[dict[str, Any]] = {"tau": 2.0}
    event: ClassVar[str] = "vetoed_steps"  # calls where V was not empty
    rate: ClassVar[str] = "veto_rate"
    tau: float

    def validate(self) -> None:
        self.require(is_number(self.tau) and self.tau >= 0, "tau", "a number ≥ 0 (float('inf') allowed)")

    def _coefficients(self, gram: Tensor, preference: Tensor, losses: Tensor) -> Tensor:
        gains = gram @ preference  # a_i = g_i · d0
        degradation = preference * (-gains).clamp(min=0)
        surplus = preference * gains.clamp(min=0)
        coalition = surplus.sum() - surplus
        # C_i > 0 first, so τ = ∞ never meets 0 · ∞; zero gradients have a_i = 0 and are never vetoed.
        vetoed = [i for i in range(len(gains)) if degradation[i] > 0 and coalition[i] < self.tau * degradation[i]]
        self.count(bool(vetoed))
        if not vetoed:
            return preference.clone()
        targets = [[i for i in vetoed if i != j] for j in range(len(gains))]
        return project_conflicts(gram, preference, targets)

    def state_dict(self) -> dict[str, Any]:
        return self.counts()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not (isinstance(state, dict) and set(state) == {"steps", self.event}):
            raise ValueError(f"plc state needs integers 'steps' ≥ '{self.event}' ≥ 0, got {state!r}.")
        self.load_counts(state)
