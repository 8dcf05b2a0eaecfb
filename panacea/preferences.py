"""Preference vectors on the simplex: validation, sampling and evaluation grids.

A preference λ has one non-negative weight per objective and sums to 1. It is either one vector of
shape (m,) for the whole batch or one row per sample, shape (batch, m).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

PreferenceLike = Sequence[float] | Sequence[Sequence[float]] | np.ndarray | torch.Tensor

SUM_TOLERANCE = 1e-6


def validate_preference(preference: PreferenceLike, num_preferences: int) -> torch.Tensor:
    """Check that `preference` lies on the simplex and return it as a new float tensor (float32 or float64).

    Accepts a list, tuple, numpy array or tensor of shape (m,) or (batch, m). Raises `ValueError`
    naming the problem (shape, non-finite, negative, wrong sum) and how to fix it. The sum must be 1
    within 1e-6, or within m · eps for half-precision input, which cannot represent 1e-6.
    """
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
            f"{_describe(tensor)}; normalise it first, e.g. p / p.sum(-1, keepdim=True)."
        )
    return tensor


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
