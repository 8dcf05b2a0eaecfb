"""PCGrad (Yu et al., NeurIPS 2020, arXiv 2001.06782); code tianheyu927/PCGrad, LibMTL.

    for each i: g_i' = g_i; for j ≠ i in a random order: if g_i'·g_j < 0: g_i' ← g_i' − (g_i'·g_j / ‖g_j‖²) g_j
    d = Σ_i λ_i g_i'

Projections use the ORIGINAL g_j. The paper sums the g_i'; weighting them by λ is ours (it equals
PCGrad on the λ-scaled losses, since scaling g_j does not change its projection). Targets with λ_j = 0
or ‖g_j‖ = 0 are skipped. Each g_i' stays a combination of the original gradients, so the method
tracks its coefficient vector and reads dot products off M.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from ._base import Aggregator, CountsEvents
from ._simplex import project_conflicts


class PCGrad(CountsEvents, Aggregator):
    """λ-weighted PCGrad; one seeded numpy Generator draws every objective's order (saved in state_dict).

    `metrics()` gives `conflict_rate`, the share of calls (one per step and λ-group) in which two weighted,
    non-zero gradients conflict (g_i·g_j < 0) — exactly the calls where PCGrad projects, and so differs from LS."""

    name: ClassVar[str] = "pcgrad"
    defaults: ClassVar[dict[str, Any]] = {"seed": 0}
    event: ClassVar[str] = "conflicted_steps"  # calls with a conflicting pair
    rate: ClassVar[str] = "conflict_rate"
    seed: int
    order: Sequence[int] | None = None  # a fixed order for the next call (tests), else a random one

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.generator = np.random.default_rng(self.seed)

    def validate(self) -> None:
        integer = isinstance(self.seed, int) and not isinstance(self.seed, bool)
        self.require(integer and self.seed >= 0, "seed", "an integer ≥ 0")

    def coefficients(
        self, gram: Tensor, preference: Tensor, losses: Tensor, order: Sequence[int] | None = None
    ) -> Tensor:
        """As `Aggregator.coefficients`; a fixed `order` (a permutation of range(m), for tests) replaces the
        random draw, and every objective then visits the others in that order."""
        if order is not None and sorted(order) != list(range(gram.shape[0])):
            raise ValueError(f"pcgrad: order must be a permutation of range({gram.shape[0]}), got {order!r}.")
        self.order = order
        return super().coefficients(gram, preference, losses)

    def _coefficients(self, gram: Tensor, preference: Tensor, losses: Tensor) -> Tensor:
        m = gram.shape[0]
        orders = [self.order if self.order is not None else self.generator.permutation(m).tolist() for _ in range(m)]
        targets = [[int(j) for j in orders[i] if j != i and preference[j] != 0] for i in range(m)]
        weighted = [i for i in range(m) if preference[i] != 0 and gram[i, i] > 0]
        self.count(any(gram[i, j] < 0 for i in weighted for j in weighted if i < j))
        return project_conflicts(gram, preference, targets)

    def state_dict(self) -> dict[str, Any]:
        # PCG64's 128-bit integers as decimal strings, so any JSON reader keeps them exact.
        state = self.generator.bit_generator.state
        return {
            **self.counts(),
            "generator": {
                "bit_generator": state["bit_generator"],
                "state": str(state["state"]["state"]),
                "inc": str(state["state"]["inc"]),
                "has_uint32": int(state["has_uint32"]),
                "uinteger": int(state["uinteger"]),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A checkpoint's state; one saved before the counts were (only 'generator') resumes them from 0."""
        counted = isinstance(state, dict) and "steps" in state
        fields = {"generator", "steps", self.event} if counted else {"generator"}
        saved = state.get("generator") if isinstance(state, dict) and set(state) == fields else None
        keys = {"bit_generator", "state", "inc", "has_uint32", "uinteger"}
        if not isinstance(saved, dict) or set(saved) != keys or saved["bit_generator"] != "PCG64":
            raise ValueError(f"pcgrad state needs 'generator' with a PCG64 state {sorted(keys)}, got {state!r}.")
        self.load_counts(state if counted else {"steps": 0, self.event: 0})
        self.generator.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(saved["state"]), "inc": int(saved["inc"])},
            "has_uint32": int(saved["has_uint32"]),
            "uinteger": int(saved["uinteger"]),
        }
