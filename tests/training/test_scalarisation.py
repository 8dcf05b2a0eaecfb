"""LS and Tchebycheff (docs/algorithms.md, "Scalarisation") and the trainer's Dirichlet draws of λ."""

import numpy as np
import pytest
import torch
from panacea.training.aggregators import CAGrad, PCGrad
from panacea.training.config import DimensionConfig, TrainConfig
from panacea.training.draws import StepPreferences, draw_preferences
from panacea.training.scalarisation import GradientAggregation, LinearScalarization, Tchebycheff

from panacea.data import PairSource

DOCS_LOSSES = (0.6, 0.2)
DOCS_PREFERENCE = torch.tensor([[0.5, 0.5]], dtype=torch.float64)  # (G = 1, m = 2)


def scalarised(scalarizer, per_sample_losses, rows):
    """The trainer's arithmetic: unit loss = Σ_b w_b ℓ_b / batch, total = Σ_u c_u · unit loss_u (one λ-group).

    per_sample_losses: one (batch,) tensor per dimension; rows: one (batch, m) tensor of λs per dimension.
    Returns (the total as a tensor that autograd can differentiate, the scalariser's reported value).
    """
    units = []
    for i, (losses, preferences) in enumerate(zip(per_sample_losses, rows, strict=True)):
        weights = scalarizer.sample_weights(preferences, i).to(losses)
        units.append((weights * losses).sum() / len(losses))
    unit_losses = torch.stack(units).unsqueeze(0)  # (1, m)
    group_preference = torch.stack([preferences.mean(0) for preferences in rows]).mean(0, keepdim=True)
    coefficients, value = scalarizer.coefficients(unit_losses.detach(), group_preference)
    return (coefficients * unit_losses).sum(), value


def docs_losses():
    return torch.tensor(DOCS_LOSSES, dtype=torch.float64, requires_grad=True)


# --- linear scalarisation -----------------------------------------------------------------------------------


def test_ls_value_is_the_docs_value():
    losses = docs_losses()
    _, value = scalarised(LinearScalarization(), [losses[:1], losses[1:]], [DOCS_PREFERENCE, DOCS_PREFERENCE])
    assert value == pytest.approx(0.4, abs=1e-12)


def test_ls_gradient_wrt_the_losses_is_the_preference():
    losses = docs_losses()
    total, _ = scalarised(LinearScalarization(), [losses[:1], losses[1:]], [DOCS_PREFERENCE, DOCS_PREFERENCE])
    total.backward()
    torch.testing.assert_close(losses.grad, torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_ls_sample_weights_are_each_samples_own_weight_for_the_dimension():
    rows = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    torch.testing.assert_close(LinearScalarization().sample_weights(rows, 1), torch.tensor([0.8, 0.4]))


def test_ls_per_sample_value_is_the_docs_value():
    dimension_1 = torch.tensor([0.7, 0.5], dtype=torch.float64)
    dimension_2 = torch.tensor([0.3, 0.9], dtype=torch.float64)
    rows_1 = torch.tensor([[0.2, 0.8], [0.6, 0.4]], dtype=torch.float64)
    rows_2 = torch.tensor([[0.5, 0.5], [0.1, 0.9]], dtype=torch.float64)
    total, value = scalarised(LinearScalarization(), [dimension_1, dimension_2], [rows_1, rows_2])
    assert value == pytest.approx(0.70, abs=1e-12)
    assert total.item() == pytest.approx(0.70, abs=1e-12)


def test_ls_per_sample_gradient_is_own_weight_over_batch_size():
    dimension_1 = torch.tensor([0.7, 0.5], dtype=torch.float64, requires_grad=True)
    dimension_2 = torch.tensor([0.3, 0.9], dtype=torch.float64, requires_grad=True)
    rows_1 = torch.tensor([[0.2, 0.8], [0.6, 0.4]], dtype=torch.float64)
    rows_2 = torch.tensor([[0.5, 0.5], [0.1, 0.9]], dtype=torch.float64)
    total, _ = scalarised(LinearScalarization(), [dimension_1, dimension_2], [rows_1, rows_2])
    total.backward()
    torch.testing.assert_close(dimension_1.grad, torch.tensor([0.1, 0.3], dtype=torch.float64))  # λ_{b,1} / 2
    torch.testing.assert_close(dimension_2.grad, torch.tensor([0.25, 0.45], dtype=torch.float64))  # λ_{b,2} / 2


def test_ls_averages_groups():
    unit_losses = torch.tensor([[0.3, 0.1], [0.2, 0.4]])
    coefficients, value = LinearScalarization().coefficients(unit_losses, torch.full((2, 2), 0.5))
    torch.testing.assert_close(coefficients, torch.full((2, 2), 0.5))
    assert value == pytest.approx(0.5, abs=1e-7)


def test_ls_refuses_state():
    with pytest.raises(ValueError, match="running_min"):
        LinearScalarization().load_state_dict({"running_min": [0.1]})


# --- Tchebycheff --------------------------------------------------------------------------------------------


def test_tche_value_and_gradient_at_ideal_zero_are_the_docs_values():
    losses = docs_losses()
    total, value = scalarised(Tchebycheff([0.0, 0.0]), [losses[:1], losses[1:]], [DOCS_PREFERENCE, DOCS_PREFERENCE])
    total.backward()
    assert value == pytest.approx(0.30, abs=1e-12)
    torch.testing.assert_close(losses.grad, torch.tensor([0.5, 0.0], dtype=torch.float64))


def test_tche_value_and_gradient_at_ideal_half_zero_are_the_docs_values():
    losses = docs_losses()
    total, value = scalarised(Tchebycheff([0.5, 0.0]), [losses[:1], losses[1:]], [DOCS_PREFERENCE, DOCS_PREFERENCE])
    total.backward()
    assert value == pytest.approx(0.10, abs=1e-12)
    torch.testing.assert_close(losses.grad, torch.tensor([0.0, 0.5], dtype=torch.float64))


def test_tche_sample_weights_are_ones():
    rows = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    torch.testing.assert_close(Tchebycheff([0.0, 0.0]).sample_weights(rows, 0), torch.ones(2))


def test_tche_ties_split_the_gradient_equally():
    ln2 = float(np.log(2))
    unit_losses = torch.tensor([[ln2, ln2]], dtype=torch.float64)  # every DPO loss at step 0
    coefficients, value = Tchebycheff([0.0, 0.0]).coefficients(unit_losses, DOCS_PREFERENCE)
    torch.testing.assert_close(coefficients, torch.tensor([[0.25, 0.25]], dtype=torch.float64))
    assert value == pytest.approx(0.5 * ln2, abs=1e-12)


def test_tche_tie_averages_the_tied_terms_gradients():
    # λ = (0.6, 0.4), L = (0.5, 0.75): both terms are 0.3; the gradient is (λ_1 ∇L_1 + λ_2 ∇L_2) / 2.
    unit_losses = torch.tensor([[0.5, 0.75]], dtype=torch.float64)
    preference = torch.tensor([[0.6, 0.4]], dtype=torch.float64)
    coefficients, value = Tchebycheff([0.0, 0.0]).coefficients(unit_losses, preference)
    torch.testing.assert_close(coefficients, torch.tensor([[0.3, 0.2]], dtype=torch.float64))
    assert value == pytest.approx(0.3, abs=1e-12)


def test_tche_near_tie_beyond_tolerance_is_not_a_tie():
    unit_losses = torch.tensor([[0.6, 0.59]], dtype=torch.float64)
    coefficients, _ = Tchebycheff([0.0, 0.0]).coefficients(unit_losses, DOCS_PREFERENCE)
    torch.testing.assert_close(coefficients, torch.tensor([[0.5, 0.0]], dtype=torch.float64))


def test_tche_groups_average_the_maximum_of_each_group():
    unit_losses = torch.tensor([[0.6, 0.2], [0.1, 0.3]], dtype=torch.float64)
    preferences = torch.tensor([[0.5, 0.5], [0.2, 0.8]], dtype=torch.float64)
    # terms: (0.30, 0.10) and (0.02, 0.24) → maxima 0.30 and 0.24 → (0.30 + 0.24) / 2
    coefficients, value = Tchebycheff([0.0, 0.0]).coefficients(unit_losses, preferences)
    assert value == pytest.approx(0.27, abs=1e-12)
    torch.testing.assert_close(coefficients, torch.tensor([[0.25, 0.0], [0.0, 0.4]], dtype=torch.float64))


# --- Tchebycheff's running_min ideal point ------------------------------------------------------------------


def test_running_min_ideal_is_the_lowest_loss_so_far_minus_epsilon():
    tche = Tchebycheff(["running_min", 0.0], epsilon=1e-3)
    first = tche.current_ideal(torch.tensor([[0.8, 0.3]], dtype=torch.float64))
    second = tche.current_ideal(torch.tensor([[0.9, 0.3]], dtype=torch.float64))
    third = tche.current_ideal(torch.tensor([[0.6, 0.3], [0.5, 0.1]], dtype=torch.float64))  # min over groups
    torch.testing.assert_close(first, torch.tensor([0.799, 0.0], dtype=torch.float64))
    torch.testing.assert_close(second, torch.tensor([0.799, 0.0], dtype=torch.float64))
    torch.testing.assert_close(third, torch.tensor([0.499, 0.0], dtype=torch.float64))


def test_running_min_enters_the_tchebycheff_terms():
    tche = Tchebycheff(["running_min", "running_min"], epsilon=1e-3)
    tche.coefficients(torch.tensor([[0.4, 0.1]], dtype=torch.float64), DOCS_PREFERENCE)  # ẑ = (0.399, 0.099)
    coefficients, value = tche.coefficients(torch.tensor([[0.6, 0.2]], dtype=torch.float64), DOCS_PREFERENCE)
    # terms 0.5 · (0.6 − 0.399) = 0.1005 and 0.5 · (0.2 − 0.099) = 0.0505
    assert value == pytest.approx(0.1005, abs=1e-12)
    torch.testing.assert_close(coefficients, torch.tensor([[0.5, 0.0]], dtype=torch.float64))


def test_running_min_state_round_trips():
    tche = Tchebycheff(["running_min", 0.0], epsilon=1e-3)
    tche.current_ideal(torch.tensor([[0.8, 0.3]], dtype=torch.float64))
    restored = Tchebycheff(["running_min", 0.0], epsilon=1e-3)
    restored.load_state_dict(tche.state_dict())
    assert restored.state_dict() == {"running_min": [pytest.approx(0.8), None]}
    next_losses = torch.tensor([[0.9, 0.3]], dtype=torch.float64)
    torch.testing.assert_close(restored.current_ideal(next_losses), tche.current_ideal(next_losses))


@pytest.mark.parametrize(
    "state",
    [{}, {"running_min": [0.1]}, {"running_min": "0.1"}, {"running_min": [float("nan"), None]}],
    ids=["missing", "wrong-length", "not-a-list", "not-finite"],
)
def test_bad_running_min_state_raises(state):
    with pytest.raises(ValueError, match="running_min"):
        Tchebycheff(["running_min", 0.0]).load_state_dict(state)


# --- Dirichlet draws of λ (draws.draw_preferences) ----------------------------------------------------------


def train_config(m=2, **overrides):
    dimensions = [DimensionConfig(name=f"d{i}", train=[PairSource("unused.jsonl")]) for i in range(m)]
    return TrainConfig(dimensions=dimensions, **{"batch_size": 4, "micro_batch_size": 2, **overrides})


def first_weights(config, steps=4000):
    return np.array([float(draw_preferences(config, step).groups[0, 0]) for step in range(steps)])


def test_dirichlet_mean_is_one_over_m():
    draws = torch.cat([draw_preferences(train_config(m=3), step).groups for step in range(3000)])
    torch.testing.assert_close(draws.mean(0), torch.full((3,), 1 / 3), rtol=0, atol=0.015)


def test_dirichlet_1_for_two_dimensions_is_uniform():
    weights = first_weights(train_config(m=2))
    counts, _ = np.histogram(weights, bins=10, range=(0, 1))
    assert counts.min() > 0.75 * len(weights) / 10 and counts.max() < 1.25 * len(weights) / 10
    assert weights.var() == pytest.approx(1 / 12, abs=0.005)


def test_dirichlet_alpha_10_concentrates_near_the_centre():
    weights = first_weights(train_config(m=2, dirichlet_alpha=10.0))
    assert weights.mean() == pytest.approx(0.5, abs=0.01)
    assert weights.var() == pytest.approx(1 / 84, abs=0.002)  # Beta(10, 10): 1 / (4 (2α + 1))


def test_same_seed_and_step_give_the_same_preference():
    torch.testing.assert_close(draw_preferences(train_config(), 7).groups, draw_preferences(train_config(), 7).groups)


def test_different_steps_give_different_preferences():
    assert not torch.equal(draw_preferences(train_config(), 7).groups, draw_preferences(train_config(), 8).groups)


def test_different_seeds_give_different_preferences():
    first = draw_preferences(train_config(seed=0), 7).groups
    assert not torch.equal(first, draw_preferences(train_config(seed=1), 7).groups)


def test_per_sample_draws_one_preference_per_pair_of_every_dimension():
    preferences = draw_preferences(train_config(m=3, preference_sampling="per_sample"), 0)
    assert preferences.per_sample.shape == (3, 4, 3)
    assert preferences.groups.shape == (1, 3)
    torch.testing.assert_close(preferences.groups[0], preferences.per_sample.mean(dim=(0, 1)))


def test_groups_sampling_draws_one_preference_per_group():
    config = train_config(m=3, preference_sampling="groups", preference_groups=2)
    preferences = draw_preferences(config, 0)
    assert preferences.groups.shape == (2, 3)
    assert preferences.per_sample is None


@pytest.mark.parametrize("sampling", ["per_step", "per_sample", "groups"])
def test_drawn_preferences_lie_on_the_simplex(sampling):
    groups = 2 if sampling == "groups" else 1
    config = train_config(m=3, preference_sampling=sampling, preference_groups=groups)
    preferences = draw_preferences(config, 3)
    rows = preferences.per_sample.reshape(-1, 3) if preferences.per_sample is not None else preferences.groups
    assert (rows >= 0).all()
    torch.testing.assert_close(rows.sum(-1), torch.ones(len(rows)), rtol=0, atol=1e-6)


def test_step_preferences_rows_follow_the_group_of_each_position():
    groups = torch.tensor([[0.1, 0.9], [0.7, 0.3]])
    rows = StepPreferences(groups=groups).rows(dimension=1, positions=torch.tensor([2, 3]), group_size=2)
    torch.testing.assert_close(rows, groups[[1, 1]])


def test_step_preferences_rows_are_the_per_sample_rows_of_the_dimension():
    per_sample = torch.rand(2, 4, 2)
    preferences = StepPreferences(groups=per_sample.mean(dim=(0, 1)).unsqueeze(0), per_sample=per_sample)
    rows = preferences.rows(dimension=1, positions=torch.tensor([2, 3]), group_size=4)
    torch.testing.assert_close(rows, per_sample[1, 2:4])


# --- a gradient aggregator in the scalariser seam: what a step logs ------------------------------------------------


def gram_groups(*gradients):
    """(G, m, m) Gram matrices of one (m, P) gradient matrix per λ-group."""
    matrices = [torch.tensor(g, dtype=torch.float64) for g in gradients]
    return torch.stack([g @ g.T for g in matrices])


def test_aggregator_metrics_of_a_step_are_the_mean_over_its_groups():
    """CAGrad's ρ and solver numbers describe one call; a step with two λ-groups logs their mean (it logged the last
    group's alone)."""
    grams = gram_groups(((1, 0), (-1, 1)), ((3, 1), (0, 2)))
    preferences = torch.tensor([[0.5, 0.5], [0.2, 0.8]], dtype=torch.float64)
    losses = torch.ones(2, 2, dtype=torch.float64)
    per_group = []
    for g in range(2):
        alone = CAGrad(c=0.5)
        alone.coefficients(grams[g], preferences[g], losses[g])
        per_group.append(alone.metrics())
    assert per_group[0]["rho"] != per_group[1]["rho"]
    step = GradientAggregation(CAGrad(c=0.5))
    step.coefficients(losses, preferences, grams)
    expected = {f"aggregator/{key}": (per_group[0][key] + per_group[1][key]) / 2 for key in per_group[0]}
    assert step.metrics() == pytest.approx(expected, rel=1e-12)


def test_a_running_rate_is_logged_as_it_stands_after_the_steps_last_group():
    """PCGrad's conflict rate counts every call so far: a conflicting group then an orthogonal one is 1 of 2 calls
    (0.5), not the mean of the rates after each call (0.75)."""
    grams = gram_groups(((1, 0), (-1, 1)), ((1, 0), (0, 1)))
    preferences = torch.full((2, 2), 0.5, dtype=torch.float64)
    step = GradientAggregation(PCGrad())
    assert step.metrics() == {"aggregator/conflict_rate": 0.0}  # before the first step
    step.coefficients(torch.ones(2, 2, dtype=torch.float64), preferences, grams)
    assert step.metrics() == {"aggregator/conflict_rate": 0.5}
