"""GradientBuffers: one gradient buffer per unit, combined as Σ_u c_u g_u into `.grad`, then clipped."""

import pytest
import torch
from panacea.training.update import GradientBuffers
from torch import nn


def setup(units=3):
    """A (3 × 4) weight and a (3,) bias in float64, a fixed input, and buffers for `units` units."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 3).double()
    parameters = list(layer.parameters())
    inputs = torch.randn(5, 4, dtype=torch.float64)
    return layer, parameters, inputs, GradientBuffers(parameters, units=units)


def unit_loss(layer, inputs, unit):
    """A different smooth loss per unit, so that every unit has its own gradient."""
    return ((layer(inputs) - unit) ** 2).mean() * (unit + 1)


def direct_gradient(layer, parameters, losses):
    """Flat ∇ of a scalar built by `losses()` with plain autograd, independent of the buffers."""
    grads = torch.autograd.grad(losses(), parameters)
    return torch.cat([grad.reshape(-1) for grad in grads])


def test_backward_inside_accumulating_lands_in_that_units_buffer_only():
    layer, parameters, inputs, buffers = setup()
    with buffers.accumulating(1):
        unit_loss(layer, inputs, 1).backward()
    expected = direct_gradient(layer, parameters, lambda: unit_loss(layer, inputs, 1))
    torch.testing.assert_close(buffers.flat[1], expected)
    assert buffers.flat[0].abs().sum() == 0 and buffers.flat[2].abs().sum() == 0
    assert buffers.flat[-1].abs().sum() == 0  # the update row is untouched


def test_grad_is_cleared_after_the_accumulating_block():
    layer, parameters, inputs, buffers = setup()
    with buffers.accumulating(0):
        unit_loss(layer, inputs, 0).backward()
    assert all(parameter.grad is None for parameter in parameters)


def test_two_backwards_in_one_unit_accumulate():
    layer, parameters, inputs, buffers = setup()
    with buffers.accumulating(2):
        unit_loss(layer, inputs[:2], 2).backward()
    with buffers.accumulating(2):
        unit_loss(layer, inputs[2:], 2).backward()
    expected = direct_gradient(
        layer, parameters, lambda: unit_loss(layer, inputs[:2], 2) + unit_loss(layer, inputs[2:], 2)
    )
    torch.testing.assert_close(buffers.flat[2], expected)


def test_zero_clears_every_buffer():
    layer, _, inputs, buffers = setup()
    fill_every_unit(layer, inputs, buffers)  # every unit's row and the update row hold something first
    buffers.combine(torch.tensor([0.5, -0.25, 2.0], dtype=torch.float64), max_norm=None)
    assert all(row.abs().sum() > 0 for row in buffers.flat)
    buffers.zero()
    assert buffers.flat.abs().sum() == 0


def fill_every_unit(layer, inputs, buffers, units=3):
    for unit in range(units):
        with buffers.accumulating(unit):
            unit_loss(layer, inputs, unit).backward()


def test_combine_writes_the_gradient_of_the_weighted_sum_into_grad():
    layer, parameters, inputs, buffers = setup()
    fill_every_unit(layer, inputs, buffers)
    coefficients = torch.tensor([0.5, -0.25, 2.0])
    norm = buffers.combine(coefficients, max_norm=None)
    expected = direct_gradient(
        layer, parameters, lambda: sum(float(c) * unit_loss(layer, inputs, u) for u, c in enumerate(coefficients))
    )
    grad = torch.cat([parameter.grad.reshape(-1) for parameter in parameters])
    torch.testing.assert_close(grad, expected)
    assert norm == pytest.approx(float(expected.norm()), rel=1e-12)


def test_combine_gives_each_parameter_a_grad_of_its_own_shape():
    layer, parameters, inputs, buffers = setup()
    fill_every_unit(layer, inputs, buffers)
    buffers.combine(torch.ones(3), max_norm=None)
    assert [parameter.grad.shape for parameter in parameters] == [parameter.shape for parameter in parameters]


def test_combine_clips_the_update_to_max_norm_and_returns_the_norm_before_clipping():
    layer, parameters, inputs, buffers = setup()
    fill_every_unit(layer, inputs, buffers)
    coefficients = torch.tensor([0.5, -0.25, 2.0])
    expected = direct_gradient(
        layer, parameters, lambda: sum(float(c) * unit_loss(layer, inputs, u) for u, c in enumerate(coefficients))
    )
    max_norm = 0.1 * float(expected.norm())
    norm = buffers.combine(coefficients, max_norm=max_norm)
    grad = torch.cat([parameter.grad.reshape(-1) for parameter in parameters])
    assert norm == pytest.approx(float(expected.norm()), rel=1e-12)
    assert float(grad.norm()) == pytest.approx(max_norm, rel=1e-5)
    torch.testing.assert_close(grad / grad.norm(), expected / expected.norm())  # the direction is kept


def test_combine_leaves_an_update_below_max_norm_unchanged():
    layer, parameters, inputs, buffers = setup()
    fill_every_unit(layer, inputs, buffers)
    norm = buffers.combine(torch.tensor([1.0, 0.0, 0.0]), max_norm=1e6)
    grad = torch.cat([parameter.grad.reshape(-1) for parameter in parameters])
    torch.testing.assert_close(grad, buffers.flat[0])
    assert norm == pytest.approx(float(buffers.flat[0].norm()), rel=1e-12)


def test_combine_adds_the_regulariser_gradient_to_the_update_only_then_clips():
    """The orthogonality penalty joins the combined update once, never a unit's buffer (which aggregators weigh)."""
    layer, parameters, inputs, buffers = setup()
    fill_every_unit(layer, inputs, buffers)
    units = buffers.flat[:-1].clone()
    coefficients = torch.tensor([0.5, -0.25, 2.0])

    def regulariser():
        return 0.3 * sum(parameter.square().sum() for parameter in parameters)

    expected = direct_gradient(
        layer,
        parameters,
        lambda: sum(float(c) * unit_loss(layer, inputs, u) for u, c in enumerate(coefficients)) + regulariser(),
    )
    max_norm = 0.5 * float(expected.norm())
    norm = buffers.combine(coefficients, max_norm=max_norm, regulariser=regulariser())
    grad = torch.cat([parameter.grad.reshape(-1) for parameter in parameters])
    assert norm == pytest.approx(float(expected.norm()), rel=1e-12)
    torch.testing.assert_close(grad, expected * max_norm / (norm + 1e-6))
    torch.testing.assert_close(buffers.flat[:-1], units, rtol=0, atol=0)


def test_check_finite_names_every_non_finite_loss_not_only_the_first():
    from types import SimpleNamespace

    from panacea.training.update import TrainingError, check_finite

    config = SimpleNamespace(dimension_names=["helpful", "harmless"])
    losses = torch.tensor([[0.5, float("nan")], [float("inf"), float("nan")]])  # (G=2 λ-groups, m=2)
    with pytest.raises(TrainingError) as failure:
        check_finite(losses, 3, config)
    message = str(failure.value)
    assert message.startswith("step 3: the 'harmless' loss is nan (λ-group 0), the 'helpful' loss is inf (λ-group 1)")
    assert "the 'harmless' loss is nan (λ-group 1)" in message
    check_finite(torch.zeros(2, 2), 3, config)  # finite: no error
    pama = torch.full((1, 2), float("nan"))  # PAMA's one combined loss in every column: named once per group
    with pytest.raises(TrainingError, match=r"^step 1: the 'PAMA' loss is nan \(λ-group 0\); stopped"):
        check_finite(pama, 1, config, names=["PAMA", "PAMA"])
