"""Small solvers on the Gram matrix M = G Gᵀ (m × m), shared by the aggregators (docs/aggregators.md).

Everything here works on coefficient vectors over the original per-dimension gradients g_i: a vector
Σ_i a_i g_i is stored as a (m,), and its dot product with Σ_j b_j g_j is a·M·b. Inputs are float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

MGDA_MAX_ITERATIONS = 250  # the reference solver's MAX_ITER (isl-org/MultiObjectiveOptimization, min_norm_solvers.py)
MGDA_STOP = 1e-5  # ... and its STOP_CRIT on ‖Δw‖₁
CAGRAD_MAX_ITERATIONS = 2000
CAGRAD_STOP = 1e-10  # ‖w − Π(w − ∇F)‖₁, the projected-gradient residual at step 1 (M scaled to max M_ii = 1)


def project_to_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of v (m,) onto {w ≥ 0, Σ w = 1}, sort-based (Duchi et al. 2008, Fig. 1)."""
    u = torch.sort(v, descending=True).values
    cumulative = torch.cumsum(u, 0) - 1
    k = torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)
    last = int(torch.nonzero(u - cumulative / k > 0).max())  # ρ: the last index still above the threshold
    return torch.clamp(v - cumulative[last] / (last + 1), min=0)


def min_norm_pair(m11: float, m12: float, m22: float) -> float:
    """γ minimising ‖γ g1 + (1 − γ) g2‖² from g1·g1, g1·g2, g2·g2 (Sener & Koltun 2018, Algorithm 1).

    Exact 1 and 0 at the ends, where the reference code returns 0.999 and 0.001. In the last branch
    m12 < min(m11, m22), so the denominator is positive.
    """
    if m12 >= m11:
        return 1.0
    if m12 >= m22:
        return 0.0
    return (m22 - m12) / (m11 + m22 - 2 * m12)


def _unit_scale(gram: Tensor) -> float:
    """max_i M_ii (1 if every gradient is zero); the solvers divide M by it so their thresholds are scale-free."""
    scale = float(gram.diagonal().max())
    return scale if scale > 0 else 1.0


def _best_pair(gram: Tensor) -> Tensor:
    """The min-norm point over every pair of gradients (the reference `_min_norm_2d`), as weights (m,)."""
    m = gram.shape[0]
    best, best_cost = None, math.inf
    for i in range(m):
        for j in range(i + 1, m):
            gamma = min_norm_pair(float(gram[i, i]), float(gram[i, j]), float(gram[j, j]))
            w = torch.zeros(m, dtype=gram.dtype)
            w[i], w[j] = gamma, 1 - gamma
            cost = float(w @ gram @ w)
            if cost < best_cost:
                best, best_cost = w, cost
    return best


def _next_point(w: Tensor, direction: Tensor) -> Tensor:
    """The reference `_next_point`: move along the direction centred to sum 0 until a face, then project."""
    centred = direction - direction.sum() / w.numel()
    negative, positive = centred < 0, centred > 0
    steps = torch.cat([-w[negative] / centred[negative], (1 - w[positive]) / centred[positive]])
    steps = steps[steps > 1e-7]
    t = float(steps.min()) if steps.numel() else 1.0
    return project_to_simplex(w + t * centred)


def min_norm_weights(gram: Tensor) -> tuple[Tensor, int]:
    """(w* = argmin_{w ∈ Δ} wᵀ M w, solver iterations); MGDA's min-norm element of the convex hull.

    m ≤ 2: the closed form. m > 2: the reference projected-gradient solver, started from the best pair,
    with an exact line search between the current and the next point, at most 250 iterations, stopping
    when ‖Δw‖₁ < 1e-5 (the reference loop never increments its counter; ours counts). M is first divided
    by its largest diagonal entry (ours; w* does not change), so the reference's 1e-7 step threshold is scale-free.
    """
    m = gram.shape[0]
    gram = gram / _unit_scale(gram)
    if m == 1:
        return torch.ones(1, dtype=gram.dtype), 0
    w = _best_pair(gram)
    if m == 2:
        return w, 0
    for iteration in range(1, MGDA_MAX_ITERATIONS + 1):
        candidate = _next_point(w, -(gram @ w))
        gamma = min_norm_pair(float(w @ gram @ w), float(w @ gram @ candidate), float(candidate @ gram @ candidate))
        updated = gamma * w + (1 - gamma) * candidate
        change = float((updated - w).abs().sum())
        w = updated
        if change < MGDA_STOP:
            return w, iteration
    return w, MGDA_MAX_ITERATIONS


def _cagrad_pair(gram: Tensor, gains: Tensor, phi: float) -> float:
    """x minimising F over w = (x, 1 − x) on two gradients (docs/aggregators.md, CAGrad), in closed form.

    gram: their 2 × 2 Gram block; gains: (g1·g0, g2·g0). With δ = g1 − g2, u = δ·g0, b = δ·g2, D = ‖δ‖²
    and K = D‖g2‖² − b² ≥ 0, F(x) = x u + √φ ‖g2 + x δ‖ + const has its stationary point at
    h = b + x D = −sign(u) √(u² K / (φ D − u²)) when φ D > u²; otherwise F is monotone in x.
    """
    u = float(gains[0] - gains[1])
    b = float(gram[0, 1] - gram[1, 1])
    d = float(gram[0, 0] + gram[1, 1] - 2 * gram[0, 1])
    k = max(d * float(gram[1, 1]) - b * b, 0.0)
    if d <= 0:
        return 0.5
    if phi * d > u * u:
        h = -math.copysign(math.sqrt(u * u * k / (phi * d - u * u)), u) if u != 0 else 0.0
        x = (h - b) / d
    else:
        x = 0.0 if u > 0 else 1.0
    return min(max(x, 0.0), 1.0)


def cagrad_objective(gram: Tensor, p: Tensor, phi: float, w: Tensor) -> float:
    """CAGrad's dual objective F(w) = g_wᵀ g0 + √φ ‖g_w‖, with g_w = Σ w_i g_i and g0 = Σ p_i g_i."""
    return float(w @ gram @ p) + math.sqrt(phi) * math.sqrt(max(float(w @ gram @ w), 0.0))


def cagrad_weights(gram: Tensor, p: Tensor, phi: float) -> tuple[Tensor, int]:
    """(w* = argmin_{w ∈ Δ} F(w), solver iterations) for CAGrad, from M, the user weights p and φ = c²‖g0‖².

    m = 2: the closed form. m > 2 (ours, no scipy): the best closed-form pair, then projected gradient
    (`_cagrad_descent`). M and φ are first divided by max_i M_ii, which leaves w* unchanged.
    """
    m = gram.shape[0]
    if m == 1:
        return torch.ones(1, dtype=gram.dtype), 0
    scale = _unit_scale(gram)
    gram, phi = gram / scale, phi / scale
    gains = gram @ p  # g_i · g0
    if m == 2:
        x = _cagrad_pair(gram, gains, phi)
        return torch.tensor([x, 1 - x], dtype=gram.dtype), 0
    start, best = None, math.inf
    for i in range(m):
        for j in range(i + 1, m):
            x = _cagrad_pair(gram[[i, j]][:, [i, j]], gains[[i, j]], phi)
            candidate = torch.zeros(m, dtype=gram.dtype)
            candidate[i], candidate[j] = x, 1 - x
            if (value := cagrad_objective(gram, p, phi, candidate)) < best:
                start, best = candidate, value
    return _cagrad_descent(gram, p, phi, start)


def _cagrad_descent(gram: Tensor, p: Tensor, phi: float, w: Tensor) -> tuple[Tensor, int]:
    """Projected gradient on the simplex from w, with a backtracking step (proximal gradient's
    sufficient-decrease test), until the residual ‖w − Π_Δ(w − ∇F(w))‖₁ < 1e-10, w stops moving, or
    2,000 steps. F is convex, so a fixed point is the minimum; the tests compare it with a grid search.
    """
    gains, best, step = gram @ p, cagrad_objective(gram, p, phi, w), 1.0
    for iteration in range(1, CAGRAD_MAX_ITERATIONS + 1):
        norm = math.sqrt(max(float(w @ gram @ w), 0.0))
        gradient = gains + (math.sqrt(phi) / norm * (gram @ w) if norm > 0 else 0.0)
        if float((project_to_simplex(w - gradient) - w).abs().sum()) < CAGRAD_STOP:
            return w, iteration
        while True:
            candidate = project_to_simplex(w - step * gradient)
            move = candidate - w
            value = cagrad_objective(gram, p, phi, candidate)
            if value <= best + float(gradient @ move) + float(move @ move) / (2 * step):
                break
            step /= 2
            if step < 1e-20:
                return w, iteration  # no decrease left to find in float64
        if float(move.abs().sum()) < 1e-15:
            return w, iteration
        w, best, step = candidate, value, min(2 * step, 1e6)
    return w, CAGRAD_MAX_ITERATIONS


def project_conflicts(gram: Tensor, weights: Tensor, targets: Sequence[Sequence[int]]) -> Tensor:
    """c (m,) with Σ_i c_i g_i = Σ_i weights_i g_i', PCGrad's projection in coefficient form.

    g_i' starts as g_i (a_i = e_i) and, for each j in targets[i] in turn, loses its component along the
    ORIGINAL g_j when they conflict: if a_i·M·e_j < 0, a_i ← a_i − (a_i·M·e_j / M_jj) e_j. Targets with
    ‖g_j‖ = 0 are skipped; which targets to visit, and in what order, is the caller's rule.
    """
    m = gram.shape[0]
    coefficients = torch.zeros(m, dtype=gram.dtype)
    for i in range(m):
        if weights[i] == 0:
            continue
        a = torch.zeros(m, dtype=gram.dtype)
        a[i] = 1.0
        for j in targets[i]:
            if gram[j, j] <= 0:
                continue
            dot = a @ gram[:, j]
            if dot < 0:
                a[j] -= dot / gram[j, j]
        coefficients += weights[i] * a
    return coefficients
