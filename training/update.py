"""The update every training step ends in: one gradient buffer per unit, their combination into `.grad`, the clip.

A unit is one (λ-group g, dimension i): its loss is back-propagated into a flat buffer of its own, the buffers are
summed over the processes once per update, and the scalariser's (or aggregator's) coefficients combine them into
`.grad`, which the optimizer reads (docs/algorithms.md §4, "How the trainer implements sections 3 and 4"). A
DPO/SFT step (`trainer._accumulate`) and an RL step (`rl_step`) fill the buffers alike and both end in
`write_update`. A non-finite loss or update stops the run (`TrainingError`) before the optimizer steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from panacea.adapters import PanaceaModel
from torch import Tensor, nn

from .config import TrainConfig
from .scalarisation import Scalarizer


class TrainingError(RuntimeError):
    """The run cannot go on (a non-finite loss or gradient); the last checkpoint is left as it was."""


def check_finite(unit_losses: Tensor, step: int, config: TrainConfig, names: list[str] | None = None) -> None:
    """Stop the run before the update when a unit loss L (G, m) is NaN/inf, naming every such loss's dimension (or
    `names[i]`, e.g. PAMA's one combined loss, named once per λ-group), its λ-group and the step; the last checkpoint
    is left as it was."""
    names = names or config.dimension_names
    found = {}  # (name, group) -> value, in order: PAMA's m copies of one loss are one loss
    for group, i in (~torch.isfinite(unit_losses)).nonzero().tolist():
        found.setdefault((names[i], group), float(unit_losses[group, i]))
    if found:
        losses = ", ".join(f"the {name!r} loss is {value} (λ-group {group})" for (name, group), value in found.items())
        raise TrainingError(
            f"step {step}: {losses}; stopped before the update, the last checkpoint is intact. Lower the learning "
            "rate or check the data."
        )


def write_update(
    config: TrainConfig,
    step: int,
    model: PanaceaModel,
    scalarizer: Scalarizer,
    buffers: GradientBuffers,
    unit_losses: Tensor,
    groups: Tensor,
    levels: Tensor | None = None,
) -> dict[str, float]:
    """Write the combined, clipped update into `.grad` (the caller steps the optimizer); return its metrics.

    The scalariser (or aggregator) maps the unit losses L (G, m), or `levels` in their place (RL's Tchebycheff
    levels), and the group λs (G, m) to coefficients on the unit gradients.
    """
    metrics: dict[str, float] = {}
    gram = buffers.gram(groups.shape[0]) if scalarizer.needs_gram else None
    coefficients, metrics["loss"] = scalarizer.coefficients(unit_losses if levels is None else levels, groups, gram)
    metrics.update(scalarizer.metrics())
    if scalarizer.name != "ls":  # the weight each dimension's gradient got (LS puts λ inside the losses)
        for i, name in enumerate(config.dimension_names):
            metrics[f"coefficient/{name}"] = float(coefficients[:, i].sum())
    regulariser = None
    orthogonality_weight = config.adapter_config().orthogonality_weight
    if orthogonality_weight > 0:  # AdaLoRA's regulariser (peft's orth_reg_weight): in the loss, in no unit
        penalty = model.orthogonality_penalty()
        metrics["orthogonality"] = float(penalty.detach())
        regulariser = orthogonality_weight * penalty
    metrics["grad_norm"] = buffers.combine(coefficients.flatten(), config.max_grad_norm, regulariser)
    if not math.isfinite(metrics["grad_norm"]):
        raise TrainingError(
            f"step {step}: the update's norm is {metrics['grad_norm']}; stopped, the last checkpoint is intact."
        )
    return metrics


class GradientBuffers:
    """One flat gradient buffer per unit, with every parameter's `.grad` a view into it while that unit runs.

    Backward accumulates into the active unit's buffer in place (no copy); one all-reduce of every unit's
    buffer syncs processes; `combine` writes Σ_u c_u g_u into a final buffer that the optimizer reads.
    Memory: (units + 1) × trainable parameters.
    """

    def __init__(self, parameters: list[nn.Parameter], units: int) -> None:
        self.parameters = parameters
        size = sum(parameter.numel() for parameter in parameters)
        anchor = parameters[0]
        self.flat = torch.zeros(units + 1, size, dtype=anchor.dtype, device=anchor.device)  # last row: the update
        self._views = [self._split(row) for row in self.flat]

    def _split(self, row: Tensor) -> list[Tensor]:
        views, offset = [], 0
        for parameter in self.parameters:
            views.append(row[offset : offset + parameter.numel()].view_as(parameter))
            offset += parameter.numel()
        return views

    def zero(self) -> None:
        self.flat.zero_()

    @contextmanager
    def accumulating(self, unit: int) -> Iterator[None]:
        """Within the block, backward adds into unit `unit`'s buffer."""
        for parameter, view in zip(self.parameters, self._views[unit], strict=True):
            parameter.grad = view
        try:
            yield
        finally:
            for parameter in self.parameters:
                parameter.grad = None

    def all_reduce(self) -> None:
        dist.all_reduce(self.flat[:-1])

    def gram(self, groups: int) -> Tensor:
        """Each λ-group's M = G Gᵀ of its m unit gradients, (groups, m, m), float64 for the small solvers.

        Units are laid out group-major (unit g·m + i), so the blocks across groups, which no rule uses,
        are never computed.
        """
        units = self.flat[:-1].view(groups, -1, self.flat.shape[1])
        return torch.bmm(units, units.transpose(1, 2)).double()

    def combine(self, coefficients: Tensor, max_norm: float | None, regulariser: Tensor | None = None) -> float:
        """`.grad` ← Σ_u c_u g_u (+ ∇ `regulariser`), clipped to `max_norm`; returns the norm before clipping.

        `regulariser`, a scalar of the parameters, joins the combined update and no unit's gradient, so the
        scalariser or aggregator never weighs it.
        """
        update = self.flat[-1]
        torch.mv(self.flat[:-1].T, coefficients.to(self.flat), out=update)  # (P,) = Σ_u c_u g_u
        for parameter, view in zip(self.parameters, self._views[-1], strict=True):
            parameter.grad = view
        if regulariser is not None:
            regulariser.backward()  # accumulates into `.grad`, i.e. into `update`
        norm = float(update.norm())
        if max_norm is not None and norm > max_norm:
            update.mul_(max_norm / (norm + 1e-6))  # torch.nn.utils.clip_grad_norm_'s rule
        return norm
