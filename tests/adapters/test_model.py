"""PanaceaModel on tiny random models: dense whole-model reference, preference API, merging, gradients."""

import copy
import sys

import pytest
import torch
from panacea.adapters import PanaceaLinear, find_target_modules
from torch import nn

from panacea import PanaceaConfig, get_panacea_model
from tests.conftest import panacea_llama, randomize_adapter, tiny_gpt2, tiny_llama
from tests.helpers import input_ids

LLAMA_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def dense_reference(model, preference):
    """A plain copy of the base model whose adapted weights are W0 + scaling · B diag(d) A."""
    reference = copy.deepcopy(model.base_model)
    for name, layer in list(model.adapter_layers()):
        parent_name, _, child_name = name.rpartition(".")
        plain = copy.deepcopy(layer.base_layer)
        with torch.no_grad():
            d = torch.cat([layer.singular_values, layer.preference_scale * preference.to(layer.lora_A.dtype)])
            delta = layer.scaling * layer.lora_B @ torch.diag(d) @ layer.lora_A
            plain.weight += delta.T if layer.fan_in_fan_out else delta
        setattr(reference.get_submodule(parent_name), child_name, plain)
    return reference


@pytest.mark.parametrize("make_base", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2-conv1d"])
def test_whole_model_matches_dense_reference(make_base):
    model = get_panacea_model(make_base().double(), PanaceaConfig(svd_rank=3, num_preferences=2))
    randomize_adapter(model)
    preference = torch.tensor([0.3, 0.7], dtype=torch.float64)
    ids = input_ids()
    with torch.no_grad():
        logits = model(ids, preference=preference).logits
        expected = dense_reference(model, preference)(ids).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-10)
    with torch.no_grad(), model.disable_adapter():
        assert (logits - model(ids).logits).abs().max() > 0.1  # the adapter really changes the output


def test_all_linear_targets_every_block_linear_but_not_the_head():
    model = panacea_llama()
    names = [name for name, _ in model.adapter_layers()]
    assert len(names) == 2 * 7
    assert {name.rsplit(".", 1)[-1] for name in names} == LLAMA_LINEARS
    assert isinstance(model.base_model.lm_head, nn.Linear) and not isinstance(model.base_model.lm_head, PanaceaLinear)


def test_target_and_exclude_modules_follow_peft_matching():
    base = tiny_llama()
    names = find_target_modules(
        base, PanaceaConfig(target_modules=["q_proj", "v_proj"], exclude_modules=["model.layers.1.self_attn.v_proj"])
    )
    assert names == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.1.self_attn.q_proj",
    ]
    assert find_target_modules(base, PanaceaConfig(target_modules=r".*\.0\.mlp\.up_proj")) == [
        "model.layers.0.mlp.up_proj"
    ]


def test_bad_targets_raise_clear_errors():
    with pytest.raises(
        ValueError, match=r"matched no module of LlamaForCausalLM; its linear layers are named \[.*'q_proj'"
    ):
        get_panacea_model(tiny_llama(), PanaceaConfig(target_modules=["query"]))
    with pytest.raises(ValueError, match="selects 'model.layers.0.mlp', a LlamaMLP"):
        get_panacea_model(tiny_llama(), PanaceaConfig(target_modules=["mlp"]))
    model = panacea_llama()
    with pytest.raises(ValueError, match="already has Panacea layers"):
        get_panacea_model(model.base_model, PanaceaConfig())


def test_only_adapter_parameters_are_trainable_and_receive_gradients():
    model = panacea_llama()
    model.set_preference([0.4, 0.6])
    model(input_ids(), labels=input_ids()).loss.backward()
    for name, parameter in model.named_parameters():
        is_adapter = name.rsplit(".", 1)[-1] in ("lora_A", "lora_B", "singular_values", "preference_scale")
        assert parameter.requires_grad == is_adapter, name
        if is_adapter:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name


def test_fresh_adapter_is_the_base_model_and_gradients_reach_sigma_and_s_first():
    model = panacea_llama(randomize=False)  # docs/algorithms.md init: A, B ~ N(0, 0.02²), σ = 0, s = 0
    ids = input_ids()
    with torch.no_grad(), model.disable_adapter():
        base_logits = model(ids).logits
    model.set_preference([0.5, 0.5])
    output = model(ids, labels=ids)
    assert torch.equal(output.logits, base_logits)
    output.loss.backward()
    for _, layer in model.adapter_layers():
        assert layer.singular_values.grad.abs().sum() > 0 and layer.preference_scale.grad.abs() > 0
        assert layer.lora_A.grad.abs().sum() == 0 and layer.lora_B.grad.abs().sum() == 0


def test_fresh_lora_init_is_the_base_model_and_every_lora_b_gets_a_gradient_at_step_0():
    """init='lora' (A Kaiming-uniform, B = 0, σ = s = 1): ΔW = 0, yet ∂L/∂B ∝ d ⊙ A x ≠ 0 from the first step."""
    ids = input_ids()
    for init in ("lora", "gaussian"):
        model = panacea_llama(randomize=False, init=init)
        with torch.no_grad(), model.disable_adapter():
            base_logits = model(ids).logits
        model.set_preference([0.5, 0.5])
        output = model(ids, labels=ids)
        assert torch.equal(output.logits, base_logits), init
        output.loss.backward()
        for name, layer in model.adapter_layers():
            if init == "lora":
                assert layer.lora_B.grad.abs().sum() > 0, name
                # B = 0 blocks every other gradient for this one step (∂L/∂A, ∂L/∂σ, ∂L/∂s all carry a factor B).
                assert layer.lora_A.grad.abs().sum() == 0 and layer.singular_values.grad.abs().sum() == 0, name
            else:  # the contrast: with σ = s = 0, d = 0 and B gets exactly no gradient at step 0
                assert layer.lora_B.grad.abs().sum() == 0, name


def test_per_sample_preferences_equal_one_sample_at_a_time():
    model = panacea_llama(dtype=torch.float64)
    preferences = torch.tensor([[1.0, 0.0], [0.25, 0.75], [0.5, 0.5]], dtype=torch.float64)
    ids = input_ids()
    with torch.no_grad():
        batched = model(ids, preference=preferences).logits
        for row in range(3):
            alone = model(ids[row : row + 1], preference=preferences[row]).logits
            torch.testing.assert_close(batched[row : row + 1], alone, rtol=0, atol=1e-12)
    assert (batched[0] - batched[1]).abs().max() > 0.01


def test_per_sample_rows_run_the_same_arithmetic_as_a_shared_preference():
    model = panacea_llama()
    ids = input_ids()
    with torch.no_grad():
        shared = model(ids, preference=[0.3, 0.7]).logits
        assert torch.equal(model(ids, preference=[[0.3, 0.7]] * 3).logits, shared)


def _count_calls(function):
    calls = 0

    def profiler(frame, event, arg):
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(profiler)
    try:
        function()
    finally:
        sys.setprofile(None)
    return calls


def test_switching_preference_is_o1_and_touches_no_weight():
    small, large = panacea_llama(), panacea_llama(base_overrides={"num_hidden_layers": 6})
    assert len(list(large.adapter_layers())) == 3 * len(list(small.adapter_layers()))
    small.set_preference([0.5, 0.5])
    large.set_preference([0.5, 0.5])
    # The same number of Python and C calls whatever the number of layers: no loop over layers.
    assert _count_calls(lambda: small.set_preference([0.2, 0.8])) == _count_calls(
        lambda: large.set_preference([0.2, 0.8])
    )
    before = {
        name: (p.data_ptr(), p._version, p.detach().clone()) for name, p in large.state_dict(keep_vars=True).items()
    }
    large.set_preference([0.9, 0.1])
    after = large.state_dict(keep_vars=True)
    for name, (pointer, version, value) in before.items():
        assert after[name].data_ptr() == pointer and after[name]._version == version, name
        assert torch.equal(after[name], value), name
    # Every layer reads the same state object, which now holds the new preference.
    states = {id(layer.preference_state) for _, layer in large.adapter_layers()}
    assert states == {id(large._preference_state)}
    assert large.active_preference.tolist() == pytest.approx([0.9, 0.1])


def test_preference_moves_and_casts_with_the_model():
    model = panacea_llama()
    model.set_preference([0.25, 0.75])
    model.double()
    assert model.active_preference.dtype == torch.float64
    assert model.base_model.model.layers[0].self_attn.q_proj.lora_A.dtype == torch.float64
    with torch.no_grad():
        assert model(input_ids()).logits.dtype == torch.float64


def test_contexts_restore_the_state_when_the_body_raises():
    model = panacea_llama()
    model.set_preference([1.0, 0.0])
    with pytest.raises(KeyError):
        with model.preference([0.0, 1.0]):
            raise KeyError("boom")
    assert model.active_preference.tolist() == [1.0, 0.0]
    with pytest.raises(KeyError):
        with model.disable_adapter():
            raise KeyError("boom")
    assert not model._preference_state.disabled


def test_to_empty_keeps_the_preference_values():
    model = panacea_llama()
    model.set_preference([0.25, 0.75])
    model.to_empty(device="cpu")
    assert model.active_preference.tolist() == [0.25, 0.75]


def test_preference_context_restores_the_previous_preference():
    model = panacea_llama()
    assert model.active_preference is None
    with model.preference([0.2, 0.8]):
        assert model.active_preference.tolist() == pytest.approx([0.2, 0.8])
        with model.preference([1.0, 0.0]):
            assert model.active_preference.tolist() == [1.0, 0.0]
        assert model.active_preference.tolist() == pytest.approx([0.2, 0.8])
    assert model.active_preference is None
    with pytest.raises(RuntimeError, match="No preference is set"):
        model(input_ids())


def test_preference_argument_to_forward_is_scoped_to_the_call():
    model = panacea_llama()
    model.set_preference([1.0, 0.0])
    ids = input_ids()
    with torch.no_grad():
        other = model(ids, preference=[0.0, 1.0]).logits
        assert model.active_preference.tolist() == [1.0, 0.0]
        with model.preference([0.0, 1.0]):
            assert torch.equal(model(ids).logits, other)


def test_disable_adapter_gives_the_base_model_and_restores():
    model = panacea_llama()
    reference = tiny_llama()  # same seed: the untouched base model
    ids = input_ids()
    model.set_preference([0.5, 0.5])
    with torch.no_grad():
        adapted = model(ids).logits
        with model.disable_adapter():
            torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0)
        assert torch.equal(model(ids).logits, adapted)


@pytest.mark.parametrize(
    ("preference", "message"),
    [([0.5, 0.3, 0.2], "shape"), ([-0.1, 1.1], "non-negative"), ([float("nan"), 1.0], "NaN"), ([0.3, 0.3], "sum to 1")],
)
def test_set_preference_rejects_bad_input(preference, message):
    model = panacea_llama()
    with pytest.raises(ValueError, match=message):
        model.set_preference(preference)
    assert model.active_preference is None  # nothing half-set


def test_merge_matches_unmerged_forward_and_unmerge_restores_weights():
    model = panacea_llama()
    ids = input_ids()
    originals = {name: layer.base_layer.weight.clone() for name, layer in model.adapter_layers()}
    with torch.no_grad():
        expected = model(ids, preference=[0.3, 0.7]).logits
        model.merge([0.3, 0.7])
        torch.testing.assert_close(model(ids).logits, expected, rtol=0, atol=1e-5)
        model.unmerge()
        for name, layer in model.adapter_layers():
            torch.testing.assert_close(layer.base_layer.weight, originals[name], rtol=0, atol=1e-6)
        torch.testing.assert_close(model(ids, preference=[0.3, 0.7]).logits, expected, rtol=0, atol=1e-5)


def test_merge_misuse_raises():
    model = panacea_llama()
    with pytest.raises(ValueError, match=r"merge needs one preference of shape \(m,\)"):
        model.merge([[0.5, 0.5], [1.0, 0.0]])
    with pytest.raises(RuntimeError, match="not merged"):
        model.unmerge()
    model.merge([0.5, 0.5])
    with pytest.raises(RuntimeError, match="already merged"):
        model.merge([0.5, 0.5])
    with pytest.raises(RuntimeError, match="unmerge"):
        model.set_preference([1.0, 0.0])
    with pytest.raises(RuntimeError, match="unmerge"):
        with model.disable_adapter():
            pass


def test_merge_inside_disable_adapter_is_refused():
    model = panacea_llama()
    with model.disable_adapter(), pytest.raises(RuntimeError, match="inside disable_adapter"):
        model.merge([0.5, 0.5])
    assert model._preference_state.merged_preference is None


def test_unload_gives_back_the_original_model():
    model = panacea_llama()
    model.merge([0.5, 0.5])
    plain = model.unload()
    reference = tiny_llama()
    assert not any(isinstance(module, PanaceaLinear) for module in plain.modules())
    ids = input_ids()
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, reference(ids).logits, rtol=0, atol=1e-5)


def _gradients(loss_of, checkpointing: bool) -> dict[str, torch.Tensor]:
    """Every trainable parameter's gradient of `loss_of(model)` on a fresh tiny Panacea Llama in training mode, the
    backward run after `loss_of` has returned (outside any scope it opened)."""
    model = panacea_llama()
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable()
        assert model.base_model.is_activation_checkpointing  # else the comparison below would hold trivially
    loss_of(model).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def test_gradient_checkpointing_recomputes_with_the_forward_preference():
    """Backward after the preference scope ended must still use the preference the forward used."""
    ids = input_ids()

    def loss_of(model):
        model.set_preference([1.0, 0.0])
        loss = model(ids, labels=ids, preference=[0.0, 1.0]).loss
        with model.preference([0.5, 0.5]):
            pass
        return loss  # backward runs where the active preference is [1, 0]

    plain, checkpointed = _gradients(loss_of, False), _gradients(loss_of, True)
    for name, gradient in plain.items():
        torch.testing.assert_close(checkpointed[name], gradient, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="non-reentrant"):
        panacea_llama().gradient_checkpointing_enable({"use_reentrant": True})


def test_merge_and_unload_returns_a_plain_model_with_the_same_output():
    model = panacea_llama()
    ids = input_ids()
    with torch.no_grad():
        expected = model(ids, preference=[0.6, 0.4]).logits
        plain = model.merge_and_unload([0.6, 0.4])
        assert not any(isinstance(module, PanaceaLinear) for module in plain.modules())
        torch.testing.assert_close(plain(ids).logits, expected, rtol=0, atol=1e-5)


def test_generate_per_sample_preference_equals_one_at_a_time():
    model = panacea_llama()
    randomize_adapter(model, scale=0.6)
    ids = input_ids(batch=2, length=4)
    preferences = [[1.0, 0.0], [0.0, 1.0]]
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    batched = model.generate(ids, preference=preferences, **settings)
    for row in range(2):
        alone = model.generate(ids[row : row + 1], preference=preferences[row], **settings)
        assert torch.equal(batched[row], alone[0])
    # Beam search expands every input num_beams times (3 here, returning 1 each); the preference rows follow.
    beams = model.generate(ids, preference=preferences, num_beams=3, **settings)
    for row in range(2):
        assert torch.equal(
            beams[row], model.generate(ids[row : row + 1], preference=preferences[row], num_beams=3, **settings)[0]
        )
    # Several returned sequences per input: each input's rows keep its own λ (checked row by row on beam search,
    # which is deterministic; a shape alone would not show a λ misassigned to another input's sequences).
    returned = model.generate(ids, preference=preferences, num_beams=3, num_return_sequences=3, **settings)
    for row in range(2):
        alone = model.generate(
            ids[row : row + 1], preference=preferences[row], num_beams=3, num_return_sequences=3, **settings
        )
        assert torch.equal(returned[3 * row : 3 * row + 3], alone)
    assert not torch.equal(
        returned[:3],
        model.generate(ids[:1], preference=preferences[1], num_beams=3, num_return_sequences=3, **settings),
    )  # λ matters here
    # Sampling with several returned sequences expands by num_return_sequences.
    torch.manual_seed(0)
    sampled = model.generate(ids, preference=preferences, num_return_sequences=3, **{**settings, "do_sample": True})
    assert sampled.shape[0] == 6
    assert model.active_preference is None


def test_generate_on_a_bfloat16_model_with_a_stored_per_sample_preference():
    model = panacea_llama().to(torch.bfloat16)
    model.set_preference([[0.1, 0.9], [0.2, 0.8]])  # stored in bf16, where the rows no longer sum to 1 exactly
    output = model.generate(input_ids(batch=2, length=4), max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert output.shape == (2, 7)


def test_generate_uses_a_per_sample_preference_set_before():
    model = panacea_llama()
    randomize_adapter(model, scale=0.6)
    ids = input_ids(batch=2, length=4)
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0, "eos_token_id": None, "num_beams": 3}
    expected = model.generate(ids, preference=[[1.0, 0.0], [0.0, 1.0]], **settings)
    model.set_preference([[1.0, 0.0], [0.0, 1.0]])
    assert torch.equal(model.generate(ids, **settings), expected)
    assert model.active_preference.shape == (2, 2)  # the expansion was for that call only


def test_orthogonality_penalty_sums_over_layers():
    model = panacea_llama()
    total = sum(layer.orthogonality_penalty() for _, layer in model.adapter_layers())
    torch.testing.assert_close(model.orthogonality_penalty(), total)


def test_attribute_access_falls_through_to_the_base_model():
    model = panacea_llama()
    assert model.config is model.base_model.config
    assert model.get_input_embeddings() is model.base_model.get_input_embeddings()


NAMES = ["helpful", "harmless"]


def test_the_model_says_what_lambda_it_takes():
    assert (panacea_llama(preference_names=NAMES).num_preferences, panacea_llama().preference_names) == (2, None)
    model = panacea_llama(num_preferences=3, preference_names=["a", "b", "c"])
    assert (model.num_preferences, model.preference_names) == (3, ["a", "b", "c"])
    model.preference_names.append("d")  # a copy: the config's names stay
    assert model.panacea_config.preference_names == ["a", "b", "c"]


def test_preferences_by_name_are_the_vector_in_name_order_everywhere():
    model = panacea_llama(preference_names=NAMES)
    ids = input_ids()
    named, vector = {"harmless": 0.7, "helpful": 0.3}, [0.3, 0.7]  # dict order does not matter
    with torch.no_grad():
        expected = model(ids, preference=vector).logits
        assert torch.equal(model(ids, preference=named).logits, expected)  # forward(preference=)
        model.set_preference(named)
        assert model.active_preference.tolist() == pytest.approx(vector)
        with model.preference({"helpful": 1.0, "harmless": 0.0}):
            assert model.active_preference.tolist() == [1.0, 0.0]
        rows = [{"helpful": 1.0, "harmless": 0.0}, named, {"helpful": 0.5, "harmless": 0.5}]
        assert torch.equal(
            model(ids, preference=rows).logits, model(ids, preference=[[1.0, 0.0], vector, [0.5, 0.5]]).logits
        )
        settings = {"max_new_tokens": 3, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}
        assert torch.equal(
            model.generate(ids, preference=named, **settings), model.generate(ids, preference=vector, **settings)
        )
        assert torch.equal(
            model.generate(ids, preference=rows, **settings),
            model.generate(ids, preference=[[1.0, 0.0], vector, [0.5, 0.5]], **settings),
        )
        model.merge(named)
        assert model._preference_state.merged_preference.tolist() == pytest.approx(vector)
        torch.testing.assert_close(model(ids).logits, expected, rtol=0, atol=1e-5)
        model.unmerge()
        plain = model.merge_and_unload(named)
        torch.testing.assert_close(plain(ids).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "call",
    [
        lambda model, preference, folder: model.set_preference(preference),
        lambda model, preference, folder: model.preference(preference).__enter__(),
        lambda model, preference, folder: model(input_ids(), preference=preference),
        lambda model, preference, folder: model.generate(input_ids(), preference=preference, max_new_tokens=1),
        lambda model, preference, folder: model.merge(preference),
        lambda model, preference, folder: model.merge_and_unload(preference),
        lambda model, preference, folder: model.export_lora(preference, folder),
    ],
    ids=["set_preference", "preference", "forward", "generate", "merge", "merge_and_unload", "export_lora"],
)
def test_every_entry_point_names_the_valid_preference_names(call, tmp_path):
    model = panacea_llama(preference_names=NAMES)
    with pytest.raises(
        ValueError, match=r"unknown name\(s\) \['helpfull'\].*names are \['helpful', 'harmless'\] \(in order\)"
    ):
        call(model, {"helpfull": 0.5, "harmless": 0.5}, tmp_path / "lora")
    with pytest.raises(ValueError, match=r"missing name\(s\) \['harmless'\]"):
        call(model, {"helpful": 1.0}, tmp_path / "lora")
    with pytest.raises(ValueError, match="sum to 1"):  # the simplex checks still apply after the names
        call(model, {"helpful": 0.5, "harmless": 0.6}, tmp_path / "lora")
    unnamed = panacea_llama()
    with pytest.raises(ValueError, match="the adapter has no preference names.*pass a vector of 2 weights"):
        call(unnamed, {"helpful": 0.5, "harmless": 0.5}, tmp_path / "lora")
    assert model.active_preference is None and unnamed.active_preference is None
    assert model._preference_state.merged_preference is None and not (tmp_path / "lora").exists()


def test_isolated_dimension_is_scoped_refuses_a_dimension_it_lacks_and_leaves_inference_alone():
    model = panacea_llama()
    model.set_preference([0.4, 0.6])
    with model.isolated_dimension(1):
        with torch.no_grad():
            isolated = model(input_ids()).logits
        assert all(layer.preference_state.isolated_dimension == 1 for _, layer in model.adapter_layers())
    with torch.no_grad():
        assert torch.equal(isolated, model(input_ids()).logits)
    assert all(layer.preference_state.isolated_dimension is None for _, layer in model.adapter_layers())
    with pytest.raises(ValueError, match=r"isolated_dimension\(2\): the adapter has 2 dimensions"):
        with model.isolated_dimension(2):
            pass


def test_gradient_checkpointing_recomputes_with_the_forwards_isolated_dimension():
    """Backward runs after the isolated_dimension scope has ended (the trainer's backward does): the re-run layers
    must still detach the other dimensions' directions, as the forward did."""
    ids = input_ids()

    def loss_of(model):
        with model.isolated_dimension(0):
            return model(ids, labels=ids, preference=[0.4, 0.6]).loss

    plain, checkpointed = _gradients(loss_of, False), _gradients(loss_of, True)
    for name, gradient in plain.items():
        torch.testing.assert_close(checkpointed[name], gradient, rtol=1e-5, atol=1e-7)
    other = [gradient for name, gradient in checkpointed.items() if name.endswith("lora_B")]
    config = panacea_llama().panacea_config
    column = config.svd_rank + config.preference_rank  # dimension 1's first direction
    assert other and all(float(gradient[:, column].abs().sum()) == 0 for gradient in other)
