"""Small exact solvers on the Gram matrix M = G Gᵀ (m × m), shared by the aggregators (docs/aggregators.md).

Everything here works on coefficient vectors over the original per-dimension gradients g_i: a vector
Σ_i a_i g_i is stored as a (m,), and its dot product with Σ_j b_j g_j is a·M·b. Inputs are float64
tensors; the solvers run in numpy float64 (m is a handful, so per-call overhead is what costs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

MGDA_TOLERANCE = 1e-9  # accept w only if its KKT residual is ≤ this · max_i M_ii (docs/algorithms.md, MGDA)
_STOP = 1e-15  # Wolfe's stop: Frank–Wolfe gap ≤ this · max(1, max|q|), i.e. at rounding (M scaled to max M_ii = 1)
_TIE = 1e-13  # directions v with vᵀ(M + 11ᵀ)v ≤ this (M scaled) are ties: w + εv is as good, to rounding


def unit_gram(gram: Tensor) -> np.ndarray:
    """M (m, m) divided by max_i M_ii (so the solvers' thresholds are scale-free; the optima do not change)
    and made positive semi-definite: eigenvalues below 0 are set to 0.

    A Gram matrix is symmetric PSD, but one summed in float32 (as the trainer's is) can be asymmetric, and have
    eigenvalues ~1e-7 max M_ii below 0 when gradients are nearly dependent; the convex solvers below need a
    symmetric M ⪰ 0. Both changes are at the rounding level of M itself.
    """
    matrix = gram.numpy().astype(np.float64)
    scale = float(np.max(np.diag(matrix)))
    matrix = (matrix + matrix.T) / (2 * scale if scale > 0 else 2.0)
    values, vectors = np.linalg.eigh(matrix)
    if values.min() < 0:
        matrix = (vectors * np.maximum(values, 0.0)) @ vectors.T
        matrix = (matrix + matrix.T) / 2
    return matrix


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


def _affine_minimiser(gram: np.ndarray, q: np.ndarray, support: list[int]) -> np.ndarray:
    """v (|S|,) minimising ½ vᵀ M_SS v + q_Sᵀ v subject to Σ v = 1 (no sign constraint), from its KKT system
    [M_SS 1; 1ᵀ 0] [v; λ] = [−q_S; 1], nonsingular while the points g_S are affinely independent (Wolfe keeps
    them so).
    """
    k = len(support)
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = gram[np.ix_(support, support)]
    kkt[:k, k] = kkt[k, :k] = 1.0
    rhs = np.append(-q[support], 1.0)
    try:
        return np.linalg.solve(kkt, rhs)[:k]
    except np.linalg.LinAlgError:  # affinely dependent to rounding: the least-squares solution, checked by the caller
        return np.linalg.lstsq(kkt, rhs, rcond=None)[0][:k]


def simplex_qp(gram: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, int]:
    """(w (m,), cycles): w = argmin_{w ∈ Δ} ½ wᵀMw + qᵀw, by Wolfe's min-norm-point method (Wolfe 1976).

    gram: M (m, m), PSD, scaled to max M_ii = 1; q (m,) = M z for some z, so the problem is the projection of
    −Σ z_i g_i onto the hull of the g_i (q = 0: the min-norm point, MGDA). Wolfe's corral S stays affinely
    independent, so each affine minimiser is a nonsingular solve; the method is finite. A major cycle adds
    the vertex j of least gradient (Mw + q)_j while the Frank–Wolfe gap wᵀ(Mw + q) − min_j (Mw + q)_j is
    above rounding; minor cycles step toward the affine minimiser of S and drop the vertices that reach 0.
    """
    m = gram.shape[0]
    start = int(np.argmin(0.5 * np.diag(gram) + q))  # the best vertex
    w, support, cycles = np.zeros(m), [start], 0
    w[start] = 1.0
    stop = _STOP * max(1.0, float(np.max(np.abs(q))))
    for _ in range(50 * m):  # a cap far above Wolfe's finite count, against cycling by rounding
        gradient = gram @ w + q
        j = int(np.argmin(gradient))
        if w @ gradient - gradient[j] <= stop or j in support:
            break  # optimal, or j already in the corral: its affine minimiser is optimal up to rounding
        support = [*support, j]
        while True:
            cycles += 1
            v = _affine_minimiser(gram, q, support)
            current = w[support]
            if np.all(v > 0):
                current = v
            else:  # step from w toward v until the first vertex reaches 0, and drop it
                outside = np.flatnonzero(v <= 0)
                ratios = current[outside] / (current[outside] - v[outside])
                current = np.maximum(current + ratios.min() * (v - current), 0.0)
                current[outside[np.argmin(ratios)]] = 0.0
            w[:] = 0.0
            w[support] = current
            support = [i for i in support if w[i] > 0]
            if np.all(v > 0) or j not in support:
                break
        w /= w.sum()
        if j not in support:
            break  # the new vertex left at once: no progress left in float64
    return w, cycles


def least_norm_weights(gram: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The w' of least ‖w'‖₂ in Δ with Σ w'_i g_i = Σ w_i g_i, from M (m, m) scaled to max M_ii = 1 and w (m,) ∈ Δ.

    Optima of MGDA and of CAGrad's dual are unique in g_w; w itself is unique unless some v ≠ 0 has Mv = 0
    and Σ v = 0 (an affine dependence among the g_i, e.g. rank(M) < m − 1 or a repeated gradient). Then
    w' = w + N z, N an orthonormal basis of those v, and z solves min ½‖w + Nz‖² s.t. w + Nz ≥ 0 by the
    primal active-set method (Nocedal & Wright 2006, Algorithm 16.3; Hessian I, so every step is exact).
    """
    m = w.shape[0]
    values, vectors = np.linalg.eigh(gram + np.ones((m, m)))  # vᵀ(M + 11ᵀ)v = ‖Gᵀv‖² + (Σ v)²
    null = vectors[:, values <= _TIE]
    if null.shape[1] == 0:
        return w
    linear, z, working = null.T @ w, np.zeros(null.shape[1]), []
    for _ in range(10 * m):
        rows = null[working]  # constraints (w + Nz)_i = 0 held active, as rows of N
        multipliers = np.linalg.lstsq(rows @ rows.T, -w[working] + rows @ linear, rcond=None)[0]
        step = -linear + rows.T @ multipliers - z  # to the minimiser with the working set held at 0
        if np.linalg.norm(step) <= 1e-15:
            if not working or multipliers.min() >= -1e-15:
                break  # the multipliers of the held bounds are ≥ 0: optimal
            working.pop(int(np.argmin(multipliers)))
            continue
        x, dx = w + null @ z, null @ step
        blocking = [i for i in range(m) if i not in working and dx[i] < -1e-15]
        ratios = [x[i] / -dx[i] for i in blocking]
        alpha = min([1.0, *ratios])
        z = z + alpha * step
        if alpha < 1.0:
            working.append(blocking[int(np.argmin(ratios))])
    result = np.maximum(w + null @ z, 0.0)
    return result / result.sum()


def mgda_residual(gram: np.ndarray, w: np.ndarray) -> float:
    """MGDA's KKT residual wᵀMw − min_i (Mw)_i ≥ 0 for w ∈ Δ, the Frank–Wolfe gap; 0 exactly at the optimum.

    It bounds both the excess ‖d‖² − ‖d*‖² ≤ 2·residual and, since d* is the projection of 0 onto the
    hull, ‖d − d*‖² ≤ 2·residual (d = Gᵀw).
    """
    gains = gram @ w
    return max(float(w @ gains - gains.min()), 0.0)


def min_norm_weights(gram: Tensor) -> tuple[Tensor, int, float]:
    """(w*, solver cycles, KKT residual / max M_ii): w* = argmin_{w ∈ Δ} wᵀMw, MGDA's min-norm element.

    gram: M (m, m) float64. m = 2: the closed form. m > 2: Wolfe's method on M / max M_ii made PSD
    (`unit_gram`), then the least-‖w‖₂ optimum if there are several. Accepted only with residual ≤ 1e-9.
    """
    m = gram.shape[0]
    matrix = unit_gram(gram)
    if m == 1:
        return torch.ones(1, dtype=gram.dtype), 0, 0.0
    if m == 2:
        gamma = min_norm_pair(matrix[0, 0], matrix[0, 1], matrix[1, 1])
        w, cycles = np.array([gamma, 1 - gamma]), 0
    else:
        w, cycles = simplex_qp(matrix, np.zeros(m))
        spread = least_norm_weights(matrix, w)
        if mgda_residual(matrix, spread) <= mgda_residual(matrix, w) + 1e-15:  # a tie moves d by rounding only
            w = spread
    residual = mgda_residual(matrix, w)
    if not residual <= MGDA_TOLERANCE:
        raise RuntimeError(
            f"mgda: the min-norm solver stopped at KKT residual {residual:.3g}·max M_ii > {MGDA_TOLERANCE:g} "
            f"(m = {m}, {cycles} cycles); please report this Gram matrix: {gram.tolist()}."
        )
    return torch.from_numpy(w), cycles, residual


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
