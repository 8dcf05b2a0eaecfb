"""collate_pairs and response_log_probs on tiny random models, against a full-logits reference."""

import pytest
import torch
import torch.nn.functional as F
from panacea.training.logprobs import collate_pairs, response_log_probs

from panacea.data import TokenizedPair
from tests.conftest import panacea_llama, tiny_llama

PAD = 0
HIDDEN = 32  # tiny_llama's hidden size

PAIRS = [
    TokenizedPair("a", prompt_ids=[5, 6, 7], chosen_ids=[8, 9], rejected_ids=[10, 11, 12, 13]),
    TokenizedPair("b", prompt_ids=[14, 15], chosen_ids=[16, 17, 18], rejected_ids=[19]),
]


def full_logits_log_probs(model, batch, **forward_kwargs):
    """Independent reference: all logits, log-softmax everywhere, gather the response targets, sum per row."""
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **forward_kwargs).logits
    token_logps = torch.log_softmax(logits.double(), dim=-1)[:, :-1]  # position t predicts token t + 1
    targets = batch.input_ids[:, 1:]
    gathered = token_logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (rows, seq − 1)
    return (gathered * batch.response_mask[:, 1:]).sum(1).float()


# --- collate_pairs -----------------------------------------------------------------------------------------


def test_collate_puts_chosen_rows_first_then_rejected_rows():
    batch = collate_pairs(PAIRS, pad_token_id=PAD)
    expected = torch.tensor(
        [
            [5, 6, 7, 8, 9, PAD, PAD],
            [14, 15, 16, 17, 18, PAD, PAD],
            [5, 6, 7, 10, 11, 12, 13],
            [14, 15, 19, PAD, PAD, PAD, PAD],
        ]
    )
    torch.testing.assert_close(batch.input_ids, expected)
    assert batch.num_pairs == 2


def test_collate_attention_mask_covers_prompt_and_response_only():
    batch = collate_pairs(PAIRS, pad_token_id=PAD)
    expected = torch.tensor([[1] * 5 + [0] * 2, [1] * 5 + [0] * 2, [1] * 7, [1] * 3 + [0] * 4])
    torch.testing.assert_close(batch.attention_mask, expected)
    assert batch.num_tokens == 20


def test_collate_response_mask_marks_response_tokens_only():
    batch = collate_pairs(PAIRS, pad_token_id=PAD)
    expected = torch.tensor(
        [
            [0, 0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 0, 0],
            [0, 0, 0, 1, 1, 1, 1],
            [0, 0, 1, 0, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    torch.testing.assert_close(batch.response_mask, expected)
    torch.testing.assert_close(batch.response_tokens, torch.tensor([2, 3, 4, 1]))


def test_collate_without_rejected_has_chosen_rows_only():
    batch = collate_pairs(PAIRS, pad_token_id=PAD, with_rejected=False)
    expected = torch.tensor([[5, 6, 7, 8, 9], [14, 15, 16, 17, 18]])
    torch.testing.assert_close(batch.input_ids, expected)
    assert batch.num_pairs == 2


# --- response_log_probs ------------------------------------------------------------------------------------


def test_response_log_probs_match_full_logits_on_a_tiny_llama():
    model = tiny_llama()
    batch = collate_pairs(PAIRS, pad_token_id=PAD)
    with torch.no_grad():
        result = response_log_probs(model, batch)
    assert result.shape == (4,) and result.dtype == torch.float32
    torch.testing.assert_close(result, full_logits_log_probs(model, batch), rtol=0, atol=1e-5)


def test_response_log_probs_match_full_logits_on_panacea_at_a_preference():
    model = panacea_llama().eval()
    batch = collate_pairs(PAIRS, pad_token_id=PAD)
    preference = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        result = response_log_probs(model, batch, preference=preference)
    reference = full_logits_log_probs(model, batch, preference=preference)
    torch.testing.assert_close(result, reference, rtol=0, atol=1e-5)


def test_response_log_probs_match_full_logits_with_per_sample_preferences():
    model = panacea_llama().eval()
    batch = collate_pairs(PAIRS, pad_token_id=PAD)
    rows = torch.tensor([[1.0, 0.0], [0.2, 0.8], [0.5, 0.5], [0.0, 1.0]])
    with torch.no_grad():
        result = response_log_probs(model, batch, preference=rows)
    torch.testing.assert_close(result, full_logits_log_probs(model, batch, preference=rows), rtol=0, atol=1e-5)


def test_per_sample_preference_rows_are_not_mixed_up():
    model = panacea_llama().eval()
    batch = collate_pairs(PAIRS, pad_token_id=PAD)
    rows = torch.tensor([[1.0, 0.0], [0.2, 0.8], [0.5, 0.5], [0.0, 1.0]])
    with torch.no_grad():
        mixed = response_log_probs(model, batch, preference=rows)
        for row, preference in enumerate(rows):
            alone = response_log_probs(model, batch, preference=preference)
            assert mixed[row].item() == pytest.approx(alone[row].item(), abs=1e-5)


def test_preference_changes_the_log_probs():
    model = panacea_llama().eval()
    batch = collate_pairs(PAIRS, pad_token_id=PAD)
    with torch.no_grad():
        first = response_log_probs(model, batch, preference=torch.tensor([1.0, 0.0]))
        second = response_log_probs(model, batch, preference=torch.tensor([0.0, 1.0]))
    assert (first - second).abs().max() > 1e-3


def test_output_head_sees_only_response_positions():
    model = tiny_llama()
    batch = collate_pairs(PAIRS, pad_token_id=PAD)
    shapes = []
    handle = model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: shapes.append(tuple(args[0].shape))
    )
    try:
        with torch.no_grad():
            response_log_probs(model, batch)
    finally:
        handle.remove()
    assert shapes == [(1, int(batch.response_mask.sum()), HIDDEN)]
    assert shapes[0][1] == 2 + 3 + 4 + 1


def test_output_head_hook_is_removed_after_the_call():
    model = tiny_llama()
    batch = collate_pairs(PAIRS, pad_token_id=PAD)
    with torch.no_grad():
        response_log_probs(model, batch)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert logits.shape == (*batch.input_ids.shape, model.config.vocab_size)


def test_padding_does_not_change_a_rows_value():
    model = tiny_llama()
    short = PAIRS[1]
    longer = TokenizedPair("long", prompt_ids=[20, 21, 22, 23, 24], chosen_ids=[25, 26, 27, 28], rejected_ids=[29])
    with torch.no_grad():
        alone = response_log_probs(model, collate_pairs([short], pad_token_id=PAD))  # (chosen, rejected)
        padded = response_log_probs(model, collate_pairs([short, longer], pad_token_id=PAD))  # (c0, c1, r0, r1)
    torch.testing.assert_close(padded[[0, 2]], alone, rtol=0, atol=1e-5)


def test_response_log_probs_carry_gradient_to_the_adapter():
    model = panacea_llama()
    batch = collate_pairs(PAIRS, pad_token_id=PAD)
    response_log_probs(model, batch, preference=torch.tensor([0.5, 0.5])).sum().backward()
    grads = [parameter.grad for parameter in model.parameters() if parameter.requires_grad]
    assert grads and all(grad is not None for grad in grads)
    assert any(grad.abs().sum() > 0 for grad in grads)


def test_log_softmax_runs_in_fp32_for_a_bf16_model():
    model = tiny_llama(dtype=torch.bfloat16)
    batch = collate_pairs(PAIRS, pad_token_id=PAD)
    with torch.no_grad():
        result = response_log_probs(model, batch)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
    token_logps = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    reference = (token_logps * batch.response_mask[:, 1:]).sum(1)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, reference, rtol=0, atol=2e-3)  # a bf16 log-softmax is off by ~6e-2
