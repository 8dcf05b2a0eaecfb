"""Linear scalarisation and Tchebycheff (Panacea §3; docs/algorithms.md, "Scalarisation").

The trainer forwards each dimension's batch on its own and back-propagates it into a gradient
buffer of its own, one per *unit*: a (λ-group g, dimension i) pair. A scalariser decides two
things and nothing else:

- `sample_weights`: a weight per sample, applied inside the unit's loss before backward (linear
  scalarisation puts λ_{b,i} here, which is what makes per-sample λ possible);
- `coefficients`: a weight per unit gradient, from the units' losses (Tchebycheff's arg max).

The update is d = Σ_{g,i} c_{g,i} ∇L_{g,i}. Gradient aggregators (MGDA, CAGrad, …) plug into the
same seam: they also map unit gradients to coefficients, from the Gram matrix of the gradients.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ._state import StepRule

TIE_TOLERANCE = 1e-6  # Tchebycheff terms within 1e-6 · max(1, |maximum|) of the maximum count as tied


class Scalarizer(StepRule, ABC):
    """Maps per-unit losses L (G, m) and preferences λ (G, m) to coefficients on the unit gradients."""

    name: str
    supports_per_sample: bool = False
    needs_gram: bool = False  # whether `coefficients` needs the Gram matrix of the unit gradients

    @classmethod
    def from_config(cls, config: Any) -> Scalarizer:
        """Build from a `TrainConfig` (its dimensions and scalarisation settings)."""
        return cls()

    def sample_weights(self, preferences: Tensor, dimension: int) -> Tensor:
        """Weights (batch,) on the per-sample losses of `dimension`, from their preferences (batch, m)."""
        return torch.ones(preferences.shape[0], dtype=preferences.dtype, device=preferences.device)

    @abstractmethod
    def coefficients(self, losses: Tensor, preferences: Tensor, gram: Tensor | None = None) -> tuple[Tensor, float]:
        """(c (G, m), the scalarised loss value) from unit losses L (G, m) and group preferences λ (G, m).

        `gram` (G, m, m), each λ-group's Gram matrix of its unit gradients, is passed when `needs_gram` is set.
        """


class LinearScalarization(Scalarizer):
    """L = Σ_i λ_i L_i; with per-sample λ, L = Σ_i (1/B_i) Σ_b λ_{b,i} ℓ_i(b) (per-sample λ is ours)."""

    name = "ls"
    supports_per_sample = True

    def sample_weights(self, preferences: Tensor, dimension: int) -> Tensor:
        return preferences[:, dimension]

    def coefficients(self, losses: Tensor, preferences: Tensor, gram: Tensor | None = None) -> tuple[Tensor, float]:
        # λ is already inside each unit's loss (sample_weights), so the units are summed, averaged over groups.
        groups = losses.shape[0]
        return torch.full_like(losses, 1 / groups), float(losses.sum() / groups)


class Tchebycheff(Scalarizer):
    """L = (1/G) Σ_g max_i λ_{g,i} (L_{g,i} − ẑ_i); the gradient flows through the arg max only.

    Ideal point ẑ (ours): 0 for DPO (the loss's infimum); `running_min` keeps the lowest loss seen so
    far minus ε (as MOEA/D does), for objectives such as SFT that never approach 0; or fixed values.
    Ties (ours): terms within 1e-6 · max(1, |maximum|) of the maximum share the gradient equally (at
    step 0 every DPO loss is ln 2).
    """

    name = "tche"

    @classmethod
    def from_config(cls, config: Any) -> Tchebycheff:
        return cls([dimension.ideal_rule for dimension in config.dimensions], config.tchebycheff_epsilon)

    def __init__(self, ideal: Sequence[float | str], epsilon: float = 1e-3) -> None:
        """`ideal`: per dimension a number (a fixed ẑ_i) or "running_min"."""
        self.ideal = list(ideal)
        self.epsilon = epsilon
        self.running_min: list[float | None] = [None] * len(self.ideal)

    def current_ideal(self, losses: Tensor) -> Tensor:
        """ẑ (m,) after updating the running minima with this step's losses (G, m)."""
        values = []
        for i, rule in enumerate(self.ideal):
            if rule == "running_min":
                lowest = float(losses[:, i].min())
                self.running_min[i] = lowest if self.running_min[i] is None else min(self.running_min[i], lowest)
                values.append(self.running_min[i] - self.epsilon)
            else:
                values.append(float(rule))
        return torch.tensor(values, dtype=losses.dtype, device=losses.device)

    def coefficients(self, losses: Tensor, preferences: Tensor, gram: Tensor | None = None) -> tuple[Tensor, float]:
        terms = preferences * (losses - self.current_ideal(losses))  # (G, m)
        top = terms.max(dim=1, keepdim=True).values
        tied = terms >= top - TIE_TOLERANCE * top.abs().clamp(min=1)
        groups = losses.shape[0]
        coefficients = preferences * tied / (tied.sum(dim=1, keepdim=True) * groups)
        return coefficients, float(top.sum() / groups)

    def state_dict(self) -> dict[str, Any]:
        return {"running_min": list(self.running_min)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        running_min = state.get("running_min")
        if not isinstance(running_min, list) or len(running_min) != len(self.ideal):
            raise ValueError(
                f"Tchebycheff state needs 'running_min' with {len(self.ideal)} entries, got {running_min!r}."
            )
        self.running_min = [None if value is None else float(value) for value in running_min]
        if any(value is not None and not math.isfinite(value) for value in self.running_min):
            raise ValueError(f"Tchebycheff state 'running_min' must be finite, got {running_min!r}.")


class GradientAggregation(Scalarizer):
    """A gradient aggregator (MGDA, PCGrad, CAGrad, …) in the scalariser seam; it replaces LS and Tchebycheff.

    Each unit is back-propagated unweighted (g_i = ∇L_i; the aggregator applies λ itself), and within
    every λ-group the aggregator maps its own m × m Gram matrix, λ and the losses to
    coefficients c, so the update is d = (1/G) Σ_g Σ_i c_{g,i} g_{g,i}. The logged loss is Σ λ_i L_i.
    """

    name = "aggregator"
    needs_gram = True

    def __init__(self, aggregator: Any) -> None:
        self.aggregator = aggregator
        self.step_metrics: dict[str, float] | None = None  # the last step's aggregator numbers

    def coefficients(self, losses: Tensor, preferences: Tensor, gram: Tensor | None = None) -> tuple[Tensor, float]:
        if gram is None:
            raise ValueError(f"{self.aggregator.name} needs the Gram matrix of the unit gradients.")
        groups = losses.shape[0]
        rows, calls = [], []
        for g in range(groups):
            rows.append(self.aggregator.coefficients(gram[g], preferences[g], losses[g]).to(losses))
            calls.append(self.aggregator.metrics())
        # a per-call number (CAGrad's ρ, a solver's iterations) is the mean of the step's λ-groups; a running
        # total (PLC's veto rate) its value after the step's last call
        if self.aggregator.running_metrics:
            self.step_metrics = calls[-1]
        else:
            self.step_metrics = {key: sum(call[key] for call in calls) / groups for key in calls[0]}
        return torch.stack(rows) / groups, float((preferences * losses).sum() / groups)

    def metrics(self) -> dict[str, float]:
        step_metrics = self.aggregator.metrics() if self.step_metrics is None else self.step_metrics
        return {f"aggregator/{key}": value for key, value in step_metrics.items()}

    def state_dict(self) -> dict[str, Any]:
        return self.aggregator.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.aggregator.load_state_dict(state)


SCALARIZERS: dict[str, type[Scalarizer]] = {"ls": LinearScalarization, "tche": Tchebycheff}  # the only list
