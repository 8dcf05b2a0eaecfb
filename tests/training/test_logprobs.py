"""collate_pairs, response_log_probs and pair_log_probs on tiny random models, against dense references."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from panacea.training.logprobs import collate_pairs, pair_log_probs, response_log_probs

from panacea.data import TokenizedPair
from tests.conftest import panacea_llama, tiny_gpt2, tiny_llama
from tests.helpers import tiny_soup

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


# --- pair_log_probs: every pair at every λ, the prompt shared by chosen and rejected -------------------------

# Ragged on purpose: prompts of 1–6 tokens, responses of 1–7, chosen longer or shorter than rejected.
RAGGED = [
    TokenizedPair("p0", prompt_ids=[5, 6, 7], chosen_ids=[8, 9], rejected_ids=[10, 11, 12, 13]),
    TokenizedPair("p1", prompt_ids=[14, 15], chosen_ids=[16, 17, 18], rejected_ids=[19]),
    TokenizedPair("p2", prompt_ids=[20], chosen_ids=[21, 22, 23, 24, 25, 26, 27], rejected_ids=[28, 29]),
    TokenizedPair("p3", prompt_ids=[30, 31, 32, 33, 34, 35], chosen_ids=[36], rejected_ids=[37, 38, 39, 40, 41]),
    TokenizedPair("p4", prompt_ids=[42, 43], chosen_ids=[44, 45], rejected_ids=[46, 47]),
]
PREFERENCES = torch.tensor([[1.0, 0.0], [0.7, 0.3], [0.2, 0.8], [0.0, 1.0]])
# Rejected is chosen's continuation: a leak of chosen into rejected's attention is large, not a rounding error.
LEAKY = TokenizedPair("leak", prompt_ids=[5, 6], chosen_ids=[30, 31, 32, 33, 34], rejected_ids=[30, 31, 32])


def dense_pair_log_probs(model, pairs, preferences=None, **forward_kwargs):
    """Independent reference, (points, pairs, 2): each sequence alone, no padding, all logits, fp64 log-softmax."""
    points = [None] if preferences is None else list(preferences)
    result = torch.zeros(len(points), len(pairs), 2, dtype=torch.float64)
    for point, preference in enumerate(points):
        kwargs = {} if preference is None else {"preference": preference}
        for index, pair in enumerate(pairs):
            for side, response in enumerate((pair.chosen_ids, pair.rejected_ids)):
                ids = torch.tensor([pair.prompt_ids + response])
                with torch.no_grad():
                    logits = model(input_ids=ids, **kwargs, **forward_kwargs).logits[0].double()
                token_logps = torch.log_softmax(logits[:-1], dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
                result[point, index, side] = token_logps[len(pair.prompt_ids) - 1 :].sum()
    return result.float()


@pytest.mark.parametrize("pack", [True, False])
def test_pair_log_probs_equal_each_sequence_run_alone_at_every_preference(pack):
    model = panacea_llama().eval()
    result = pair_log_probs(model, RAGGED, PREFERENCES, pad_token_id=PAD, token_budget=40, pack=pack)
    assert result.shape == (4, 5, 2) and result.dtype == torch.float32
    torch.testing.assert_close(result, dense_pair_log_probs(model, RAGGED, PREFERENCES), rtol=0, atol=1e-5)


def test_packing_keeps_the_chosen_response_out_of_the_rejected_ones_attention():
    model = panacea_llama().eval()
    pairs = [LEAKY, *RAGGED[:2]]
    result = pair_log_probs(model, pairs, PREFERENCES[:2], pad_token_id=PAD, pack=True)
    torch.testing.assert_close(result, dense_pair_log_probs(model, pairs, PREFERENCES[:2]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("bug", ["causal mask only", "positions run on"])
def test_the_dense_comparison_catches_a_packing_bug(monkeypatch, bug):
    """The test above has teeth: with rejected tokens that see chosen, or sit after it, the numbers move."""
    from panacea.training import logprobs

    if bug == "causal mask only":
        right = logprobs._packed_attention_mask
        monkeypatch.setattr(
            logprobs, "_packed_attention_mask", lambda segments, dtype: right(segments.clamp(max=0), dtype)
        )
    else:
        original = logprobs._collate_rows

        def positions_run_on(*args):
            batch = original(*args)
            batch.position_ids = torch.arange(batch.input_ids.shape[1]).expand_as(batch.input_ids)
            return batch

        monkeypatch.setattr(logprobs, "_collate_rows", positions_run_on)
    model = panacea_llama().eval()
    result = pair_log_probs(model, [LEAKY], PREFERENCES[:1], pad_token_id=PAD, pack=True)
    dense = dense_pair_log_probs(model, [LEAKY], PREFERENCES[:1])
    assert (result[..., 0] - dense[..., 0]).abs().max() < 1e-5  # chosen comes first: never affected
    assert (result[..., 1] - dense[..., 1]).abs().max() > 1e-3  # 100 × the tolerance of the tests above


def test_every_row_carries_its_own_preference():
    model = panacea_llama().eval()
    mixed = pair_log_probs(model, RAGGED, PREFERENCES, pad_token_id=PAD)
    for point, preference in enumerate(PREFERENCES):
        alone = pair_log_probs(model, RAGGED, preference[None], pad_token_id=PAD)  # one λ: the shared-λ matmul
        torch.testing.assert_close(mixed[point], alone[0], rtol=0, atol=1e-5)
    assert (mixed[0] - mixed[-1]).abs().max() > 1e-3  # the λs do differ


def test_batches_respect_the_token_budget_and_their_split_changes_nothing():
    model = panacea_llama().eval()
    results, shapes = {}, {}
    for budget in (1, 36, 10**6):
        forwards = []
        handle = model.base_model.register_forward_pre_hook(
            lambda module, args, kwargs, seen=forwards: seen.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
        )
        try:
            results[budget] = pair_log_probs(model, RAGGED, PREFERENCES, pad_token_id=PAD, token_budget=budget)
        finally:
            handle.remove()
        shapes[budget] = forwards
    assert [rows for rows, _ in shapes[1]] == [1] * len(RAGGED) * len(PREFERENCES)  # a longer row runs alone
    assert len(shapes[36]) > 1 and all(rows * seq <= 36 for rows, seq in shapes[36])
    assert [rows for rows, _ in shapes[10**6]] == [len(RAGGED) * len(PREFERENCES)]  # all in one forward
    torch.testing.assert_close(results[1], results[10**6], rtol=0, atol=1e-5)
    torch.testing.assert_close(results[36], results[10**6], rtol=0, atol=1e-5)


def test_rows_are_sorted_by_their_own_length_so_padding_is_small():
    from panacea.training.logprobs import _budget_batches, _scoring_rows

    unpacked = _scoring_rows(RAGGED, points=2, pack=False)
    assert [row.length for row in unpacked] == sorted((row.length for row in unpacked), reverse=True)
    assert {row.sides for row in unpacked} == {(0,), (1,)} and len(unpacked) == 2 * 2 * len(RAGGED)
    packed = _scoring_rows(RAGGED, points=2, pack=True)
    assert [(row.pair, row.point, row.length) for row in packed[:2]] == [(3, 0, 12), (3, 1, 12)]  # λs side by side
    batches = list(_budget_batches(packed, token_budget=24))
    assert [[row.length for row in batch] for batch in batches] == [[12] * 2, [10] * 2, [9] * 2, [6] * 4]
    assert all(len(batch) * batch[0].length <= 24 for batch in batches)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_plain_hugging_face_model_without_preferences(attention):
    model = tiny_llama(attn_implementation=attention)
    assert model.config._attn_implementation == attention
    result = pair_log_probs(model, [LEAKY, *RAGGED], pad_token_id=PAD, token_budget=30)
    assert result.shape == (1, 6, 2)
    torch.testing.assert_close(result, dense_pair_log_probs(model, [LEAKY, *RAGGED]), rtol=0, atol=1e-5)


def test_a_sliding_window_model_is_scored_one_row_per_response():
    """The packed 4-D mask went to the model as is, without the window: on a Mistral with sliding_window 3 the
    packed log-probs differed from each sequence run alone by up to 0.03 (found by an independent review)."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, sliding_window=3, attn_implementation="sdpa",
    )  # fmt: skip
    model = MistralForCausalLM(config).eval()
    result = pair_log_probs(model, [LEAKY, *RAGGED], pad_token_id=PAD, token_budget=30)
    torch.testing.assert_close(result, dense_pair_log_probs(model, [LEAKY, *RAGGED]), rtol=0, atol=1e-5)


def test_a_batch_without_a_scored_token_is_scored_as_nothing():
    """Empty index lists became float tensors, which cannot index the output head's rows (IndexError)."""
    pair = TokenizedPair("x", prompt_ids=[5, 6], chosen_ids=[], rejected_ids=[7, 8])
    result = pair_log_probs(tiny_llama(), [pair], pad_token_id=PAD, pack=False, token_budget=2)
    dense = dense_pair_log_probs(tiny_llama(), [pair])
    assert result[0, 0, 0] == 0 and torch.isclose(result[0, 0, 1], dense[0, 0, 1], atol=1e-5)


def test_a_gpt2_with_absolute_positions_and_conv1d_layers():
    model = tiny_gpt2()
    result = pair_log_probs(model, [LEAKY, *RAGGED], pad_token_id=PAD, token_budget=30)
    torch.testing.assert_close(result, dense_pair_log_probs(model, [LEAKY, *RAGGED]), rtol=0, atol=1e-5)


def test_reference_runs_the_frozen_base_model():
    model = panacea_llama().eval()
    result = pair_log_probs(model, RAGGED, pad_token_id=PAD, reference=True)
    torch.testing.assert_close(result, dense_pair_log_probs(tiny_llama(), RAGGED), rtol=0, atol=1e-5)
    assert (result - pair_log_probs(model, RAGGED, PREFERENCES[:1], pad_token_id=PAD)).abs().max() > 1e-3


def test_a_soup_takes_one_preference_per_call():
    soup = tiny_soup()
    preference = torch.tensor([[0.3, 0.7]])
    result = pair_log_probs(soup, RAGGED, preference, pad_token_id=PAD, token_budget=30)
    torch.testing.assert_close(result, dense_pair_log_probs(soup, RAGGED, preference), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="one λ per call"):
        pair_log_probs(soup, RAGGED, PREFERENCES, pad_token_id=PAD)


def test_pair_log_probs_equal_the_training_path_on_collated_rows():
    """The same numbers as `collate_pairs` + `response_log_probs` (today's scorer), row for row."""
    model = panacea_llama().eval()
    batch = collate_pairs(RAGGED, pad_token_id=PAD)
    for preference in PREFERENCES[[0, 2]]:
        with torch.no_grad():
            rows = response_log_probs(model, batch, preference=preference).view(2, len(RAGGED)).T  # (pairs, 2)
        result = pair_log_probs(model, RAGGED, preference[None], pad_token_id=PAD)[0]
        torch.testing.assert_close(result, rows, rtol=0, atol=1e-5)


def test_the_output_head_sees_each_scored_token_once_and_the_shared_prompt_state_twice():
    model = tiny_llama()
    shapes = []
    handle = model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: shapes.append(tuple(args[0].shape))
    )
    try:
        pair_log_probs(model, RAGGED, pad_token_id=PAD, token_budget=10**6)
    finally:
        handle.remove()
    assert shapes == [(1, sum(len(p.chosen_ids) + len(p.rejected_ids) for p in RAGGED), HIDDEN)]


def test_eval_mode_for_the_call_and_the_callers_mode_after():
    model = panacea_llama(dropout=0.5)
    model.train()
    result = pair_log_probs(model, RAGGED, PREFERENCES[:2], pad_token_id=PAD)
    assert model.training
    model.eval()
    torch.testing.assert_close(result, dense_pair_log_probs(model, RAGGED, PREFERENCES[:2]), rtol=0, atol=1e-5)


def test_an_empty_prompt_and_no_pairs():
    model = tiny_llama()
    pair = TokenizedPair("bare", prompt_ids=[], chosen_ids=[5, 6, 7], rejected_ids=[8, 9])
    result = pair_log_probs(model, [pair], pad_token_id=PAD)
    batch = collate_pairs([pair], pad_token_id=PAD)  # the first response token has no predictor, as here
    torch.testing.assert_close(result[0, 0], full_logits_log_probs(model, batch), rtol=0, atol=1e-5)
    assert pair_log_probs(model, [], PREFERENCES, pad_token_id=PAD).shape == (4, 0, 2)


def test_bad_arguments_give_one_clear_error_each():
    model = panacea_llama()
    with pytest.raises(ValueError, match=r"shape \(points, m\)"):
        pair_log_probs(model, RAGGED, PREFERENCES[0], pad_token_id=PAD)
    with pytest.raises(ValueError, match="preferences=None"):
        pair_log_probs(model, RAGGED, PREFERENCES, pad_token_id=PAD, reference=True)
    with pytest.raises(ValueError, match="token_budget"):
        pair_log_probs(model, RAGGED, PREFERENCES, pad_token_id=PAD, token_budget=0)


@pytest.mark.integration
def test_pair_log_probs_equal_todays_scorer_path_on_the_embedded_model():
    """hh-2d's adapter (k = 0, m = 2, r = 2, B random) on real pairs of both test splits, at 3 λs, packed and not.

    Tolerance 1e-4 + 1e-6·|value|: the sums reach −800 here, where fp32 steps by 6e-5, and today's path differs
    from itself by ~1.5e-4 at another batch size; every fp32 path is ~1e-3 from an fp64 forward.
    """
    from panacea import PanaceaConfig, get_panacea_model
    from panacea.base_model import load_base_model
    from panacea.data import PairSource, load_dimension
    from panacea.preferences import simplex_grid

    base, tokenizer = load_base_model()
    root = Path(__file__).parents[2]
    pairs = []
    for dimension in ("helpful", "harmless"):
        source = PairSource(str(root / "data" / f"{dimension}.jsonl.gz"), split="test")
        tokenized, _ = load_dimension([source], dimension, ["helpful", "harmless"], tokenizer, 256, 128)
        pairs += tokenized[:3]
    torch.manual_seed(0)
    model = get_panacea_model(base, PanaceaConfig(svd_rank=0, num_preferences=2, preference_rank=2, init="lora"))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("lora_B"):
                parameter.normal_(0, 0.02)  # init lora has B = 0, where λ changes nothing
    model.eval()
    preferences = simplex_grid(2, 3)
    batch = collate_pairs(pairs, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        today = torch.stack(
            [response_log_probs(model, batch, preference=point).view(2, len(pairs)).T for point in preferences]
        )  # (points, pairs, 2)
    assert (today[0] - today[-1]).abs().max() > 1e-2
    for pack in (True, False):
        result = pair_log_probs(model, pairs, preferences, pad_token_id=tokenizer.pad_token_id, pack=pack)
        torch.testing.assert_close(result, today, rtol=1e-6, atol=1e-4)
