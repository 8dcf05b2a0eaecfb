"""Gradient aggregators in coefficient form (docs/aggregators.md; test cases from docs/algorithms.md).

Each method is checked three ways: the documented test cases, a direct implementation on the gradient
vectors written here (numpy, no Gram matrix), and an optimality condition (MGDA's KKT conditions,
CAGrad's dual against a grid and its primal against random points of the ball).
"""

import json
import math

import numpy as np
import pytest
import torch
from panacea.training.aggregators import AGGREGATORS, MGDA, PLC, CAGrad, PCGrad, build_aggregator
from panacea.training.aggregators._simplex import cagrad_objective, min_norm_weights, project_to_simplex

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


def vector_cagrad(G: np.ndarray, p: np.ndarray, c: float, kappa: float | None = None) -> np.ndarray:
    """CAGrad's d = g0 + √φ g_w / ‖g_w‖; with kappa, the clipped form Σ (p_i + min(ρ w_i, κ p_i)) g_i."""
    w, root_phi = vector_cagrad_weights(G, p, c)
    g_w = w @ G
    if kappa is None:
        return p @ G + root_phi * g_w / np.linalg.norm(g_w)
    return (p + np.minimum(root_phi / np.linalg.norm(g_w) * w, kappa * p)) @ G


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


@pytest.mark.parametrize("seed", range(5))
def test_simplex_projection_matches_bisection(seed):
    v = torch.randn(6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    assert np.allclose(project_to_simplex(v).numpy(), simplex_projection(v.numpy()), atol=1e-12)


def test_registry_and_build():
    assert sorted(AGGREGATORS) == ["cagrad", "clipped_cagrad", "mgda", "pcgrad", "plc"]
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
        assert torch.allclose(c, tensor(*weights), atol=1e-9)
    # The m = 3 d = 0 case runs the reference solver, which stops when ‖Δw‖₁ < 1e-5.
    assert torch.allclose(d, tensor(*direction), atol=1e-5)


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
    w, iterations = min_norm_weights(G @ G.T)
    d = w @ G
    assert w.min() >= 0 and math.isclose(float(w.sum()), 1, abs_tol=1e-12)
    assert iterations <= 250
    slack = G @ d - d @ d
    tolerance = 1e-4 * float(G.norm(dim=1).max() ** 2)
    assert float(slack.min()) >= -tolerance
    assert float(slack[w > 1e-3].abs().max()) <= tolerance


def test_mgda_zero_gradient_gives_zero_direction():
    for normalization in ("none", "l2"):
        _, d = aggregate(MGDA(normalization=normalization), ((1, 0), (0, 0), (-1, 1)), (1 / 3, 1 / 3, 1 / 3))
        assert torch.equal(d, tensor(0.0, 0.0))


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
    kappa = 1.0 if name == "clipped_cagrad" else None
    assert np.allclose(d.numpy(), vector_cagrad(G.numpy(), preference.numpy(), 0.5, kappa), atol=1e-6)


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
    solved = cagrad_objective(gram, preference, phi, cagrad_weights_from(aggregator, c, preference))
    grid = simplex_grid(m, 20000 if m == 2 else 300)
    values = grid @ gram @ preference + math.sqrt(phi) * ((grid @ gram) * grid).sum(1).clamp(min=0).sqrt()
    assert solved <= float(values.min()) + 1e-12


# --- clipped CAGrad -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preference, clipped, cagrad",
    [
        ((0.5, 0.5), (0.25, 0.5), (0.25, 0.5)),  # no clip
        ((0.8, 0.2), (0.4, 0.4), (0.376393, 0.423607)),  # α = (0, 0.2)
        ((1.0, 0.0), (1.0, 0.0), (0.646447, 0.353553)),  # p_2 = 0 keeps g2 out
    ],
)
def test_clipped_cagrad_docs_cases(preference, clipped, cagrad):
    _, d = aggregate(build_aggregator("clipped_cagrad", {}, seed=0), GEOMETRY, preference)
    assert torch.allclose(d, tensor(*clipped), atol=1e-6)
    _, d = aggregate(CAGrad(), GEOMETRY, preference)
    assert torch.allclose(d, tensor(*cagrad), atol=1e-6)


def test_clipped_cagrad_keeps_weights_in_band():
    G, preference = random_case(4, seed=2)
    kappa = 0.3
    c, _ = aggregate(build_aggregator("clipped_cagrad", {"kappa": kappa}, seed=0), G, preference)
    assert bool((c >= preference - 1e-15).all()) and bool((c <= (1 + kappa) * preference + 1e-15).all())


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
    build_aggregator(name, {}, seed=1).load_state_dict(json.loads(json.dumps(state)))
    assert all(isinstance(value, float) for value in aggregator.metrics().values())


@pytest.mark.parametrize("name", ["mgda", "cagrad", "clipped_cagrad"])
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
        ("clipped_cagrad", {"kappa": -1}, "aggregator_kwargs.kappa for clipped_cagrad must be a finite number ≥ 0"),
        ("plc", {"tau": -1}, "aggregator_kwargs.tau for plc must be a number ≥ 0"),
        ("plc", {"tau": float("nan")}, "aggregator_kwargs.tau for plc must be a number ≥ 0"),
        ("mgda", {"normalization": "l1"}, r"aggregator_kwargs.normalization for mgda must be one of \['none', 'l2'"),
        ("pcgrad", {"seed": -1}, "aggregator_kwargs.seed for pcgrad must be an integer ≥ 0, got -1"),
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
