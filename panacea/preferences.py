"""Preference vectors on the simplex: validation, sampling and evaluation grids.

A preference λ has one non-negative weight per dimension and sums to 1. It is either one vector of
shape (m,) for the whole batch or one row per sample, shape (batch, m). When the adapter names its
dimensions, a mapping {name: weight} stands for one vector and a list of mappings for one row per sample.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import torch

PreferenceLike = (
    Sequence[float]
    | Sequence[Sequence[float]]
    | np.ndarray
    | torch.Tensor
    | Mapping[str, float]
    | Sequence[Mapping[str, float]]
)

SUM_TOLERANCE = 1e-6


def validate_preference(
    preference: PreferenceLike, num_preferences: int, names: Sequence[str] | None = None
) -> torch.Tensor:
    """Check that `preference` lies on the simplex and return it as a new float tensor (float32 or float64).

    Accepts a list, tuple, numpy array or tensor of shape (m,) or (batch, m); with `names` (one per
    dimension, in order) also a mapping {name: weight}, shape (m,), or a list of them, shape (batch, m).
    Raises `ValueError` naming the problem (unknown or missing name, shape, non-finite, negative, wrong
    sum) and how to fix it. The sum must be 1 within 1e-6, or within m · eps for half-precision input,
    which cannot represent 1e-6.
    """
    preference = _weights_in_order(preference, num_preferences, names)
    try:
        tensor = torch.as_tensor(preference)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"preference must be a list, tuple, numpy array or tensor of {num_preferences} numbers; "
            f"could not read {preference!r} ({error})."
        ) from None
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise ValueError(f"preference must hold real numbers, got dtype {tensor.dtype}.")
    tolerance = SUM_TOLERANCE
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tolerance = max(SUM_TOLERANCE, num_preferences * torch.finfo(tensor.dtype).eps)
    # Always a copy: the caller may edit its own tensor later; a model must not see that.
    tensor = tensor.to(torch.float64 if tensor.dtype == torch.float64 else torch.float32, copy=True)
    if tensor.ndim not in (1, 2) or tensor.shape[-1] != num_preferences or tensor.numel() == 0:
        raise ValueError(
            f"preference must have shape ({num_preferences},) or (batch, {num_preferences}), one weight per "
            f"objective, got shape {tuple(tensor.shape)}."
        )
    if not torch.isfinite(tensor).all():
        raise ValueError(f"preference contains NaN or infinite values: {_describe(tensor)}.")
    if (tensor < 0).any():
        raise ValueError(f"preference weights must be non-negative, got {_describe(tensor)}.")
    sums = tensor.sum(-1, dtype=torch.float64)
    if ((sums - 1).abs() > tolerance).any():
        raise ValueError(
            f"preference weights must sum to 1 (within {tolerance:.3g}), got sum {_describe(sums)} for "
            f"{_describe(tensor)}; divide each weight by their sum first."
        )
    return tensor


def preference_as_json(preference: torch.Tensor, names: Sequence[str] | None) -> dict[str, float] | list[float]:
    """JSON-ready: {name: weight} for one preference of shape (m,), or the list of weights when there are no names.

    Weights are the shortest decimals that round-trip in the tensor's dtype (0.8, not 0.800000011920929).
    """
    weights = [float(str(weight)) for weight in preference.detach().cpu().numpy()]
    return weights if names is None else dict(zip(names, weights, strict=True))


def sample_preferences(
    num_preferences: int,
    num_samples: int | None = None,
    *,
    concentration: float = 1.0,
    rng: np.random.Generator | int | None = None,
) -> torch.Tensor:
    """Draw λ ~ Dirichlet(concentration · 1); concentration 1 is uniform on the simplex.

    Returns shape (m,) when `num_samples` is None, else (num_samples, m). `rng` is a numpy
    generator or a seed, for reproducible draws.
    """
    if num_preferences < 1:
        raise ValueError(f"num_preferences must be at least 1, got {num_preferences}.")
    if not concentration > 0:
        raise ValueError(f"concentration must be positive, got {concentration}.")
    rng = np.random.default_rng(rng)
    draws = rng.dirichlet(np.full(num_preferences, float(concentration)), size=num_samples)
    return torch.from_numpy(draws).float()


def is_vertex(weights: Sequence[float]) -> bool:
    """Whether `weights` is a vertex of the simplex: one weight 1, every other 0 (as grids and caches hold them)."""
    return sorted(weights) == [0.0] * (len(weights) - 1) + [1.0]


def simplex_grid(num_preferences: int, num_points: int = 11) -> torch.Tensor:
    """Simplex lattice with step 1/(num_points − 1), shape (C(num_points + m − 2, m − 1), m).

    11 points for m = 2 and 66 for m = 3 at the default step of 0.1; rows are in lexicographic
    order of their first weights, largest first.
    """
    if num_preferences < 1:
        raise ValueError(f"num_preferences must be at least 1, got {num_preferences}.")
    if num_points < 2:
        raise ValueError(f"num_points must be at least 2 (the two ends of each axis), got {num_points}.")
    steps = num_points - 1
    slots = steps + num_preferences - 1
    rows = []  # stars and bars: m − 1 bars among `slots` positions split `steps` units into m counts
    for bars in itertools.combinations(range(slots), num_preferences - 1):
        edges = (-1, *bars, slots)
        rows.append([right - left - 1 for left, right in zip(edges, edges[1:], strict=False)])
    rows.reverse()
    return torch.tensor(rows, dtype=torch.float64).div(steps).float()


def _describe(tensor: torch.Tensor) -> str:
    """Values rounded to 6 decimals, so float32 noise does not clutter error messages."""
    return str(tensor.detach().double().cpu().numpy().round(6).tolist())


def _weights_in_order(preference: PreferenceLike, num_preferences: int, names: Sequence[str] | None) -> PreferenceLike:
    """A mapping {name: weight} as its weights in `names` order, a list of mappings as one such row each.

    Anything else is returned as it is, for `validate_preference` to read as a vector.
    """
    if isinstance(preference, Mapping):
        return _named_row(preference, num_preferences, names)
    if isinstance(preference, (list, tuple)) and any(isinstance(row, Mapping) for row in preference):
        if not all(isinstance(row, Mapping) for row in preference):
            raise ValueError(
                "a per-sample preference must be all mappings {name: weight} or all vectors, not a mix; got "
                f"{preference!r}."
            )
        return [_named_row(row, num_preferences, names) for row in preference]
    return preference


def _named_row(row: Mapping, num_preferences: int, names: Sequence[str] | None) -> list[float]:
    if names is None:
        raise ValueError(
            f"preference {dict(row)!r} gives weights by name, but the adapter has no preference names "
            f"(PanaceaConfig.preference_names is None); pass a vector of {num_preferences} weights in the order "
            "of its dimensions instead."
        )
    unknown = [key for key in row if key not in names]
    missing = [name for name in names if name not in row]
    if unknown or missing:
        problems = [f"{kind} name(s) {keys}" for kind, keys in (("unknown", unknown), ("missing", missing)) if keys]
        raise ValueError(
            f"preference {dict(row)!r} has {' and '.join(problems)}; the preference names are {list(names)} "
            "(in order): give one weight for each."
        )
    weights = []
    for name in names:
        value = row[name]
        if isinstance(value, (bool, np.bool_, str, bytes)) or np.ndim(value) != 0:
            raise ValueError(f"preference weight {name!r} must be one number, got {value!r}.")
        try:
            weights.append(float(value))
        except (TypeError, ValueError):
            raise ValueError(f"preference weight {name!r} must be one number, got {value!r}.") from None
    return weights
