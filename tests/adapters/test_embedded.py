"""The adapter on the embedded SmolLM2-135M-Instruct: the real model a user starts from."""

import pytest
import torch
from peft import PeftModel

from panacea import PanaceaConfig, PanaceaModel, get_panacea_model, load_base_model
from panacea.generation import generate_text

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedded():
    """A Panacea model on the embedded base with the demo's non-trivial seeded init, and its tokenizer."""
    torch.manual_seed(0)
    base, tokenizer = load_base_model()
    config = PanaceaConfig(svd_rank=8, num_preferences=2, init="orthogonal", init_preference_scale=8.0)
    return get_panacea_model(base, config).eval(), tokenizer


def test_every_block_linear_is_adapted(embedded):
    model, _ = embedded
    layers = dict(model.adapter_layers())
    assert len(layers) == 30 * 7
    expected = sum(10 * (layer.in_features + layer.out_features) + 8 + 1 for layer in layers.values())
    assert model.num_parameters(only_trainable=True) == expected


@pytest.mark.parametrize("init", ["gaussian", "lora"])
def test_fresh_adapter_reproduces_the_base_model(init):
    base, tokenizer = load_base_model()
    ids = tokenizer("Hello, how are you?", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = base(ids).logits
        model = get_panacea_model(base, PanaceaConfig(init=init))
        assert torch.equal(model(ids, preference=[0.3, 0.7]).logits, expected)


def test_preference_changes_generation_and_per_sample_matches_single(embedded):
    model, tokenizer = embedded
    prompt = "Give me one tip for staying focused while studying."
    first = generate_text(model, tokenizer, prompt, [0.9, 0.1], max_new_tokens=24)
    second = generate_text(model, tokenizer, prompt, [0.1, 0.9], max_new_tokens=24)
    assert first and second and first != second
    ids = tokenizer(prompt, return_tensors="pt").input_ids.repeat(2, 1)
    preferences = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    with torch.no_grad():
        batched = model(ids, preference=preferences).logits
        assert (batched[0] - batched[1]).abs().max() > 1.0
        # Per-sample rows run the same arithmetic as a shared preference over the same batch ...
        assert torch.equal(model(ids, preference=preferences[[0, 0]]).logits[0], batched[0])
        # ... and match one sample alone up to the base model's own batch-size round-off (~5e-5 here).
        with model.disable_adapter():
            base_noise = (model(ids).logits[:1] - model(ids[:1]).logits).abs().max().item()
        for row in range(2):
            alone = model(ids[row : row + 1], preference=preferences[row]).logits
            torch.testing.assert_close(batched[row : row + 1], alone, rtol=0, atol=max(4 * base_noise, 1e-6))


def test_export_reproduces_logits_through_plain_peft(embedded, tmp_path):
    model, tokenizer = embedded
    ids = tokenizer("What is the capital of France?", return_tensors="pt").input_ids
    model.export_lora([0.7, 0.3], tmp_path / "lora")
    exported = PeftModel.from_pretrained(load_base_model()[0], tmp_path / "lora").eval()
    with torch.no_grad():
        expected = model(ids, preference=[0.7, 0.3]).logits
        assert torch.equal(exported(ids).logits, expected)  # the issue asks atol 1e-5; it is bit-exact


def test_save_load_round_trip_is_bit_identical(embedded, tmp_path):
    model, tokenizer = embedded
    model.save_pretrained(tmp_path / "adapter")
    loaded = PanaceaModel.from_pretrained(load_base_model()[0], tmp_path / "adapter")
    ids = tokenizer("Write a haiku about rain.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(loaded(ids, preference=[0.4, 0.6]).logits, model(ids, preference=[0.4, 0.6]).logits)
