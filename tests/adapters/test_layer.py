"""One PanaceaLinear against a dense reference W(λ) = W0 + scaling · B diag([σ, s·λ]) A."""

import pytest
import torch
from panacea.adapters import PanaceaLinear, PreferenceState
from peft import LoraConfig
from peft.tuners.lora import Linear as LoraLinear
from torch import nn
from transformers.pytorch_utils import Conv1D

from panacea import PanaceaConfig

IN, OUT = 12, 7


def make_layer(base=None, dtype=torch.float64, **config):
    torch.manual_seed(0)
    base = base if base is not None else nn.Linear(IN, OUT, bias=True, dtype=dtype)
    config = PanaceaConfig(**{"svd_rank": 3, "num_preferences": 2, "alpha": 10.0, **config})
    state = PreferenceState()
    layer = PanaceaLinear(base, config, state)
    with torch.no_grad():
        for parameter in (layer.lora_A, layer.lora_B, layer.singular_values):
            parameter.normal_()
        layer.preference_scale.fill_(1.7)
    return layer, state


def dense_weight(layer, preference):
    """W0 + scaling · B diag(d) A, computed from scratch as (out, in)."""
    base = layer.base_layer.weight
    base = base.T if isinstance(layer.base_layer, Conv1D) else base
    d = torch.cat([layer.singular_values, layer.preference_scale * preference])
    return base + layer.scaling * layer.lora_B @ torch.diag(d) @ layer.lora_A


def test_forward_matches_dense_reference():
    layer, state = make_layer()
    preference = torch.tensor([0.3, 0.7], dtype=torch.float64)
    state.preference = preference
    x = torch.randn(4, 5, IN, dtype=torch.float64)
    expected = x @ dense_weight(layer, preference).T + layer.base_layer.bias
    assert layer.scaling == 2.0
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)


def test_per_sample_preference_matches_dense_reference_row_by_row():
    layer, state = make_layer()
    preferences = torch.tensor([[1.0, 0.0], [0.2, 0.8], [0.5, 0.5]], dtype=torch.float64)
    state.preference = preferences
    x = torch.randn(3, 4, IN, dtype=torch.float64)
    output = layer(x)
    for row in range(3):
        expected = x[row] @ dense_weight(layer, preferences[row]).T + layer.base_layer.bias
        torch.testing.assert_close(output[row], expected, rtol=0, atol=1e-12)


def test_preference_rank_gives_each_weight_r_directions_of_its_own():
    layer, state = make_layer(preference_rank=3)
    assert layer.lora_A.shape == (3 + 2 * 3, IN) and layer.lora_B.shape == (OUT, 9)
    preferences = torch.tensor([[0.3, 0.7], [1.0, 0.0]], dtype=torch.float64)
    state.preference = preferences
    x = torch.randn(2, 4, IN, dtype=torch.float64)
    output = layer(x)
    for row, preference in enumerate(preferences):  # d = [σ, s λ1, s λ1, s λ1, s λ2, s λ2, s λ2], written out
        lam1, lam2 = preference.tolist()
        weights = torch.tensor([lam1] * 3 + [lam2] * 3, dtype=torch.float64)
        d = torch.cat([layer.singular_values, layer.preference_scale * weights])
        weight = layer.base_layer.weight + layer.scaling * layer.lora_B @ torch.diag(d) @ layer.lora_A
        torch.testing.assert_close(output[row], x[row] @ weight.T + layer.base_layer.bias, rtol=0, atol=1e-12)
    state.preference = preferences[1]  # at the vertex, dimension 2's three directions contribute nothing
    before = layer(x)
    with torch.no_grad():
        layer.lora_B[:, 6:].normal_()
    torch.testing.assert_close(layer(x), before, rtol=0, atol=0)


def test_conv1d_layer_matches_dense_reference():
    torch.manual_seed(0)
    base = Conv1D(OUT, IN).double()  # weight stored as (in, out)
    nn.init.normal_(base.weight)
    layer, state = make_layer(base)
    preference = torch.tensor([0.6, 0.4], dtype=torch.float64)
    state.preference = preference
    x = torch.randn(2, 3, IN, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ dense_weight(layer, preference).T + base.bias, rtol=0, atol=1e-12)


@pytest.mark.parametrize("base", [nn.Linear(IN, OUT, dtype=torch.float64), Conv1D(OUT, IN).double()])
def test_merge_then_unmerge(base):
    layer, _ = make_layer(base)
    preference = torch.tensor([0.9, 0.1], dtype=torch.float64)
    original = base.weight.clone()
    layer.merge(preference)
    merged = base.weight.T if isinstance(base, Conv1D) else base.weight
    torch.testing.assert_close(merged, dense_weight_from(original, layer, preference, base), rtol=0, atol=1e-12)
    layer.unmerge()
    torch.testing.assert_close(base.weight, original, rtol=0, atol=1e-12)


def test_unmerge_subtracts_what_merge_added_even_after_the_adapter_changed():
    layer, _ = make_layer()
    original = layer.base_layer.weight.clone()
    layer.merge(torch.tensor([0.3, 0.7], dtype=torch.float64))
    with torch.no_grad():
        layer.lora_B.mul_(3.0)  # e.g. new weights loaded, or an optimizer step, while merged
        layer.preference_scale.add_(1.0)
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, original, rtol=0, atol=1e-12)
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()


def test_dropout_applies_to_the_adapter_input_only():
    layer, state = make_layer(dropout=0.5)
    state.preference = torch.tensor([0.4, 0.6], dtype=torch.float64)
    layer.train()
    x = torch.randn(6, IN, dtype=torch.float64)
    torch.manual_seed(123)
    output = layer(x)
    torch.manual_seed(123)
    dropped = torch.nn.functional.dropout(x, 0.5, training=True)  # the same mask
    d = torch.cat([layer.singular_values, layer.preference_scale * state.preference]) * layer.scaling
    expected = layer.base_layer(x) + (dropped @ layer.lora_A.T) @ (layer.lora_B * d).T
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-12)


def dense_weight_from(original, layer, preference, base):
    weight = original.T if isinstance(base, Conv1D) else original
    d = torch.cat([layer.singular_values, layer.preference_scale * preference])
    return weight + layer.scaling * layer.lora_B @ torch.diag(d) @ layer.lora_A


def test_bypass_when_disabled_or_merged_returns_base_output():
    layer, state = make_layer()
    state.preference = torch.tensor([0.5, 0.5], dtype=torch.float64)
    x = torch.randn(2, IN, dtype=torch.float64)
    state.disabled = True
    assert torch.equal(layer(x), layer.base_layer(x))
    state.disabled, state.merged_preference = False, state.preference
    assert torch.equal(layer(x), layer.base_layer(x))


def test_missing_preference_and_batch_mismatch_raise():
    layer, state = make_layer()
    x = torch.randn(2, 3, IN, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="No preference is set"):
        layer(x)
    state.preference = torch.tensor([[0.5, 0.5]] * 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="3 rows but the input batch has 2"):
        layer(x)


def test_dropout_acts_on_the_adapter_input_in_training_only():
    layer, state = make_layer(dropout=0.5)
    state.preference = torch.tensor([0.5, 0.5], dtype=torch.float64)
    x = torch.randn(64, IN, dtype=torch.float64)
    layer.eval()
    expected = x @ dense_weight(layer, state.preference).T + layer.base_layer.bias
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)
    layer.train()
    assert not torch.allclose(layer(x), expected)


def test_gaussian_init_starts_at_the_base_layer():
    torch.manual_seed(0)
    base = nn.Linear(256, 256)
    layer = PanaceaLinear(base, PanaceaConfig(svd_rank=8, num_preferences=2, init_std=0.05), PreferenceState())
    assert torch.equal(layer.singular_values, torch.zeros(8))
    assert layer.preference_scale.item() == 0.0
    assert abs(layer.lora_A.std().item() - 0.05) < 0.005 and abs(layer.lora_B.std().item() - 0.05) < 0.005
    layer.preference_state.preference = torch.tensor([0.5, 0.5])
    x = torch.randn(3, 256)
    assert torch.equal(layer(x), base(x))  # ΔW = 0 at step 0


def test_lora_init_is_peft_lora_init_and_starts_at_the_base_layer():
    config = PanaceaConfig(svd_rank=3, num_preferences=2, init="lora")
    reference = LoraLinear(nn.Linear(IN, OUT), "default", LoraConfig(r=5, lora_alpha=5), r=5, lora_alpha=5)
    torch.manual_seed(7)
    reference.reset_lora_parameters("default", True)  # what peft does for init_lora_weights=True
    torch.manual_seed(0)
    base = nn.Linear(IN, OUT)
    layer = PanaceaLinear(base, config, PreferenceState(), initialize=False)
    torch.manual_seed(7)
    layer.reset_parameters(config)
    assert torch.equal(layer.lora_A, reference.lora_A["default"].weight)  # Kaiming-uniform, bit for bit
    assert torch.equal(layer.lora_B, torch.zeros(OUT, 5))
    assert torch.equal(layer.singular_values, torch.ones(3)) and layer.preference_scale.item() == 1.0
    layer.preference_state.preference = torch.tensor([0.5, 0.5])
    x = torch.randn(3, IN)
    assert torch.equal(layer(x), base(x))  # B = 0: ΔW = 0 at step 0


def test_explicit_initial_sigma_and_s_override_the_scheme_defaults():
    for init in ("lora", "gaussian"):
        config = PanaceaConfig(svd_rank=3, num_preferences=2, init=init, init_singular_value=0.25)
        layer = PanaceaLinear(nn.Linear(IN, OUT), config, PreferenceState())
        assert torch.equal(layer.singular_values, torch.full((3,), 0.25))
        assert layer.preference_scale.item() == (1.0 if init == "lora" else 0.0)
    config = PanaceaConfig(svd_rank=3, num_preferences=2, init="lora", init_preference_scale=0.5)
    layer = PanaceaLinear(nn.Linear(IN, OUT), config, PreferenceState())
    assert torch.equal(layer.singular_values, torch.ones(3)) and layer.preference_scale.item() == 0.5


def test_orthogonal_init_and_preference_scale():
    torch.manual_seed(0)
    config = PanaceaConfig(svd_rank=4, num_preferences=2, init="orthogonal", init_preference_scale=0.5)
    layer = PanaceaLinear(nn.Linear(40, 30), config, PreferenceState())
    torch.testing.assert_close(layer.lora_A @ layer.lora_A.T, torch.eye(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(layer.lora_B.T @ layer.lora_B, torch.eye(6), atol=1e-5, rtol=0)
    assert layer.preference_scale.item() == 0.5
    assert layer.orthogonality_penalty().item() < 1e-9


def test_svd_init_uses_the_top_singular_vectors_of_w0():
    torch.manual_seed(0)
    base = nn.Linear(20, 16, dtype=torch.float64)
    layer = PanaceaLinear(base, PanaceaConfig(svd_rank=3, num_preferences=2, init="svd"), PreferenceState())
    singular_values = torch.linalg.svdvals(base.weight)[:5]
    # W0 v_i = σ_i u_i for the top five right/left singular vector pairs.
    torch.testing.assert_close(base.weight @ layer.lora_A.T, layer.lora_B * singular_values, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="init='svd' needs k \\+ m·r = 20 <= min\\(in, out\\) = 16"):
        PanaceaLinear(base, PanaceaConfig(svd_rank=18, num_preferences=2, init="svd"), PreferenceState())


def test_orthogonality_penalty_matches_hand_computation():
    layer, _ = make_layer()
    a, b = layer.lora_A, layer.lora_B
    eye = torch.eye(5, dtype=torch.float64)
    expected = ((a @ a.T - eye) ** 2).sum() + ((b.T @ b - eye) ** 2).sum()
    torch.testing.assert_close(layer.orthogonality_penalty(), expected)


def test_half_precision_base_keeps_float32_adapter():
    base = nn.Linear(8, 8).to(torch.bfloat16)
    layer = PanaceaLinear(base, PanaceaConfig(svd_rank=2, num_preferences=2), PreferenceState())
    assert layer.lora_A.dtype == torch.float32
    layer.preference_state.preference = torch.tensor([0.5, 0.5])
    assert layer(torch.randn(2, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_rejects_unsupported_layers():
    with pytest.raises(TypeError, match="adapts nn.Linear and transformers Conv1D layers, got Embedding"):
        PanaceaLinear(nn.Embedding(4, 4), PanaceaConfig(), PreferenceState())


@pytest.mark.parametrize("isolated", [0, 1])
def test_an_isolated_dimensions_loss_trains_its_own_directions_and_the_shared_diagonal_only(isolated):
    """isolate_dimensions: the output is unchanged; the gradient is the full one with every other dimension's rows
    of A and columns of B zeroed (σ, s and the k shared columns keep theirs), at a per-sample preference."""
    layer, state = make_layer(preference_rank=2)  # k = 3, then 2 columns per dimension
    state.preference = torch.tensor([[0.3, 0.7], [0.9, 0.1]], dtype=torch.float64)
    x = torch.randn(2, 4, IN, dtype=torch.float64)
    target = torch.randn(2, 4, OUT, dtype=torch.float64)
    parameters = (layer.lora_A, layer.lora_B, layer.singular_values, layer.preference_scale)

    def gradients():
        output = layer(x)
        return output.detach(), torch.autograd.grad((output * target).sum(), parameters)

    full_output, full = gradients()
    state.isolated_dimension = isolated
    output, own = gradients()
    assert torch.equal(output, full_output)
    keep = torch.zeros(3 + 2 * 2, dtype=torch.bool)
    keep[:3] = True  # the k shared columns
    keep[3 + 2 * isolated : 5 + 2 * isolated] = True
    torch.testing.assert_close(own[0], full[0] * keep[:, None], rtol=0, atol=0)
    torch.testing.assert_close(own[1], full[1] * keep[None, :], rtol=0, atol=0)
    torch.testing.assert_close(own[2], full[2], rtol=0, atol=0)  # σ
    torch.testing.assert_close(own[3], full[3], rtol=0, atol=0)  # s
    assert own[0][~keep].abs().sum() == 0 and full[0][~keep].abs().sum() > 0  # the other dimension did move before
