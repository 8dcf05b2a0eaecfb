"""Per-step gradient aggregators in coefficient form (docs/aggregators.md).

Each maps the Gram matrix M = G Gᵀ of the per-dimension gradients, the preference λ and the losses to
coefficients c, and the update is d = Σ_i c_i g_i. `AGGREGATORS` is the only list of names; the
config's 'none' means no aggregator (the scalarisation alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._base import Aggregator
from .cagrad import CAGrad
from .clipped_cagrad import ClippedCAGrad
from .mgda import MGDA
from .normalized import Normalized
from .pcgrad import PCGrad
from .plc import PLC

AGGREGATORS: dict[str, type[Aggregator]] = {
    "mgda": MGDA,
    "pcgrad": PCGrad,
    "cagrad": CAGrad,
    "clipped_cagrad": ClippedCAGrad,
    "plc": PLC,
    "normalized": Normalized,
}


def build_aggregator(
    name: str, kwargs: dict[str, Any] | None, seed: int, dimension_names: Sequence[str] | None = None
) -> Aggregator:
    """The aggregator `name` with its settings `kwargs`; `seed` is the default of a random one's own seed;
    `dimension_names`, the run's dimensions in order, name a dimension whose gradient is not finite in the error.

    Raises ValueError for an unknown name (also for 'none', which the caller handles: nothing to build),
    an unknown key or a bad value.
    """
    if name not in AGGREGATORS:
        names = ["none", *sorted(AGGREGATORS)]
        if name == "none":
            raise ValueError("aggregator 'none' builds nothing: the scalarisation alone makes the update.")
        raise ValueError(f"aggregator {name!r} is not one of {names}.")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValueError(f"aggregator_kwargs must be a mapping of settings, got {kwargs!r}.")
    cls = AGGREGATORS[name]
    settings = dict(kwargs or {})
    if "seed" in cls.defaults:
        settings.setdefault("seed", seed)
    aggregator = cls(**settings)
    if dimension_names is not None:
        aggregator.dimension_names = tuple(dimension_names)
    return aggregator


__all__ = [
    "AGGREGATORS",
    "MGDA",
    "PLC",
    "Aggregator",
    "CAGrad",
    "ClippedCAGrad",
    "Normalized",
    "PCGrad",
    "build_aggregator",
]
