"""A rewarded-soups member (PlainLoraModel) takes `preference=` and ignores it: the same output at every λ.

tests/adapters/test_soups.py::test_a_plain_lora_ignores_the_preference_and_trains_under_gradient_checkpointing
checks the gradients only, at one λ and with B = 0 (where every λ gives the base model); this compares λs.
"""

import torch
from panacea.adapters import PanaceaConfig, get_lora_model

from tests.conftest import tiny_llama
from tests.helpers import input_ids


def trained_lora():
    """A plain LoRA on a tiny Llama with random B (peft's B = 0 would make every output the base model's)."""
    model = get_lora_model(tiny_llama(), PanaceaConfig(svd_rank=2, num_preferences=2), seed=0).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.adapter_state_dict().items():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model


def test_a_plain_lora_gives_the_same_logits_at_every_preference():
    model, ids = trained_lora(), input_ids()  # (3, 6)
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        assert (plain - base).abs().max() > 0.1  # the LoRA does change the output, so λ could have
        for preference in ([1.0, 0.0], [0.0, 1.0], [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]):
            assert torch.equal(model(input_ids=ids, preference=preference).logits, plain), preference


def test_a_plain_lora_generates_the_same_tokens_at_every_preference():
    model, ids = trained_lora(), input_ids(batch=2, length=4)
    settings = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    plain = model.generate(input_ids=ids, **settings)
    for preference in ([1.0, 0.0], [0.0, 1.0], [[0.9, 0.1], [0.1, 0.9]]):
        assert torch.equal(model.generate(input_ids=ids, preference=preference, **settings), plain), preference
