"""CAGrad's dual on the Gram matrix, solved exactly (docs/aggregators.md, CAGrad; no scipy).

    F(w) = g_wᵀ g0 + s ‖g_w‖,   g_w = Σ_i w_i g_i,   g0 = Σ_i p_i g_i,   s = √φ = c ‖g0‖,   w ∈ Δ

In Gram form g_w·g0 = wᵀb with b = M p, and ‖g_w‖² = wᵀMw. Used by CAGrad and by clipped CAGrad (RACO).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ._simplex import least_norm_weights, simplex_qp, unit_gram

CAGRAD_TOLERANCE = 1e-9  # accept w only if its duality gap is ≤ this · ‖g0‖² (+ the rounding floor below)
ROUNDING_FLOOR = 1e-12  # ... + this · max_i M_ii · (1 + √φ/‖g_w‖): float64 rounding of the gap in Gram form
# ‖g_w‖ below this · max_i ‖g_i‖ counts as 0 (then ρ = 0 and d = g0, the authors' rule): wᵀMw carries rounding
# ~1e-16 · max_i M_ii, so in Gram form ‖g_w‖ is resolved only to ~1e-8 · max_i ‖g_i‖.
ZERO = 1e-7


def cagrad_gap(gram: np.ndarray, p: np.ndarray, phi: float, w: np.ndarray) -> float:
    """The duality gap F(w) − min_i g_i·d ≥ 0 of w ∈ Δ, d = g0 + √φ g_w/‖g_w‖ (d = g0 if g_w = 0).

    min_i g_i·d is the primal value of d, which lies on the ball ‖d − g0‖ ≤ √φ, and F(w) ≥ F(w*) = the
    primal optimum; so the gap bounds how far both w and d are from optimal. It is 0 exactly at the optimum
    with g_w* ≠ 0.
    """
    gains, pulls = gram @ p, gram @ w  # g_i·g0 and g_i·g_w
    norm = math.sqrt(max(float(w @ pulls), 0.0))
    direction = pulls / norm if norm > 0 else np.zeros_like(pulls)
    root = math.sqrt(phi)
    return float(w @ gains) + root * norm - float(np.min(gains + root * direction))


def cagrad_pair(gram: np.ndarray, gains: np.ndarray, phi: float) -> float:
    """x minimising F over w = (x, 1 − x) on two gradients (docs/algorithms.md, CAGrad), in closed form.

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


def _on_support(gram: np.ndarray, gains: np.ndarray, root: float, support: list[int]) -> np.ndarray | None:
    """The dual optimum if its support is S (None if that is impossible); ours.

    On S the projection QP below has w(t) = α + t β, with [M_SS 1; 1ᵀ 0] [α; ·] = [0; 1] and
    [M_SS 1; 1ᵀ 0] [β; ·] = [−b_S; 0]. The root ‖G_Sᵀ w(t)‖ = s t is the quadratic
    (βᵀMβ − s²) t² + 2 αᵀMβ t + αᵀMα = 0, whose positive root exists when βᵀMβ < s².
    """
    k = len(support)
    block = gram[np.ix_(support, support)]
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = block
    kkt[:k, k] = kkt[k, :k] = 1.0
    rhs = np.zeros((k + 1, 2))
    rhs[k, 0], rhs[:k, 1] = 1.0, -gains[support]
    try:
        alpha, beta = np.linalg.solve(kkt, rhs)[:k].T
    except np.linalg.LinAlgError:
        return None
    a = float(beta @ block @ beta) - root * root
    b, c = float(alpha @ block @ beta), max(float(alpha @ block @ alpha), 0.0)
    if a >= 0:
        return None
    t = (b + math.sqrt(max(b * b - a * c, 0.0))) / -a
    local = alpha + t * beta
    if t <= 0 or local.min() < -1e-12:
        return None
    w = np.zeros(gram.shape[0])
    w[support] = np.maximum(local, 0.0)
    return w / w.sum()


def _search(gram: np.ndarray, p: np.ndarray, phi: float, accept: float) -> tuple[np.ndarray | None, int]:
    """(w*, evaluations) for m > 2, M scaled to max M_ii = 1; None when g_w* = 0 (‖g_w*‖ < ZERO).

    Ours: for t > 0 let w(t) = argmin_{w ∈ Δ} ½ wᵀMw + t bᵀw, i.e. x(t) = g_w(t) is the projection of −t g0
    onto the hull of the g_i (Wolfe's method, `simplex_qp`). Its KKT conditions are CAGrad's, with ρ = 1/t,
    exactly when ‖x(t)‖ = s t; and r(t) = ‖x(t)‖/t = ‖d − g0‖ at ρ = 1/t is non-increasing (the step of a
    proximal map grows with its parameter), with r(‖x_MGDA‖/s) ≥ s ≥ r(max_i‖g_i‖/s). Bisect on log t; at
    every w(t) try the exact solution on its support (`_on_support`) and stop once its gap is at rounding.
    """
    gains, root = gram @ p, math.sqrt(phi)
    mgda, _ = simplex_qp(gram, np.zeros(len(p)))
    smallest = math.sqrt(max(float(mgda @ gram @ mgda), 0.0))  # ‖x(t)‖ ≥ ‖x_MGDA‖ for every t
    low, high = max(smallest, ZERO) / root, 1.0 / root
    best, best_gap = None, math.inf
    for evaluations in range(1, 200):
        t = low if evaluations == 1 else math.sqrt(low * high)  # r(low) ≥ s unless ‖x_MGDA‖ < ZERO: check it
        w, _ = simplex_qp(gram, t * gains)
        ratio = math.sqrt(max(float(w @ gram @ w), 0.0)) / t
        if evaluations == 1 and ratio <= root:  # the root is at t ≤ low: x(low) itself, or ‖g_w*‖ < ZERO
            return (w if smallest >= ZERO else None), evaluations
        for candidate in (_on_support(gram, gains, root, list(np.flatnonzero(w))), w):
            gap = cagrad_gap(gram, p, phi, candidate) if candidate is not None else math.inf
            if gap < best_gap:
                best, best_gap = candidate, gap
        if best_gap <= 1e-3 * accept or high <= low * (1 + 1e-15):
            break
        low, high = (t, high) if ratio > root else (low, t)
    return best, evaluations


def cagrad_weights(gram: Tensor, p: Tensor, phi: float) -> tuple[Tensor, float, int, float]:
    """(w*, ρ, evaluations, gap / ‖g0‖²) for CAGrad from M (m, m), the user weights p (m,) and φ = c²‖g0‖².

    w* = argmin_{w ∈ Δ} F(w), the one of least ‖w‖₂ if there are several; ρ = √φ/‖g_w*‖, or 0 when
    φ = 0 or g_w* = 0 (then d = g0 and w* does not matter to d). m = 2: the closed form; m > 2: `_search`.
    M and φ are first divided by max_i M_ii, which leaves w* unchanged, and M is made PSD (`unit_gram`).
    Accepted only with gap ≤ 1e-9 ‖g0‖² + 1e-12 max_i M_ii (1 + √φ/‖g_w*‖); the gap is reported as 0 when ρ = 0.
    """
    m = gram.shape[0]
    weights, largest = p.numpy(), float(gram.diagonal().max())
    matrix, phi = unit_gram(gram), phi / (largest if largest > 0 else 1.0)
    gains = matrix @ weights
    g0 = math.sqrt(max(float(weights @ gains), 0.0))
    root = math.sqrt(phi) if g0 > 0 else 0.0  # φ = c²‖g0‖², from the caller's unscaled M
    accept = CAGRAD_TOLERANCE * g0 * g0 + ROUNDING_FLOOR
    evaluations = 0
    if m == 1 or root == 0:  # F(w) = bᵀw: the least-norm optimum spreads evenly over the ties of least b_i
        ties = gains <= gains.min() + ZERO
        w = ties / ties.sum()
    elif m == 2:
        x = cagrad_pair(matrix, gains, phi)
        w = np.array([x, 1 - x])
    else:
        w, evaluations = _search(matrix, weights, phi, accept)
        if w is None:  # g_w* = 0: the least-norm w in the fibre of the min-norm point 0
            w, _ = simplex_qp(matrix, np.zeros(m))
    norm = math.sqrt(max(float(w @ matrix @ w), 0.0))
    if root == 0 or norm < ZERO:
        return torch.from_numpy(least_norm_weights(matrix, w)), 0.0, evaluations, 0.0
    gap, spread = cagrad_gap(matrix, weights, phi, w), least_norm_weights(matrix, w)
    if (spread_gap := cagrad_gap(matrix, weights, phi, spread)) <= gap + 1e-15:  # a tie moves g_w by rounding only
        w, gap = spread, spread_gap
        norm = math.sqrt(max(float(w @ matrix @ w), 0.0))
    accept += ROUNDING_FLOOR * root / norm
    if not gap <= accept:
        raise RuntimeError(
            f"cagrad: the dual solver stopped at duality gap {gap:.3g} > {accept:.3g} (1e-9 ‖g0‖² + rounding, in "
            f"units of max M_ii; m = {m}, {evaluations} evaluations); please report this Gram matrix and weights: "
            f"{gram.tolist()}, {p.tolist()}."
        )
    return torch.from_numpy(w), root / norm, evaluations, gap / (g0 * g0)
