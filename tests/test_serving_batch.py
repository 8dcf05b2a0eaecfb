"""panacea/serving/batch.py and stats.py: the shared KV cache keeps every row's history through joins, steps and
leaves without copying it each step; prompts are grouped for prefill within the token budget; the engine's
chunked, interleaved prefill answers as `generate` does alone; its stats add up.

The cache is checked against an independent reference: each row's own list of key/value columns, kept by hand.
"""

from __future__ import annotations

import threading

import pytest
import torch

from panacea.serving import Engine, GenerationRequest, SamplingParams
from panacea.serving.batch import PADDING_LIMIT, DecodeBatch, new_cache, prefill_group
from panacea.serving.stats import EngineStats
from tests.conftest import panacea_llama, tiny_llama, tiny_tokenizer
from tests.helpers import alone

HEADS, DIM = 2, 8  # the tiny Llama's key/value heads and head size


# --------------------------------------------------------------------------------------------------
# Grouping prompts for a prefill


def test_a_prefill_group_starts_with_the_oldest_and_adds_the_nearest_lengths_within_the_budget():
    assert prefill_group([10, 30, 11, 9, 12], budget=48) == [0, 2, 3, 4]  # 4 × 12 = 48 tokens, 6 of them padding
    assert prefill_group([10, 30, 11, 9, 12], budget=47) == [0, 2, 3]  # the fourth row would need 48
    assert prefill_group([40, 10, 11], budget=32) == [0]  # the oldest goes first, alone, even over the budget
    assert prefill_group([7], budget=1) == [0]


def test_a_prefill_group_keeps_padding_within_its_limit():
    lengths = [20, 12, 16, 5]
    group = prefill_group(lengths, budget=1000)
    assert group == [0, 1, 2]  # 3 × 20 = 60 tokens, 12 padding; with 5 too: 80 tokens, 27 padding
    padded = len(group) * max(lengths[index] for index in group)
    assert padded - sum(lengths[index] for index in group) <= PADDING_LIMIT * padded
    assert (4 * 20 - sum(lengths)) > PADDING_LIMIT * 4 * 20


# --------------------------------------------------------------------------------------------------
# The cache through joins, decode steps and leaves, against each row's own history


def _prefilled(config, lengths: list[int], generator: torch.Generator) -> tuple[DecodeBatch, list[list[torch.Tensor]]]:
    """A batch as a prefill leaves it: random keys for left-padded prompts of `lengths`, and each row's real keys."""
    width = max(lengths)
    mask = torch.tensor([[0] * (width - length) + [1] * length for length in lengths])
    cache = new_cache(config)
    keys = torch.randn(len(lengths), HEADS, width, DIM, generator=generator)
    for layer in cache.layers:
        layer.update(keys, -keys)
    history = [[keys[row, :, column] for column in range(width - length, width)] for row, length in enumerate(lengths)]
    tokens = torch.arange(len(lengths))
    return DecodeBatch.after_prefill(cache, mask, tokens, torch.rand(len(lengths), 2)), history


def _assert_rows_hold(batch: DecodeBatch, history: list[list[torch.Tensor]]) -> None:
    """Every row's unmasked cache columns are its history, in order, in every layer; padding is finite."""
    assert len(batch) == len(history) and batch.attention_mask.shape[1] == batch.cache.layers[0].keys.shape[2] + 1
    for layer in batch.cache.layers:
        assert torch.isfinite(layer.keys).all()
        for row, columns in enumerate(history):
            seen = batch.attention_mask[row, :-1].bool()
            assert torch.equal(layer.keys[row][:, seen], torch.stack(columns, dim=1)), f"row {row}"
            assert torch.equal(layer.values[row][:, seen], -torch.stack(columns, dim=1)), f"row {row}"


def test_the_shared_cache_keeps_each_row_s_history_through_joins_steps_and_leaves():
    config = tiny_llama().config
    generator = torch.Generator().manual_seed(0)
    batch, history = _prefilled(config, [3, 1], generator)
    labels = [0, 1]  # which request each row is, to follow rows that move
    for step in range(40):
        if step % 7 == 3:  # a group joins, sometimes with a history longer than the batch's window
            lengths = [int(length) for length in torch.randint(1, 30, (int(torch.randint(1, 4, ())),))]
            joining, joining_history = _prefilled(config, lengths, generator)
            batch.extend(joining, max_rows=6)
            assert batch.cache.layers[0]._key_buffer.shape[0] <= max(6, len(batch))  # grown, but not past max_rows
            history += joining_history
            labels += list(range(max(labels) + 1, max(labels) + 1 + len(lengths)))
        new = torch.randn(len(batch), HEADS, 1, DIM, generator=generator)
        for layer in batch.cache.layers:
            layer.update(new, -new)
        batch.advance(torch.zeros(len(batch), dtype=torch.long))
        for row in range(len(batch)):
            history[row].append(new[row, :, 0])
        if step % 5 == 4 and len(batch) > 1:  # some rows leave: the last rows take their slots
            gone = sorted(set(torch.randint(0, len(batch), (2,)).tolist()))[: len(batch) - 1]
            order = batch.drop(gone)
            assert sorted(order) == [row for row in range(len(history)) if row not in gone]
            history, labels = [history[row] for row in order], [labels[row] for row in order]
            longest = max(len(columns) for columns in history)
            assert batch.attention_mask.shape[1] == longest + 1  # leading columns nobody uses are cut
        _assert_rows_hold(batch, history)
    assert len(set(labels)) == len(labels)


def test_a_decode_step_writes_in_place_instead_of_copying_the_cache():
    batch, _ = _prefilled(tiny_llama().config, [5, 2], torch.Generator().manual_seed(1))
    layer = batch.cache.layers[0]
    steps = []  # every step's keys, kept alive, so two steps share memory only if no step copied the cache
    for _ in range(200):
        new = torch.zeros(len(batch), HEADS, 1, DIM)
        steps.append(layer.update(new, new)[0])
    storages = {keys.untyped_storage().data_ptr() for keys in steps}
    assert steps[-1].shape[2] == 205 and len(storages) == 3  # grown by doubling: 64, 128, then 256 columns
    batch.drop([0])  # a leaving row costs one row's copy, not a new cache
    assert layer.keys.untyped_storage().data_ptr() in storages and layer.keys.shape[:3] == (1, HEADS, 202)


# --------------------------------------------------------------------------------------------------
# The engine: chunked prefill interleaved with decode steps, and its stats


@pytest.mark.parametrize("max_prefill_tokens", [2, 512])
def test_a_long_prompt_joining_short_rows_in_chunks_answers_as_alone(max_prefill_tokens):
    tokenizer = tiny_tokenizer()
    short = GenerationRequest(tuple(tokenizer("w7")["input_ids"]), torch.tensor([0.3, 0.7]), SamplingParams(12, 0.0))
    long = GenerationRequest(
        tuple(tokenizer("w37 w38 w39 w40 w41 w42 w43")["input_ids"]), torch.tensor([0.2, 0.8]), SamplingParams(6, 0.0)
    )
    tokens: dict[str, list[int]] = {"short": [], "long": []}
    done = threading.Semaphore(0)
    engine = Engine(panacea_llama(seed=3), tokenizer, max_batch_size=4, max_prefill_tokens=max_prefill_tokens)

    def collect(name: str):
        def emit(output):
            tokens[name].extend(output.token_ids)
            if name == "short" and len(tokens["short"]) == 2:  # the 7-token prompt joins a 1 + 2 column window
                engine.submit(long, collect("long"))
            if output.finish_reason is not None:
                done.release()

        return emit

    with engine:
        engine.submit(short, collect("short"))
        assert done.acquire(timeout=30) and done.acquire(timeout=30)
        stats = EngineStats.from_json(engine.stats())
    reference = panacea_llama(seed=3)
    assert tokens["short"] == alone(reference, short.prompt_ids, short.preference, 12)
    assert tokens["long"] == alone(reference, long.prompt_ids, long.preference, 6)
    chunks = 1 + (4 if max_prefill_tokens == 2 else 1)  # the 1-token prompt, then 7 tokens in ⌈7 / budget⌉ passes
    assert stats.prefills == chunks and stats.prefill_tokens == stats.prefill_padded_tokens == 8
    assert stats.started == stats.first_tokens == 2 and stats.tokens == len(tokens["short"]) + len(tokens["long"])
    assert stats.steps == sum(steps for steps, _ in stats.steps_by_rows.values()) and set(stats.steps_by_rows) == {1, 2}
    assert stats.decode_rows == sum(rows * steps for rows, (steps, _) in stats.steps_by_rows.items())
    assert stats.tokens == stats.decode_rows + stats.first_tokens  # every token from a prefill or a decode row


def test_engine_stats_since_an_earlier_snapshot_and_through_json():
    stats = EngineStats(requests=2, prefills=1, prefill_seconds=0.5)
    stats.add_step(3, 0.25)
    before = EngineStats.from_json(stats.snapshot().to_json())
    stats.add_step(3, 0.5)
    stats.add_step(1, 0.125)
    stats.requests += 1
    delta = stats.since(before)
    assert (delta.requests, delta.prefills, delta.steps, delta.decode_rows) == (1, 0, 2, 4)
    assert delta.steps_by_rows == {3: [1, 0.5], 1: [1, 0.125]} and delta.decode_seconds == 0.625
    assert delta.peak_batch_size == 3 and before.steps_by_rows == {3: [1, 0.25]}


def test_the_engine_refuses_a_prefill_budget_that_is_not_a_positive_number_of_tokens():
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="max_prefill_tokens must be a positive number of tokens"):
            Engine(panacea_llama(), tiny_tokenizer(), max_prefill_tokens=bad)
