"""The run's random draws, each from a generator seeded by the run's seed and a counter: resuming needs no RNG state.

`draw_preferences` gives step t's λs, λ ~ Dirichlet(α·1) from a generator seeded by (seed, t) (docs/algorithms.md
§2); `SeededStream` orders a data stream, one shuffle per epoch seeded by (seed, epoch): a dimension's pairs
(`trainer.DimensionData`) or RL's prompts (`rl_step.RolloutSource`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from panacea.preferences import sample_preferences

from .config import TrainConfig


class SeededStream:
    """An endless stream over `stream_size()` items, one seeded shuffle per epoch: `indices` at any positions.

    The order is a function of (seed, epoch) alone, so resuming needs no RNG state. Subclasses are dataclasses
    with `seed` and `_order` fields.
    """

    seed: int
    _order: tuple[int, Tensor] | None

    def stream_size(self) -> int:
        """How many items one epoch holds."""
        raise NotImplementedError

    def indices(self, positions: Tensor) -> Tensor:
        """Item indices at stream `positions` (a 1-D run of consecutive positions): epoch-wise seeded shuffles."""
        result = torch.empty_like(positions)
        for slot, position in enumerate(positions.tolist()):
            epoch, offset = divmod(position, self.stream_size())
            if self._order is None or self._order[0] != epoch:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._order = (epoch, torch.randperm(self.stream_size(), generator=generator))
            result[slot] = self._order[1][offset]
        return result


@dataclass
class StepPreferences:
    """The λs of one step. groups: (G, m), one per λ-group; per_sample: (m, batch, m) or None."""

    groups: Tensor
    per_sample: Tensor | None = None

    def rows(self, dimension: int, positions: Tensor, group_size: int) -> Tensor:
        """λ of the samples at batch `positions` of `dimension`: (len(positions), m)."""
        if self.per_sample is not None:
            return self.per_sample[dimension, positions]
        return self.groups[positions // group_size]


def draw_preferences(config: TrainConfig, step: int) -> StepPreferences:
    """λ ~ Dirichlet(α·1) for `step`, from a generator seeded by (seed, step): resuming needs no RNG state.

    Under 'fixed' sampling, always `fixed_preference`.
    """
    if config.fixed_preference is not None:  # a single-objective (or any fixed-trade-off) model
        return StepPreferences(groups=torch.tensor([config.fixed_preference]))
    rng = np.random.default_rng([config.seed, step])
    m, alpha = len(config.dimensions), config.dirichlet_alpha
    if config.preference_sampling == "per_sample":  # one λ per pair of every dimension (LS only; ours)
        draws = sample_preferences(m, m * config.batch_size, concentration=alpha, rng=rng)
        per_sample = draws.view(m, config.batch_size, m)  # (dimension, pair, m)
        # LS, the only scalariser that allows per-sample λ, ignores the group λ: keep the step's mean for logs.
        return StepPreferences(groups=per_sample.mean(dim=(0, 1)).unsqueeze(0), per_sample=per_sample)
    return StepPreferences(groups=sample_preferences(m, config.num_groups, concentration=alpha, rng=rng))
