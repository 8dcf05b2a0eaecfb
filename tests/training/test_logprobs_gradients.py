"""response_log_probs against a dense reference in its gradients, and the model it leaves behind.

Exact counterparts of two tests in tests/training/test_logprobs.py whose only checks are `any(grad > 0)`
(test_response_log_probs_carry_gradient_to_the_adapter) and a shape (test_output_head_hook_is_removed_after_the_call).
"""

import pytest
import torch
from panacea.training.logprobs import collate_pairs, response_log_probs

from panacea.data import TokenizedPair
from tests.conftest import panacea_llama

PAD = 0
PAIRS = [
    TokenizedPair("a", prompt_ids=[5, 6, 7], chosen_ids=[8, 9], rejected_ids=[10, 11, 12, 13]),
    TokenizedPair("b", prompt_ids=[14, 15], chosen_ids=[16, 17, 18], rejected_ids=[19]),
]
ROW_WEIGHTS = torch.tensor([1.0, -2.0, 0.5, 3.0])  # chosen a, chosen b, rejected a, rejected b: every row counts


def dense_log_probs(model, batch, preference):
    """Independent reference, with its graph: all logits, log-softmax everywhere, the response targets summed."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, preference=preference).logits
    token_logps = torch.log_softmax(logits.double(), dim=-1)[:, :-1]  # position t predicts token t + 1
    gathered = token_logps.gather(-1, batch.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (rows, seq − 1)
    return (gathered * batch.response_mask[:, 1:]).sum(1)


def adapter_gradients(model, log_probs):
    """{name: ∂(Σ_rows w_row · log π(row))/∂parameter} over the adapter's parameters."""
    model.zero_grad(set_to_none=True)
    (ROW_WEIGHTS.to(log_probs) * log_probs).sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "preference",
    [torch.tensor([0.3, 0.7]), torch.tensor([[1.0, 0.0], [0.2, 0.8], [0.6, 0.4], [0.0, 1.0]])],
    ids=["shared", "per_row"],
)
def test_the_adapters_gradient_is_the_dense_references(preference):
    model = panacea_llama()
    batch = collate_pairs(PAIRS, pad_token_id=PAD)
    fast = adapter_gradients(model, response_log_probs(model, batch, preference=preference))
    dense = adapter_gradients(model, dense_log_probs(model, batch, preference))
    assert fast.keys() == dense.keys() and len(fast) > 0
    for name in fast:
        assert dense[name].abs().max() > 0, name  # every adapter parameter has a gradient to compare here
        scale = float(dense[name].abs().max())  # the fast path's log-probs are float32: ~1e-6 of the largest entry
        torch.testing.assert_close(fast[name], dense[name].to(fast[name]), rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_the_model_gives_the_same_logits_after_a_call_as_before():
    """The output-head hook is removed: afterwards every position's logits are back, with the same values."""
    model = panacea_llama().eval()
    batch = collate_pairs(PAIRS, pad_token_id=PAD)
    preference = torch.tensor([0.4, 0.6])
    with torch.no_grad():
        before = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, preference=preference).logits
        response_log_probs(model, batch, preference=preference)
        after = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, preference=preference).logits
    assert after.shape == (*batch.input_ids.shape, model.config.vocab_size)
    assert torch.equal(after, before)
