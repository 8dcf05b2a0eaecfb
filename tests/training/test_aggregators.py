"""Gradient aggregators in coefficient form (docs/aggregators.md; test cases from docs/algorithms.md).

Each method is checked three ways: the documented test cases, a direct implementation on the gradient
vectors written here (numpy, no Gram matrix), and an optimality condition (MGDA's KKT conditions and an
exhaustive support enumeration, CAGrad's duality gap on the vectors, its dual against a grid and its primal
against random points of the ball). Only the public API is used, so these tests also run on older code.
"""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from panacea.training.aggregators import AGGREGATORS, MGDA, PLC, CAGrad, Normalized, PCGrad, build_aggregator

GEOMETRY = ((1, 0), (-1, 1))  # g1, g2 of docs/algorithms.md: they conflict, g1·g2 = −1


def tensor(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def aggregate(aggregator, gradients, preference, losses=None, **options):
    """(c, d = cᵀG) for gradients G (m, P), as the trainer uses an aggregator: from the Gram matrix only."""
    G = tensor(*gradients) if not isinstance(gradients, torch.Tensor) else gradients
    preference = tensor(*preference) if not isinstance(preference, torch.Tensor) else preference
    losses = torch.ones(len(G), dtype=torch.float64) if losses is None else losses
    c = aggregator.coefficients(G @ G.T, preference, losses, **options)
    return c, c @ G


def random_case(m: int, seed: int, size: int = 50):
    """Gradients (m, P) and a preference on the simplex, as float64 tensors."""
    generator = torch.Generator().manual_seed(seed)
    gradients = torch.randn(m, size, generator=generator, dtype=torch.float64)
    preference = torch.rand(m, generator=generator, dtype=torch.float64) + 0.05
    return gradients, preference / preference.sum()


RANDOM_CASES = [(m, seed) for m in (2, 3, 4) for seed in (0, 1)]


# --- an independent simplex solver on vectors (numpy), for the direct implementations ------------------------


def simplex_projection(v: np.ndarray) -> np.ndarray:
    """Projection onto the simplex by bisection on the threshold (not the library's sort-based one)."""
    low, high = v.min() - 1, v.max()
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if np.maximum(v - middle, 0).sum() > 1 else (low, middle)
    return np.maximum(v - (low + high) / 2, 0)


def minimise_on_simplex(value, gradient, m: int, iterations: int = 3000) -> np.ndarray:
    """Projected gradient with backtracking for a convex function of w on the simplex."""
    w, step = np.full(m, 1 / m), 1.0
    for _ in range(iterations):
        g = gradient(w)
        while True:
            candidate = simplex_projection(w - step * g)
            move = candidate - w
            if value(candidate) <= value(w) + g @ move + move @ move / (2 * step) or step < 1e-12:
                break
            step /= 2
        if np.abs(move).sum() < 1e-15:
            break
        w, step = candidate, step * 2
    return w


def vector_mgda(G: np.ndarray, normalizers: np.ndarray) -> np.ndarray:
    """d = Σ w*_i ĝ_i, ĝ_i = g_i / n_i, w* minimising ‖Σ w_i ĝ_i‖² (solved on the vectors)."""
    normalized = G / normalizers[:, None]
    w = minimise_on_simplex(
        lambda w: (w @ normalized) @ (w @ normalized), lambda w: 2 * normalized @ (w @ normalized), len(G)
    )
    return w @ normalized


def vector_cagrad_weights(G: np.ndarray, p: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """(w*, √φ) of CAGrad's dual, solved on the vectors."""
    g0 = p @ G
    root_phi = c * np.linalg.norm(g0)
    w = minimise_on_simplex(
        lambda w: (w @ G) @ g0 + root_phi * np.linalg.norm(w @ G),
        lambda w: G @ g0 + root_phi * G @ (w @ G) / np.linalg.norm(w @ G),
        len(G),
        iterations=20000,
    )
    return w, root_phi


def vector_cagrad(G: np.ndarray, p: np.ndarray, c: float, raco: bool = False) -> np.ndarray:
    """CAGrad's d = g0 + √φ g_w / ‖g_w‖; with raco, RACO's d = g0 + √φ G̃/‖G̃‖, G̃ = Σ min(w_i, p_i) g_i."""
    w, root_phi = vector_cagrad_weights(G, p, c)
    mixture = (np.minimum(w, p) if raco else w) @ G
    return p @ G + root_phi * mixture / np.linalg.norm(mixture)


def support_enumeration_mgda(gram: np.ndarray) -> np.ndarray:
    """w* = argmin_{w ∈ Δ} wᵀMw by trying every support S: the KKT system [M_SS 1; 1ᵀ 0][w; λ] = [0; 1]
    (least squares, for singular blocks), kept when w ≥ 0; the feasible one of least wᵀMw wins."""
    m, best, best_value = len(gram), None, math.inf
    for size in range(1, m + 1):
        for support in map(list, itertools.combinations(range(m), size)):
            kkt = np.block(
                [[gram[np.ix_(support, support)], np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]]
            )
            local = np.linalg.lstsq(kkt, np.append(np.zeros(size), 1.0), rcond=None)[0][:size]
            if local.min() < -1e-12 or abs(local.sum() - 1) > 1e-9:
                continue
            w = np.zeros(m)
            w[support] = np.maximum(local, 0) / np.maximum(local, 0).sum()
            if (value := w @ gram @ w) < best_value:
                best, best_value = w, value
    return best


def cagrad_gap(G: np.ndarray, p: np.ndarray, c: float, w: np.ndarray, d: np.ndarray) -> float:
    """CAGrad's duality gap on the vectors: F(w) − min_i g_i·d, F(w) = g_w·g0 + c‖g0‖‖g_w‖ (≥ 0 when ‖d − g0‖ ≤ c‖g0‖).

    Weak duality: for every feasible d and every w ∈ Δ, min_i g_i·d ≤ F(w); so a gap of 0 proves both optimal.
    """
    g0, g_w = p @ G, w @ G
    return float(g_w @ g0 + c * np.linalg.norm(g0) * np.linalg.norm(g_w) - (G @ d).min())


def badly_scaled_case(m: int, seed: int, size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients (m, size) whose rows are scaled by 10^U(−3, 2) (norms 5 decades apart), and λ ~ Dirichlet(1)."""
    generator = np.random.default_rng(seed)
    G = generator.standard_normal((m, size)) * 10 ** generator.uniform(-3, 2, size=(m, 1))
    return torch.from_numpy(G), torch.from_numpy(generator.dirichlet(np.ones(m)))


def project_off(vector: np.ndarray, target: np.ndarray) -> np.ndarray:
    """PCGrad's rule: remove the component along target when they conflict."""
    dot = vector @ target
    return vector - dot / (target @ target) * target if dot < 0 else vector


def vector_pcgrad(G: np.ndarray, preference: np.ndarray, order: list[int]) -> np.ndarray:
    projected = []
    for i in range(len(G)):
        g = G[i].copy()
        for j in order:
            if j != i and preference[j] != 0 and G[j] @ G[j] > 0:
                g = project_off(g, G[j])  # always the ORIGINAL g_j
        projected.append(g)
    return preference @ np.array(projected)


def vector_plc(G: np.ndarray, preference: np.ndarray, tau: float) -> np.ndarray:
    d0 = preference @ G
    gains = G @ d0
    degradation = preference * np.maximum(-gains, 0)
    surplus = preference * np.maximum(gains, 0)
    vetoed = [i for i in range(len(G)) if degradation[i] > 0 and surplus.sum() - surplus[i] < tau * degradation[i]]
    projected = []
    for j in range(len(G)):
        g = G[j].copy()
        for i in vetoed:
            if i != j:
                g = project_off(g, G[i])
        projected.append(g)
    return preference @ np.array(projected)


# --- shared pieces ----------------------------------------------------------------------------------------------


def test_registry_and_build():
    assert sorted(AGGREGATORS) == ["cagrad", "clipped_cagrad", "mgda", "normalized", "pcgrad", "plc"]
    assert isinstance(build_aggregator("cagrad", {"c": 0.4}, seed=0), CAGrad)
    assert build_aggregator("pcgrad", {}, seed=7).seed == 7  # the run's seed is the default ...
    assert build_aggregator("pcgrad", {"seed": 3}, seed=7).seed == 3  # ... and kwargs override it
    with pytest.raises(ValueError, match=r"'foo' is not one of \['none', 'cagrad', 'clipped_cagrad'"):
        build_aggregator("foo", {}, seed=0)
    with pytest.raises(ValueError, match="builds nothing"):
        build_aggregator("none", {}, seed=0)


def test_output_is_float64_from_float32_inputs():
    G = torch.tensor(GEOMETRY, dtype=torch.float32)
    c = MGDA().coefficients(G @ G.T, torch.tensor([0.5, 0.5]), torch.ones(2))
    assert c.dtype == torch.float64 and torch.allclose(c, tensor(0.6, 0.4))
    with pytest.raises(ValueError, match=r"expected gram \(m, m\)"):
        MGDA().coefficients(G @ G.T, torch.ones(3) / 3, torch.ones(2))


# --- MGDA ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gradients, weights, direction",
    [
        (((1, 0), (0, 1)), (0.5, 0.5), (0.5, 0.5)),
        (GEOMETRY, (0.6, 0.4), (0.2, 0.4)),
        (((2, 0), (0, 1), (-1, 2)), (0.2, 0.8, 0), (0.4, 0.8)),
        (((1, 0), (-1, 1), (0, -1)), None, (0, 0)),  # 0 in the hull: Pareto-stationary
        (((1, 0), (2, 0)), (1, 0), (1, 0)),  # exactly 1 and 0, not the reference's 0.999 / 0.001
    ],
)
def test_mgda_docs_cases(gradients, weights, direction):
    m = len(gradients)
    c, d = aggregate(MGDA(), gradients, [1 / m] * m)
    if weights is not None:
        assert torch.allclose(c, tensor(*weights), atol=1e-12)
    assert torch.allclose(d, tensor(*direction), atol=1e-12)  # exact, d = 0 included


@pytest.mark.parametrize(
    "gradients, weights, direction",
    [
        (((1, -1, 0), (0, 0, 1), (-20, 32, -8)), (0.709677, 0.264066, 0.026257), (0.184546, 0.130533, 0.054014)),
        (((-1, 0), (0, -1), (9, 18)), (9 / 28, 18 / 28, 1 / 28), (0, 0)),
    ],
)
def test_mgda_reproducers_where_the_reference_solver_stopped_early(gradients, weights, direction):
    """docs/algorithms.md (revised 2026-12-04): the isl-org port stopped at its 250-iteration cap on both."""
    aggregator = MGDA()
    c, d = aggregate(aggregator, gradients, [1 / 3] * 3)
    assert torch.allclose(c, tensor(*weights), atol=1e-6) and torch.allclose(d, tensor(*direction), atol=1e-6)
    assert aggregator.metrics()["kkt_residual"] <= 1e-15
    if direction[0] != 0:
        assert math.isclose(float(d @ d), 0.054014, abs_tol=1e-6)


@pytest.mark.parametrize("m", range(3, 11))
@pytest.mark.parametrize("seed", range(3))
def test_mgda_matches_support_enumeration_on_badly_scaled_gradients(m, seed):
    """Rows scaled 5 decades apart: the same min-norm point as trying every support, KKT residual ≤ 1e-9 max M_ii."""
    G, _ = badly_scaled_case(m, seed, size=40 if seed < 2 else 2)  # seed 2: P = 2 < m, many ties in w
    c, d = aggregate(MGDA(), G, torch.full((m,), 1 / m, dtype=torch.float64))
    gram, largest = (G @ G.T).numpy(), float((G @ G.T).diagonal().max())
    reference = support_enumeration_mgda(gram / largest) @ G.numpy()
    assert np.linalg.norm(d.numpy() - reference) <= 1e-8 * math.sqrt(largest)
    assert float(d @ d) <= reference @ reference + 1e-12 * largest  # never above the enumeration's minimum
    residual = float(d @ d - (G @ d).min())  # ‖d‖² − min_i g_i·d ≥ 0, the KKT residual (Frank–Wolfe gap)
    assert c.min() >= 0 and math.isclose(float(c.sum()), 1, abs_tol=1e-12) and residual <= 1e-9 * largest


@pytest.mark.parametrize(
    "gradients, weights",
    [
        (((1, 0), (1, 0), (-1, 1)), (0.3, 0.3, 0.4)),  # a repeated gradient splits its weight evenly
        (((1, 0), (0, 1), (-1, 0), (0, -1)), (0.25, 0.25, 0.25, 0.25)),
        (((1, 0), (0, 1), (-1, 0), (0, -1), (-2, 0)), (4 / 13, 3 / 13, 2 / 13, 3 / 13, 1 / 13)),  # Lagrange, by hand
        (((1,), (2,), (4,), (-1,)), (2 / 7, 1 / 7, 0, 4 / 7)),  # w_3 ≥ 0 binds: (16, 10, −2, 28)/52 without it
    ],
)
def test_mgda_takes_the_least_norm_weights_among_ties(gradients, weights):
    """Every w below gives the same d; MGDA returns the one of least ‖w‖₂ (worked out by hand)."""
    m = len(gradients)
    c, _ = aggregate(MGDA(), gradients, [1 / m] * m)
    assert torch.allclose(c, tensor(*weights), atol=1e-12)


def test_mgda_ignores_the_preference():
    G, _ = random_case(3, seed=0)
    first, _ = aggregate(MGDA(), G, (0.1, 0.1, 0.8))
    second, _ = aggregate(MGDA(), G, (0.7, 0.2, 0.1))
    assert torch.equal(first, second)


@pytest.mark.parametrize("m, seed", RANDOM_CASES)
@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
def test_mgda_matches_vector_form(m, seed, normalization):
    G, preference = random_case(m, seed)
    losses = torch.rand(m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5
    _, d = aggregate(MGDA(normalization=normalization), G, preference, losses)
    norms = G.norm(dim=1).numpy()
    normalizers = {"none": np.ones(m), "l2": norms, "loss": losses.numpy(), "loss+": losses.numpy() * norms}
    expected = vector_mgda(G.numpy(), normalizers[normalization])
    assert np.allclose(d.numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("m, seed", [(m, seed) for m in (2, 3, 4, 6) for seed in range(3)])
def test_mgda_kkt_conditions(m, seed):
    """w* on the simplex, g_i·d ≥ ‖d‖² for every i, with equality where w*_i > 0 (d is the min-norm point)."""
    G, _ = random_case(m, seed, size=8)
    w, d = aggregate(MGDA(), G, torch.full((m,), 1 / m, dtype=torch.float64))
    assert w.min() >= 0 and math.isclose(float(w.sum()), 1, abs_tol=1e-12)
    slack = G @ d - d @ d
    tolerance = 1e-12 * float(G.norm(dim=1).max() ** 2)
    assert float(slack.min()) >= -tolerance
    assert float(slack[w > 1e-9].abs().max()) <= tolerance


def test_mgda_zero_gradient_gives_zero_direction():
    for normalization in ("none", "l2"):
        _, d = aggregate(MGDA(normalization=normalization), ((1, 0), (0, 0), (-1, 1)), (1 / 3, 1 / 3, 1 / 3))
        assert torch.equal(d, tensor(0.0, 0.0))


# --- normalised linear scalarisation -----------------------------------------------------------------------------


def test_normalized_docs_case():
    """g1 = (3, 4), g2 = (0, 1), λ = (½, ½): ‖g‖ = (5, 1), so c = (0.1, 0.5) and d = (0.3, 0.9)."""
    c, d = aggregate(Normalized(), ((3, 4), (0, 1)), (0.5, 0.5))
    assert torch.allclose(c, tensor(0.1, 0.5), atol=1e-12) and torch.allclose(d, tensor(0.3, 0.9), atol=1e-12)


@pytest.mark.parametrize("m, seed", RANDOM_CASES)
@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
def test_normalized_matches_vector_form(m, seed, normalization):
    G, preference = random_case(m, seed)
    losses = torch.rand(m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5
    _, d = aggregate(Normalized(normalization=normalization), G, preference, losses)
    norms = G.norm(dim=1).numpy()
    normalizers = {"none": np.ones(m), "l2": norms, "loss": losses.numpy(), "loss+": losses.numpy() * norms}
    expected = sum(preference[i].item() * G[i].numpy() / normalizers[normalization][i] for i in range(m))
    assert np.allclose(d.numpy(), expected, atol=1e-10)


def test_normalized_by_loss_is_the_gradient_of_the_weighted_log_losses():
    """normalization 'loss': d = ∇ Σ_i λ_i log L_i, checked by autograd on two quadratics L_i = ½‖θ − a_i‖²."""
    theta = torch.tensor([2.0, -0.5], dtype=torch.float64, requires_grad=True)
    preference = tensor(0.3, 0.7)
    losses = 0.5 * ((theta - TARGETS) ** 2).sum(1)
    (preference * losses.log()).sum().backward()
    G = (theta - TARGETS).detach()
    _, d = aggregate(Normalized(normalization="loss"), G, preference, losses.detach())
    assert torch.allclose(d, theta.grad, atol=1e-12)


def test_normalized_l2_weighs_a_vanishing_gradient_like_a_large_one():
    """A saturated dimension (gradient 1e-7 of the other's) still pulls with its weight λ_i under 'l2'."""
    _, d = aggregate(Normalized(), ((1e-7, 0), (0, 1)), (0.5, 0.5))
    assert torch.allclose(d, tensor(0.5, 0.5), atol=1e-12)
    c, d = aggregate(Normalized(), ((0, 0), (0, 2)), (0.5, 0.5))  # a zero gradient gets coefficient 0
    assert torch.equal(c, tensor(0.0, 0.25)) and torch.allclose(d, tensor(0.0, 0.5))


# --- PCGrad -------------------------------------------------------------------------------------------------------


def test_pcgrad_docs_cases():
    # g1' = (0.5, 0.5), g2' = (0, 1): the paper's sum (0.5, 1.5) is 2 d at λ = (½, ½).
    _, d = aggregate(PCGrad(), GEOMETRY, (0.5, 0.5))
    assert torch.allclose(2 * d, tensor(0.5, 1.5))
    _, d = aggregate(PCGrad(), GEOMETRY, (0.3, 0.7))
    assert torch.allclose(d, tensor(0.15, 0.85))


def test_pcgrad_order_matters():
    gradients, third = ((2, 0), (-1, 1), (-1, -1)), (1 / 3, 1 / 3, 1 / 3)
    _, forward = aggregate(PCGrad(), gradients, third, order=[0, 1, 2])
    _, backward = aggregate(PCGrad(), gradients, third, order=[2, 1, 0])
    assert torch.allclose(3 * forward, tensor(-1.0, 0.0), atol=1e-12)
    assert torch.allclose(3 * backward, tensor(0.0, 0.0), atol=1e-12)


def test_pcgrad_skips_zero_weight_and_zero_gradient_targets():
    # λ_2 = 0: g1 keeps its conflict with g2, so d = λ_1 g1; a zero g_j projects nothing.
    _, d = aggregate(PCGrad(), GEOMETRY, (1.0, 0.0))
    assert torch.equal(d, tensor(1.0, 0.0))
    _, d = aggregate(PCGrad(), ((1, 0), (0, 0)), (0.5, 0.5))
    assert torch.equal(d, tensor(0.5, 0.0))


@pytest.mark.parametrize("m, seed", RANDOM_CASES)
def test_pcgrad_matches_vector_form(m, seed):
    G, preference = random_case(m, seed)
    G[-1] = -0.8 * G[0] + 0.3 * G[-1]  # make sure some pairs conflict
    order = list(np.random.default_rng(seed).permutation(m))
    _, d = aggregate(PCGrad(), G, preference, order=order)
    assert np.allclose(d.numpy(), vector_pcgrad(G.numpy(), preference.numpy(), order), atol=1e-12)
    preference[0] = 0  # a zero weight: neither a source nor a target
    _, d = aggregate(PCGrad(), G, preference, order=order)
    assert np.allclose(d.numpy(), vector_pcgrad(G.numpy(), preference.numpy(), order), atol=1e-12)


def test_pcgrad_state_round_trip_continues_the_same_orders():
    G, preference = random_case(5, seed=0)
    G[1:] = -0.5 * G[0] + G[1:]  # conflicts everywhere, so the order shows in c
    first = build_aggregator("pcgrad", {}, seed=3)
    for _ in range(3):
        aggregate(first, G, preference)
    state = json.loads(json.dumps(first.state_dict()))
    second = build_aggregator("pcgrad", {}, seed=99)
    second.load_state_dict(state)
    continued = [aggregate(first, G, preference)[0] for _ in range(4)]
    resumed = [aggregate(second, G, preference)[0] for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(continued, resumed, strict=True))
    assert any(not torch.equal(continued[0], c) for c in continued[1:])  # the orders are random
    with pytest.raises(ValueError, match="pcgrad state needs 'generator'"):
        second.load_state_dict({"generator": {"state": 1}})


def test_pcgrads_conflict_rate_is_the_share_of_calls_with_a_conflicting_weighted_pair():
    """GEOMETRY's two gradients conflict (g1·g2 = −1): PCGrad projects; orthogonal ones never; a conflict with a
    zero-weight objective is no conflict (it is never a target). The counts survive a checkpoint, and a state saved
    before they existed (only 'generator') resumes them from 0."""
    aggregator = PCGrad()
    assert aggregator.metrics() == {"conflict_rate": 0.0}
    aggregate(aggregator, GEOMETRY, (0.5, 0.5))
    assert aggregator.metrics() == {"conflict_rate": 1.0}
    aggregate(aggregator, ((1, 0), (0, 1)), (0.5, 0.5))
    aggregate(aggregator, GEOMETRY, (1.0, 0.0))
    c, _ = aggregate(aggregator, GEOMETRY, (1.0, 0.0))
    assert torch.equal(c, tensor(1.0, 0.0))  # no projection happened: LS
    assert aggregator.metrics() == {"conflict_rate": 0.25}
    state = json.loads(json.dumps(aggregator.state_dict()))
    assert (state["steps"], state["conflicted_steps"]) == (4, 1)
    resumed = PCGrad()
    resumed.load_state_dict(state)
    assert resumed.metrics() == {"conflict_rate": 0.25}
    old = PCGrad()
    old.load_state_dict({"generator": state["generator"]})
    assert (old.state_dict()["steps"], old.state_dict()["conflicted_steps"]) == (0, 0)
    with pytest.raises(ValueError, match="'steps' ≥ 'conflicted_steps'"):
        old.load_state_dict({**state, "conflicted_steps": 5})


# --- CAGrad -------------------------------------------------------------------------------------------------------


def cagrad_weights_from(aggregator, c, preference):
    """w* = (c − p) / ρ, read back from the coefficients c = p + ρ w*."""
    return (c - preference) / aggregator.rho


def test_cagrad_with_c_zero_is_linear_scalarisation():
    G, preference = random_case(4, seed=0)
    c, _ = aggregate(CAGrad(c=0.0), G, preference)
    assert torch.allclose(c, preference, atol=1e-15)


def test_cagrad_docs_case_uniform_weights():
    aggregator, preference = CAGrad(), tensor(0.5, 0.5)
    c, d = aggregate(aggregator, GEOMETRY, preference)
    assert math.isclose(aggregator.rho, 0.25, abs_tol=1e-12)
    assert torch.allclose(cagrad_weights_from(aggregator, c, preference), tensor(1.0, 0.0), atol=1e-12)
    assert torch.allclose(d, tensor(0.25, 0.5), atol=1e-12)
    g0 = preference @ tensor(*GEOMETRY)
    assert math.isclose(float((d - g0).norm()), 0.5 * float(g0.norm()), abs_tol=1e-12)  # ‖d − g0‖ = c‖g0‖


def test_cagrad_docs_case_weighted():
    aggregator, preference = CAGrad(c=0.5), tensor(0.8, 0.2)
    c, d = aggregate(aggregator, GEOMETRY, preference)
    assert torch.allclose(cagrad_weights_from(aggregator, c, preference), tensor(0.0, 1.0), atol=1e-12)
    assert math.isclose(aggregator.rho, 0.223607, abs_tol=1e-6)
    assert torch.allclose(d, tensor(0.376393, 0.423607), atol=1e-6)


def test_cagrad_docs_case_three_objectives():
    aggregator, preference = CAGrad(), tensor(1 / 3, 1 / 3, 1 / 3)
    c, d = aggregate(aggregator, ((1, 0), (0, 1), (-1, -0.5)), preference)
    assert torch.allclose(cagrad_weights_from(aggregator, c, preference), tensor(0.464153, 0, 0.535847), atol=1e-6)
    assert math.isclose(aggregator.rho, 0.300463, abs_tol=1e-6)
    assert torch.allclose(d, tensor(-0.021541, 0.086166), atol=1e-6)


@pytest.mark.parametrize("rescale, divisor", [("none", 1.0), ("1+c^2", 1.25), ("1+c", 1.5)])
def test_cagrad_rescale(rescale, divisor):
    _, d = aggregate(CAGrad(rescale=rescale), GEOMETRY, (0.5, 0.5))
    assert torch.allclose(d * divisor, tensor(0.25, 0.5), atol=1e-12)


@pytest.mark.parametrize("m, seed", RANDOM_CASES)
@pytest.mark.parametrize("name", ["cagrad", "clipped_cagrad"])
def test_cagrad_matches_vector_form(m, seed, name):
    G, preference = random_case(m, seed)
    _, d = aggregate(build_aggregator(name, {"c": 0.5}, seed=0), G, preference)
    expected = vector_cagrad(G.numpy(), preference.numpy(), 0.5, raco=name == "clipped_cagrad")
    assert np.allclose(d.numpy(), expected, atol=1e-6)


def test_cagrad_reproducer_where_projected_gradient_stopped_early():
    """docs/algorithms.md (revised 2026-12-04): the old 2,000-step loop was 17 % off in d here (worst gain 0.0135).

    At the optimum the dual value F(w*) equals the worst objective's gain min_i g_i·d (no duality gap);
    measured gap 2e-18 ‖g0‖².
    """
    G = tensor((-5.84, 17.24, -7.99, -2.19), (0, 0.01, -0.01, 0.05), (0, 0.01, 0, -0.05), (-2.71, -3.43, 0.63, -2.33))
    preference = torch.full((4,), 0.25, dtype=torch.float64)
    aggregator = CAGrad(c=0.5)
    c, d = aggregate(aggregator, G, preference)
    w = cagrad_weights_from(aggregator, c, preference).numpy()
    g0 = preference @ G
    dual = float((w @ G.numpy()) @ g0.numpy() + 0.5 * g0.norm() * np.linalg.norm(w @ G.numpy()))
    assert math.isclose(dual, 0.041827, abs_tol=1e-6) and math.isclose(float((G @ d).min()), 0.041827, abs_tol=1e-6)
    gap = cagrad_gap(G.numpy(), preference.numpy(), 0.5, w, d.numpy())
    assert 0 <= gap + 1e-15 and gap <= 1e-9 * float(g0 @ g0)
    assert aggregator.metrics()["duality_gap"] <= 1e-9


@pytest.mark.parametrize("m", range(3, 11))
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("radius", [0.4, 0.9])
def test_cagrad_duality_gap_on_badly_scaled_gradients(m, seed, radius):
    """Rows scaled 5 decades apart: the gap F(w*) − min_i g_i·d, computed here on the vectors, is ≤ 1e-9 ‖g0‖²,
    and d lies on the ball's boundary ‖d − g0‖ = c‖g0‖ (weak duality makes that a proof of optimality)."""
    G, preference = badly_scaled_case(m, seed, size=40 if seed < 2 else 2)  # seed 2: P = 2 < m
    aggregator = CAGrad(c=radius)
    c, d = aggregate(aggregator, G, preference)
    assert aggregator.rho > 0
    g0 = (preference @ G).numpy()
    w = (c - preference).numpy() / float((c - preference).sum())  # c = p + ρ w*, Σ w* = 1
    assert w.min() >= -1e-12 and math.isclose(np.linalg.norm(d.numpy() - g0), radius * np.linalg.norm(g0), rel_tol=1e-9)
    assert cagrad_gap(G.numpy(), preference.numpy(), radius, w, d.numpy()) <= 1e-9 * (g0 @ g0)


def test_cagrad_takes_the_least_norm_weights_among_ties():
    """A repeated gradient: w* splits its share evenly, and d is CAGrad's on the merged pair (p summed)."""
    merged, _ = aggregate(CAGrad(), GEOMETRY, (0.5, 0.5))
    aggregator = CAGrad()
    c, d = aggregate(aggregator, ((1, 0), (1, 0), (-1, 1)), (0.25, 0.25, 0.5))
    w = cagrad_weights_from(aggregator, c, tensor(0.25, 0.25, 0.5))
    assert torch.allclose(w, tensor(0.5, 0.5, 0.0), atol=1e-12)  # the pair's w* = (1, 0), split in two
    assert torch.allclose(d, merged @ tensor(*GEOMETRY), atol=1e-12)


def test_cagrad_with_a_zero_optimal_mixture_returns_g0():
    """g2 = 0 and every g_i·g0 ≥ 0: F(w) ≥ 0 = F(e_2), so g_w* = 0, ρ = 0 and d = g0 (the authors' rule)."""
    for gradients in (((1, 0), (0, 0)), ((1, 0), (0, 0), (2, 1))):
        m = len(gradients)
        aggregator = CAGrad()
        preference = tensor(*([1 / m] * m))
        c, d = aggregate(aggregator, gradients, preference)
        assert aggregator.rho == 0 and torch.equal(c, preference)


@pytest.mark.parametrize("m, seed", RANDOM_CASES)
def test_cagrad_direction_solves_the_primal(m, seed):
    """d maximises min_i g_i·d over the ball ‖d − g0‖ ≤ c‖g0‖ (CAGrad's problem), against 4,000 random points."""
    G, preference = random_case(m, seed)
    _, d = aggregate(CAGrad(c=0.5), G, preference)
    g0 = preference @ G
    radius = 0.5 * g0.norm()
    assert math.isclose(float((d - g0).norm()), float(radius), rel_tol=1e-9)
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(4000, G.shape[1], generator=generator, dtype=torch.float64)
    scales = torch.rand(4000, 1, generator=generator, dtype=torch.float64) ** (1 / G.shape[1])
    points = g0 + radius * scales * directions / directions.norm(dim=1, keepdim=True)
    assert float((points @ G.T).min(dim=1).values.max()) <= float((G @ d).min()) + 1e-12


def simplex_grid(m: int, steps: int) -> torch.Tensor:
    """Every point of the simplex with coordinates in multiples of 1/steps, (count, m)."""
    if m == 2:
        x = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
        return torch.stack([x, 1 - x], dim=1)
    i, j = torch.meshgrid(torch.arange(steps + 1), torch.arange(steps + 1), indexing="ij")
    keep = i + j <= steps
    i, j = i[keep].double(), j[keep].double()
    return torch.stack([i, j, steps - i - j], dim=1) / steps


@pytest.mark.parametrize(
    "gradients, preference",
    [
        (tensor(*GEOMETRY), tensor(0.5, 0.5)),
        (tensor(*GEOMETRY), tensor(0.8, 0.2)),
        (tensor((1, 0), (0, 1), (-1, -0.5)), tensor(1 / 3, 1 / 3, 1 / 3)),
        *[random_case(m, seed, size=size) for m in (2, 3) for seed in (0, 1) for size in (2, 50)],
    ],
)
def test_cagrad_dual_beats_a_grid_search(gradients, preference):
    aggregator = CAGrad(c=0.5)
    c, _ = aggregate(aggregator, gradients, preference)
    gram, m = gradients @ gradients.T, len(gradients)
    phi = 0.25 * float(preference @ gram @ preference)
    w = cagrad_weights_from(aggregator, c, preference)
    solved = float(w @ gram @ preference) + math.sqrt(phi) * math.sqrt(max(float(w @ gram @ w), 0.0))
    grid = simplex_grid(m, 20000 if m == 2 else 300)
    values = grid @ gram @ preference + math.sqrt(phi) * ((grid @ gram) * grid).sum(1).clamp(min=0).sqrt()
    assert solved <= float(values.min()) + 1e-12


# --- clipped CAGrad (RACO) ---------------------------------------------------------------------------------------

RACO_TABLE = [  # docs/algorithms.md, Clipped CAGrad: G (rows g_i), w = λ, c, p*, d CAGrad, d RACO
    (((1, 0), (-1, 1)), (0.5, 0.5), 0.5, (1, 0), (0.25, 0.5), (0.25, 0.5)),
    (((1, 0), (-1, 1)), (0.8, 0.2), 0.5, (0, 1), (0.376393, 0.423607), (0.376393, 0.423607)),
    (((1, 0), (-1, 1)), (1, 0), 0.5, (0, 1), (0.646447, 0.353553), (1, 0)),
    (((1, 0), (0, 1)), (0.8, 0.2), 0.9, (0.151633, 0.848367), (0.930581, 0.930581), (1.248381, 0.791401)),
    (((1, 0), (0.5, 1)), (0.5, 0.5), 0.5, (0.804859, 0.195141), (1.190512, 0.595256), (1.178429, 0.639907)),
    (
        ((1, 0), (0, 1), (-1, -0.5)),
        (1 / 3, 1 / 3, 1 / 3),
        0.5,
        (0.464153, 0, 0.535847),
        (-0.021541, 0.086166),
        (0, 0.083333),
    ),
    (
        ((1, 0, 0), (0, 1, 0), (0.3, 0.3, 1)),
        (0.6, 0.3, 0.1),
        0.9,
        (0.190492, 0.528379, 0.281128),
        (0.874015, 0.874015, 0.349606),
        (0.978215, 0.851156, 0.257926),
    ),
]


@pytest.mark.parametrize("gradients, preference, radius, dual, cagrad, raco", RACO_TABLE)
def test_raco_and_cagrad_match_every_row_of_the_table(gradients, preference, radius, dual, cagrad, raco):
    aggregator, weights = CAGrad(c=radius), tensor(*preference)
    c, d = aggregate(aggregator, gradients, weights)
    assert torch.allclose(cagrad_weights_from(aggregator, c, weights), tensor(*dual), atol=1e-5)
    assert torch.allclose(d, tensor(*cagrad), atol=1e-5)
    _, d = aggregate(build_aggregator("clipped_cagrad", {"c": radius}, seed=0), gradients, weights)
    assert torch.allclose(d, tensor(*raco), atol=1e-5)


@pytest.mark.parametrize("m, seed", [(m, seed) for m in (2, 3, 5, 8) for seed in range(3)])
def test_raco_properties(m, seed):
    """‖d − g0‖ = c‖g0‖ when G̃ ≠ 0; a = λ + (c‖g0‖/‖G̃‖) p̃ with p̃ = min(p*, λ) ≥ 0, so a ≥ λ; λ_i = 0 keeps
    objective i out (a_i = 0); with p* = e_j and λ_j > 0, RACO is CAGrad."""
    G, preference = badly_scaled_case(m, seed)
    g0 = preference @ G
    a, d = aggregate(build_aggregator("clipped_cagrad", {}, seed=0), G, preference)  # c = 0.4, the authors'
    assert math.isclose(float((d - g0).norm()), 0.4 * float(g0.norm()), rel_tol=1e-9)
    assert bool((a >= preference).all())
    preference[0] = 0.0
    preference /= preference.sum()
    a, _ = aggregate(build_aggregator("clipped_cagrad", {}, seed=0), G, preference)
    assert a[0] == 0
    vertex = tensor((1, 0), (-1, 1))  # p* = e_2 at λ = (0.8, 0.2) (the table's second row)
    _, raco = aggregate(build_aggregator("clipped_cagrad", {"c": 0.5}, seed=0), vertex, (0.8, 0.2))
    _, cagrad = aggregate(CAGrad(c=0.5), vertex, (0.8, 0.2))
    assert torch.allclose(raco, cagrad, atol=1e-12)


def test_raco_defaults_and_the_retired_kappa():
    aggregator = build_aggregator("clipped_cagrad", {}, seed=0)
    assert aggregator.c == 0.4
    with pytest.raises(ValueError, match="kappa for clipped_cagrad is no longer accepted: the rule changed to RACO"):
        build_aggregator("clipped_cagrad", {"kappa": 1.0}, seed=0)


# --- PLC ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau, direction", [(1.0, (-0.4, 0.7)), (6.41, (-0.4, 0.7)), (6.42, (0.3, 0.7))])
def test_plc_docs_case(tau, direction):  # C₁ = 0.12, S₁ = 0.77: the veto fires for τ > 6.4167
    _, d = aggregate(PLC(tau=tau), GEOMETRY, (0.3, 0.7))
    assert torch.allclose(d, tensor(*direction), atol=1e-12)


@pytest.mark.parametrize("tau, direction", [(65, (-0.05, 0.8)), (66, (0.2, 0.8)), (math.inf, (0.2, 0.8))])
def test_plc_docs_case_three_objectives(tau, direction):  # ratio 65.25
    _, d = aggregate(PLC(tau=tau), ((1, 0), (0, 1), (-0.5, 1)), (0.2, 0.3, 0.5))
    assert torch.allclose(d, tensor(*direction), atol=1e-12)


@pytest.mark.parametrize("m, seed", RANDOM_CASES)
@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0])
def test_plc_with_tau_at_most_one_is_linear_scalarisation(m, seed, tau):
    G, preference = random_case(m, seed)
    G[-1] = -2 * G[0] + 0.5 * G[-1]  # one objective that d0 degrades: the veto's test is reached (most cases had none)
    assert (G @ (preference @ G) < 0).any()
    c, _ = aggregate(PLC(tau=tau), G, preference)
    assert torch.equal(c, preference)


@pytest.mark.parametrize("m, seed", RANDOM_CASES)
@pytest.mark.parametrize("tau", [1.5, 2.0, 4.0, math.inf])
def test_plc_matches_vector_form(m, seed, tau):
    G, preference = random_case(m, seed)
    G[-1] = -2 * G[0] + 0.5 * G[-1]  # one objective that d0 degrades
    _, d = aggregate(PLC(tau=tau), G, preference)
    assert np.allclose(d.numpy(), vector_plc(G.numpy(), preference.numpy(), tau), atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_plc_infinite_tau_protects_the_degraded_objective(seed):
    """τ = ∞, m = 2: the objective that d0 degrades is vetoed, and the update no longer degrades it."""
    G, preference = random_case(2, seed)
    G[1] = -1.5 * G[0] + 0.2 * G[1]
    degraded = G @ (preference @ G) < 0
    _, d = aggregate(PLC(tau=math.inf), G, preference)
    assert int(degraded.sum()) == 1 and float(G[degraded] @ d) >= -1e-12


def test_plc_counts_vetoes_and_round_trips():
    aggregator = PLC(tau=6.42)
    aggregate(aggregator, GEOMETRY, (0.3, 0.7))  # the docs case: vetoed
    aggregate(aggregator, GEOMETRY, (0.5, 0.5))  # d0 = (0, 0.5) is orthogonal to g1: nothing degrades
    aggregate(aggregator, ((1, 0), (0, 1)), (0.5, 0.5))  # no conflict
    state = json.loads(json.dumps(aggregator.state_dict()))
    assert state == {"steps": 3, "vetoed_steps": 1} and aggregator.metrics() == {"veto_rate": 1 / 3}
    resumed = PLC(tau=6.42)
    resumed.load_state_dict(state)
    assert resumed.metrics() == aggregator.metrics() and resumed.state_dict() == state
    with pytest.raises(ValueError, match="plc state needs integers"):
        resumed.load_state_dict({"steps": 1, "vetoed_steps": 2})


# --- state and settings -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_state_is_json_and_round_trips(name):
    aggregator = build_aggregator(name, {}, seed=0)
    G, preference = random_case(3, seed=0)
    aggregate(aggregator, G, preference)
    state = aggregator.state_dict()
    assert json.loads(json.dumps(state)) == state
    resumed = build_aggregator(name, {}, seed=1)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert resumed.state_dict() == state  # (metrics are the last step's own, not state)
    assert all(isinstance(value, float) for value in aggregator.metrics().values())
    G, preference = random_case(3, seed=1)  # the next step goes on as if never interrupted (pcgrad: its shuffles)
    assert torch.equal(aggregate(resumed, G, preference)[1], aggregate(aggregator, G, preference)[1])


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_gram_matrix_is_one_clear_error(name, bad):
    """A NaN/inf gradient makes its row of M NaN/inf: every aggregator names itself and the dimension."""
    G, preference = random_case(3, seed=0)
    gram = G @ G.T
    gram[1, :] = gram[:, 1] = bad
    message = rf"{name}: the Gram matrix of the dimension gradients holds NaN/inf \(M\[1, 1\] = {bad}\).*dimension 1 "
    with pytest.raises(ValueError, match=message):
        build_aggregator(name, {}, seed=0).coefficients(gram, preference, torch.ones(3, dtype=torch.float64))
    named = rf"{name}: .*so the gradient of dimension 'harmless' is not finite"
    with pytest.raises(ValueError, match=named):
        aggregator = build_aggregator(name, {}, seed=0, dimension_names=["helpful", "harmless", "concise"])
        aggregator.coefficients(gram, preference, torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("name", ["mgda", "cagrad", "clipped_cagrad", "normalized"])
def test_stateless_aggregators_refuse_state(name):
    with pytest.raises(ValueError, match="keeps no state"):
        build_aggregator(name, {}, seed=0).load_state_dict({"steps": 1})


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("cagrad", {"C": 0.5}, "unknown key 'C' for cagrad; allowed: c, rescale"),
        ("mgda", {"c": 0.5}, "unknown key 'c' for mgda; allowed: normalization"),
        ("plc", {"kappa": 1}, "unknown key 'kappa' for plc; allowed: tau"),
        ("cagrad", {"c": 1.0}, r"aggregator_kwargs.c for cagrad must be a number in \[0, 1\), got 1.0"),
        ("cagrad", {"c": -0.1}, r"aggregator_kwargs.c for cagrad must be a number in \[0, 1\), got -0.1"),
        ("cagrad", {"c": "0.5"}, r"aggregator_kwargs.c for cagrad must be a number in \[0, 1\), got '0.5'"),
        ("cagrad", {"rescale": "2"}, r"aggregator_kwargs.rescale for cagrad must be one of \['none', '1\+c\^2'"),
        ("clipped_cagrad", {"c": 1.5}, r"aggregator_kwargs.c for clipped_cagrad must be a number in \[0, 1\)"),
        ("clipped_cagrad", {"kappa": 1}, "aggregator_kwargs.kappa for clipped_cagrad is no longer accepted"),
        ("clipped_cagrad", {"rescale": "none"}, "unknown key 'rescale' for clipped_cagrad; allowed: c"),
        ("plc", {"tau": -1}, "aggregator_kwargs.tau for plc must be a number ≥ 0"),
        ("plc", {"tau": float("nan")}, "aggregator_kwargs.tau for plc must be a number ≥ 0"),
        ("mgda", {"normalization": "l1"}, r"aggregator_kwargs.normalization for mgda must be one of \['none', 'l2'"),
        ("pcgrad", {"seed": -1}, "aggregator_kwargs.seed for pcgrad must be an integer ≥ 0, got -1"),
        ("normalized", {"normalization": "l1"}, r"normalization for normalized must be one of \['none', 'l2'"),
        ("normalized", {"c": 0.5}, "unknown key 'c' for normalized; allowed: normalization"),
    ],
)
def test_bad_kwargs_are_refused(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_aggregator(name, kwargs, seed=0)


# --- a convex toy: two quadratics ½‖θ − a_i‖², run as gradient descent ----------------------------------------------

TARGETS = tensor((1, 0), (0, 1))  # a_1, a_2; the Pareto set is the segment between them


def descend(aggregator, preference, start=(2.0, 2.0), steps=1500, rate=0.1) -> torch.Tensor:
    theta, preference = tensor(*start), tensor(*preference)
    for _ in range(steps):
        G = theta - TARGETS  # g_i = θ − a_i
        c = aggregator.coefficients(G @ G.T, preference, 0.5 * (G * G).sum(1))
        theta = theta - rate * (c @ G)
    return theta


def on_segment(theta: torch.Tensor) -> bool:
    return math.isclose(float(theta.sum()), 1, abs_tol=1e-3) and -1e-3 <= float(theta[0]) <= 1 + 1e-3


PREFERENCES = [(0.5, 0.5), (0.2, 0.8), (0.9, 0.1)]


@pytest.mark.parametrize("preference", PREFERENCES)
@pytest.mark.parametrize(
    "name, kwargs", [("cagrad", {"c": 0.1}), ("cagrad", {"c": 0.9}), ("clipped_cagrad", {}), ("plc", {"tau": 1})]
)
def test_toy_methods_that_reach_the_scalarised_optimum(name, kwargs, preference):
    # CAGrad with any c < 1 converges to a minimiser of Σ λ_i L_i (Liu et al., Theorem 3.2), here Σ λ_i a_i;
    # at that point g0 = 0, so clipped CAGrad stops there too; PLC with τ ≤ 1 is LS.
    theta = descend(build_aggregator(name, kwargs, seed=0), preference)
    assert torch.allclose(theta, tensor(*preference) @ TARGETS, atol=1e-4)


@pytest.mark.parametrize("preference", PREFERENCES)
def test_toy_mgda_and_pcgrad_stop_on_the_pareto_set(preference):
    # On the segment g1 and g2 are antiparallel: MGDA's min-norm point is 0 and PCGrad projects each to 0,
    # so every point of the segment is a fixed point; from the symmetric start (2, 2) MGDA, which ignores
    # λ, goes straight down the diagonal to (½, ½). PCGrad is LS until ‖θ − ½(a_1 + a_2)‖ < ‖a_1 − a_2‖/2
    # (where g1·g2 < 0), then stops wherever its path meets the segment: at (½, ½) only when λ = (½, ½).
    mgda = descend(MGDA(), preference)
    assert torch.allclose(mgda, tensor(0.5, 0.5), atol=1e-6)
    pcgrad = descend(PCGrad(seed=0), preference)
    assert on_segment(pcgrad)
    if preference == (0.5, 0.5):
        assert torch.allclose(pcgrad, tensor(0.5, 0.5), atol=1e-6)


@pytest.mark.parametrize("preference", [(0.2, 0.8), (0.6, 0.4)])
@pytest.mark.parametrize("tau", [2.0, 4.0])
def test_toy_plc_stops_at_the_edge_of_its_tolerance(preference, tau):
    # On the segment θ = (x, 1 − x) with LS optimum x = λ_1: for x > λ_1, d0 degrades objective 1 and its
    # coalition ratio is S_1/C_1 = λ_2 x / (λ_1 (1 − x)), which tends to 1 at x = λ_1. The veto (ratio < τ)
    # pushes θ toward a_1 and LS pulls it back, so PLC settles where the ratio equals τ:
    # x = τ λ_1 / (λ_2 + τ λ_1) — or, approached from the other side, x = λ_1 / (λ_1 + τ λ_2).
    lam1, lam2 = preference
    theta = descend(PLC(tau=tau), preference, rate=0.01, steps=4000)
    edges = [tau * lam1 / (lam2 + tau * lam1), lam1 / (lam1 + tau * lam2)]
    assert on_segment(theta)
    assert min(abs(float(theta[0]) - edge) for edge in edges) < 0.01
