"""The aggregator interface: per-step coefficients on the per-dimension gradients (docs/aggregators.md)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._state import StepRule


class Aggregator(StepRule, ABC):
    """Maps the Gram matrix M = G Gᵀ (m, m), the preference λ (m,) and the losses (m,) to c (m,).

    The update is d = Σ_i c_i g_i over the original per-dimension gradients g_i, so only M is needed:
    MGDA and CAGrad solve for weights on M, and PCGrad and PLC track the coefficient vectors of the
    vectors they project. Settings arrive as keyword arguments (`aggregator_kwargs` in the config);
    `defaults` lists every allowed key, and `validate` refuses bad values where they enter.
    """

    name: ClassVar[str]
    dimension_names: tuple[str, ...] | None = None  # the run's dimensions, for errors (set by build_aggregator)
    defaults: ClassVar[dict[str, Any]] = {}
    # metrics() describes its last call (False: a step logs the mean over its λ-groups' calls) or is a running
    # total over all calls so far (True: a step logs the value after its last call)
    running_metrics: ClassVar[bool] = False
    retired: ClassVar[dict[str, str]] = {}  # keys no longer accepted, with the reason the error gives

    def __init__(self, **kwargs: Any) -> None:
        for key in kwargs:
            if key in self.retired:
                raise ValueError(f"aggregator_kwargs.{key} for {self.name} is no longer accepted: {self.retired[key]}")
            if key not in self.defaults:
                allowed = ", ".join(self.defaults) or "none"
                raise ValueError(f"aggregator_kwargs: unknown key {key!r} for {self.name}; allowed: {allowed}.")
        for key, value in {**self.defaults, **kwargs}.items():
            setattr(self, key, value)
        self.validate()

    @abstractmethod
    def validate(self) -> None:
        """Refuse bad settings (see `require`)."""

    def require(self, ok: bool, key: str, allowed: str) -> None:
        """Raise `aggregator_kwargs.<key> for <name> must be <allowed>, got <value>.` unless ok."""
        if not ok:
            raise ValueError(f"aggregator_kwargs.{key} for {self.name} must be {allowed}, got {getattr(self, key)!r}.")

    def coefficients(self, gram: Tensor, preference: Tensor, losses: Tensor) -> Tensor:
        """c (m,) float64 on gram's device, from M (m, m), λ (m,) on the simplex and the losses (m,).

        The small solvers run in float64 on the CPU (m is the number of dimensions, a handful). A NaN or
        infinite M is refused here, for every method, before any solver sees it.
        """
        m = gram.shape[0]
        if gram.shape != (m, m) or preference.shape != (m,) or losses.shape != (m,):
            raise ValueError(
                f"{self.name}: expected gram (m, m), preference (m,) and losses (m,), got "
                f"{tuple(gram.shape)}, {tuple(preference.shape)} and {tuple(losses.shape)}."
            )
        if not bool(torch.isfinite(gram).all()):
            raise ValueError(non_finite_message(self.name, gram, self.dimension_names))
        cpu = dict(device="cpu", dtype=torch.float64)
        c = self._coefficients(gram.detach().to(**cpu), preference.detach().to(**cpu), losses.detach().to(**cpu))
        return c.to(gram.device)

    @abstractmethod
    def _coefficients(self, gram: Tensor, preference: Tensor, losses: Tensor) -> Tensor:
        """The method's rule; float64 CPU tensors in and out."""


class CountsEvents:
    """For an aggregator whose rule sometimes acts: counts its calls (one per step and λ-group) and those in which
    the rule acted, logs the share as `metrics()[rate]` and keeps both counts in its checkpoint state as
    {"steps": …, event: …} (PLC: its veto; PCGrad: a conflict, where it projects)."""

    name: ClassVar[str]  # the aggregator's, for errors
    running_metrics: ClassVar[bool] = True  # the rate counts every call so far
    event: ClassVar[str]  # the state key of the acting calls' count, e.g. "vetoed_steps"
    rate: ClassVar[str]  # the metric, e.g. "veto_rate"
    steps: int = 0
    events: int = 0

    def count(self, acted: bool) -> None:
        self.steps += 1
        self.events += bool(acted)

    def metrics(self) -> dict[str, float]:
        return {self.rate: self.events / self.steps if self.steps else 0.0}

    def counts(self) -> dict[str, int]:
        return {"steps": self.steps, self.event: self.events}

    def load_counts(self, state: dict[str, Any]) -> None:
        """Take the counts from `state` (integers, steps ≥ events ≥ 0), else one error naming the aggregator."""
        steps, events = state.get("steps"), state.get(self.event)
        if not (isinstance(steps, int) and isinstance(events, int) and 0 <= events <= steps):
            raise ValueError(f"{self.name} state needs integers 'steps' ≥ '{self.event}' ≥ 0, got {state!r}.")
        self.steps, self.events = steps, events


NORMALIZATIONS = ("none", "l2", "loss", "loss+")  # n_i = 1, ‖g_i‖, L_i, L_i ‖g_i‖ (isl-org's MGDA options)


def gradient_normalizers(name: str, normalization: str, gram: Tensor, losses: Tensor) -> Tensor:
    """1 / n_i (m,) for ĝ_i = g_i / n_i, with n_i one of NORMALIZATIONS (Sener & Koltun's `gradient_normalizers`).

    ‖g_i‖ comes from the Gram matrix's diagonal. Where n_i = 0 (a zero gradient or loss), ĝ_i is taken as 0
    (ours): the returned 1 / n_i is 0 there, so that dimension gets coefficient 0 on g_i.
    """
    if normalization in ("loss", "loss+") and bool((losses < 0).any()):
        raise ValueError(f"{name}: normalization {normalization!r} needs losses ≥ 0, got {losses.tolist()}.")
    norms = gram.diagonal().clamp(min=0).sqrt()
    n = {"none": torch.ones_like(losses), "l2": norms, "loss": losses, "loss+": losses * norms}[normalization]
    return torch.where(n > 0, 1 / n, torch.zeros_like(n))


def non_finite_message(name: str, gram: Tensor, dimension_names: Sequence[str] | None = None) -> str:
    """The error for a Gram matrix M (m, m) holding NaN/inf, naming the dimensions whose gradient is not finite.

    A NaN or infinite entry of g_i makes M_ii NaN/inf, so the diagonal names the dimensions; if it is finite
    (the products overflowed instead), the rows holding NaN/inf do. With `dimension_names` (m,) the error names
    them, else their 0-based positions.
    """
    diagonal = gram.diagonal()
    bad = [i for i in range(gram.shape[0]) if not bool(torch.isfinite(diagonal[i]))]
    entries = ", ".join(f"M[{i}, {i}] = {float(diagonal[i])}" for i in bad)
    if not bad:
        bad = [i for i in range(gram.shape[0]) if not bool(torch.isfinite(gram[i]).all())]
        entries = "off the diagonal"
    which = "dimension" if len(bad) == 1 else "dimensions"
    if dimension_names is not None and len(dimension_names) == gram.shape[0]:
        named = ", ".join(f"{dimension_names[i]!r}" for i in bad)
    else:
        named = f"{', '.join(map(str, bad))} (0-based, in the order of `dimensions`)"
    return (
        f"{name}: the Gram matrix of the dimension gradients holds NaN/inf ({entries}), so the gradient of "
        f"{which} {named} is not finite; check that loss for NaN/inf and lower the learning rate."
    )


def is_number(value: Any) -> bool:
    """A real number (int or float, not bool, not NaN); infinities pass, callers bound them."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
