"""Reward models: the Bradley–Terry head, its file format, the feature pass and the train-once cache."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random

import pytest
import torch
import torch.nn.functional as F
from panacea.eval import reward_model as rm
from panacea.eval.reward_model import (
    RewardModel,
    bradley_terry_loss,
    fit_bradley_terry,
    pair_features,
    response_features,
    score_responses,
    train_reward_model,
)

from panacea.base_model import CACHE_SEEDS_ENV
from panacea.data import PairSource, load_dimension
from tests.conftest import panacea_llama, tiny_llama, tiny_tokenizer

MAX_LENGTH, MAX_PROMPT_LENGTH = 24, 8


def separable_pairs(n: int = 64, size: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chosen, rejected, w_true): random features, ordered so that w_true·(chosen − rejected) >= 0.5."""
    generator = torch.Generator().manual_seed(seed)
    w_true = torch.randn(size, generator=generator)
    a, b = torch.randn(4 * n, size, generator=generator), torch.randn(4 * n, size, generator=generator)
    gap = (a - b) @ w_true
    keep = gap.abs() >= 0.5  # a margin, so a finite w separates them
    a, b, gap = a[keep][:n], b[keep][:n], gap[keep][:n]
    chosen = torch.where((gap > 0)[:, None], a, b)
    rejected = torch.where((gap > 0)[:, None], b, a)
    return chosen, rejected, w_true


def write_pairs(path, dimension: str = "a", per_split: int = 12, seed: int = 0) -> None:
    """Word-salad pairs over the tiny tokenizer's words, `per_split` in train and in test."""
    rng = random.Random(seed)

    def words(count: int) -> str:
        return " ".join(f"w{rng.randrange(4, 64)}" for _ in range(count))

    with open(path, "w") as handle:
        for split in ("train", "test"):
            for index in range(per_split):
                chosen, rejected = words(rng.randrange(2, 9)), words(rng.randrange(2, 9))
                record = {
                    "id": f"{split}{index}",
                    "prompt": words(rng.randrange(3, 12)),
                    "chosen": chosen,
                    "rejected": rejected if rejected != chosen else rejected + " w4",
                    "dim": dimension,
                    "source": "test",
                    "split": split,
                }
                handle.write(json.dumps(record) + "\n")


def train_tiny(tmp_path, model=None, **overrides) -> RewardModel:
    path = tmp_path / "a.jsonl"
    if not path.exists():
        write_pairs(path)
    settings = dict(
        train=[PairSource(str(path), split="train")],
        test=[PairSource(str(path), split="test")],
        max_length=MAX_LENGTH,
        max_prompt_length=MAX_PROMPT_LENGTH,
        batch_size=5,
        cache_root=tmp_path / "cache",
    )
    settings.update(overrides)
    return train_reward_model(model or tiny_llama(), tiny_tokenizer(), "a", **settings)


# ------------------------------------------------------------------------------------------------------
# Head


def test_bradley_terry_loss_is_minus_log_sigmoid_of_the_margin():
    loss = bradley_terry_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
    assert torch.allclose(loss, torch.tensor([math.log(1 + math.exp(-1)), math.log(1 + math.exp(2))]))


def test_head_separates_a_separable_problem_and_stops_at_the_optimum():
    chosen, rejected, w_true = separable_pairs()
    head = fit_bradley_terry(chosen, rejected, dimension="a", weight_decay=1e-3)
    assert head.accuracy(chosen, rejected) == 1.0
    # Independent check of the optimum: the objective's gradient vanishes at w (the problem is convex).
    w = head.weight.double().requires_grad_()
    z_w = (chosen.double() - head.mean.double()) / head.std.double()
    z_l = (rejected.double() - head.mean.double()) / head.std.double()
    objective = F.softplus(-((z_w - z_l) @ w)).mean() + 0.5 * 1e-3 * w.square().sum()
    (gradient,) = torch.autograd.grad(objective, w)
    assert gradient.abs().max() < 1e-5
    # The learnt direction is the true one, in the original feature space.
    direction = head.weight / head.std
    assert F.cosine_similarity(direction, w_true, dim=0) > 0.95
    assert float(head.bias) == 0.0 and head.metadata["fit_iterations"] > 0


def test_fit_is_reproducible_under_a_seed_and_seed_independent_at_the_optimum():
    chosen, rejected, _ = separable_pairs(n=40, size=8)
    first = fit_bradley_terry(chosen, rejected, dimension="a", seed=3)
    second = fit_bradley_terry(chosen, rejected, dimension="a", seed=3)
    other = fit_bradley_terry(chosen, rejected, dimension="a", seed=4)
    for name in ("weight", "bias", "mean", "std"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    assert not torch.equal(first.weight, other.weight)  # another start ...
    assert torch.allclose(first.weight, other.weight, atol=1e-4)  # ... same optimum


def test_bad_inputs_raise_one_clear_value_error():
    chosen, rejected, _ = separable_pairs(n=8, size=3)
    head = fit_bradley_terry(chosen, rejected, dimension="a")
    with pytest.raises(ValueError, match=r"shape \(n, 3\), got \(8, 4\)"):
        head.score(torch.zeros(8, 4))
    with pytest.raises(ValueError, match="same shape"):
        fit_bradley_terry(chosen, rejected[:, :2], dimension="a")
    with pytest.raises(ValueError, match="n >= 1"):
        fit_bradley_terry(chosen[:0], rejected[:0], dimension="a")
    with pytest.raises(ValueError, match="weight_decay"):
        fit_bradley_terry(chosen, rejected, dimension="a", weight_decay=-1.0)
    with pytest.raises(ValueError, match="No pairs"):
        pair_features(tiny_llama(), [], pad_token_id=0)
    with pytest.raises(ValueError, match="3 prompts but 2 responses"):
        response_features(tiny_llama(), [[4]] * 3, [[5]] * 2, pad_token_id=0)
    with pytest.raises(ValueError, match="non-empty list"):
        train_reward_model(tiny_llama(), tiny_tokenizer(), "a", [], [], max_length=24, max_prompt_length=8)
    missing = [PairSource("no/such/file.jsonl")]  # refused before any data loads
    with pytest.raises(ValueError, match="weight_decay"):
        train_reward_model(
            tiny_llama(), tiny_tokenizer(), "a", missing, missing, max_length=24, max_prompt_length=8, weight_decay=-1
        )


# ------------------------------------------------------------------------------------------------------
# Files


def test_save_load_round_trip(tmp_path):
    chosen, rejected, _ = separable_pairs(n=16, size=4)
    head = fit_bradley_terry(chosen, rejected, dimension="harmless", seed=1)
    head.metadata["test_accuracy"] = 0.75
    head.save(tmp_path / "rm")
    loaded = RewardModel.load(tmp_path / "rm")
    assert loaded.dimension == "harmless" and loaded.metadata == head.metadata
    for name in ("weight", "bias", "mean", "std"):
        assert torch.equal(getattr(loaded, name), getattr(head, name))
    assert torch.equal(loaded.score(chosen), head.score(chosen))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["rm"]  # no temporary folder left behind


def test_corrupt_or_mismatched_files_raise_a_value_error_naming_the_file(tmp_path):
    head = fit_bradley_terry(*separable_pairs(n=16, size=4)[:2], dimension="a")
    head.save(tmp_path / "rm")
    weights, config = tmp_path / "rm" / rm.WEIGHTS_FILE, tmp_path / "rm" / rm.CONFIG_FILE
    original = config.read_text()
    config.write_text(original.replace('"feature_size": 4', '"feature_size": 5'))
    with pytest.raises(ValueError, match="feature_size 5 but the weight has shape"):
        RewardModel.load(tmp_path / "rm")
    config.write_text(original[:-10])
    with pytest.raises(ValueError, match=f"{rm.CONFIG_FILE} is not valid JSON"):
        RewardModel.load(tmp_path / "rm")
    config.write_text(original)
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(ValueError, match=f"{rm.WEIGHTS_FILE} cannot be read.*delete the folder"):
        RewardModel.load(tmp_path / "rm")
    with pytest.raises(FileNotFoundError, match="No reward model"):
        RewardModel.load(tmp_path / "missing")


# ------------------------------------------------------------------------------------------------------
# Features


def test_padding_does_not_leak_into_features():
    rng = random.Random(0)
    prompts = [[rng.randrange(4, 64) for _ in range(rng.randrange(2, 9))] for _ in range(6)]
    responses = [[rng.randrange(4, 64) for _ in range(rng.randrange(1, 9))] for _ in range(6)]
    model = tiny_llama()
    batched = response_features(model, prompts, responses, pad_token_id=0, batch_size=6)
    alone = torch.cat(
        [response_features(model, [p], [r], pad_token_id=0) for p, r in zip(prompts, responses, strict=True)]
    )
    assert batched.shape == (6, 64)
    assert torch.allclose(batched, alone, atol=1e-5)
    # Independently: the backbone's output (after the final norm) on the unpadded sequence, at the last token
    # and averaged over the response positions.
    with torch.no_grad():
        hidden = model.model(torch.tensor([prompts[0] + responses[0]])).last_hidden_state[0]  # (seq, 32)
    reference = torch.cat([hidden[-1], hidden[len(prompts[0]) :].mean(0)])
    assert torch.allclose(batched[0], reference, atol=1e-5)


def test_a_panacea_model_gives_its_base_models_features():
    prompts, responses = [[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14, 2]]
    base = response_features(tiny_llama(), prompts, responses, pad_token_id=0)
    model = panacea_llama()  # the same base weights (seed 0) and a random, non-trivial adapter
    model.set_preference([0.3, 0.7])
    assert torch.allclose(response_features(model, prompts, responses, pad_token_id=0), base, atol=1e-6)
    assert model.training and model.active_preference is not None  # mode and preference are put back


# ------------------------------------------------------------------------------------------------------
# Train once, cache, score


def test_train_reports_accuracies_and_a_second_call_is_a_cache_hit(tmp_path, monkeypatch):
    first = train_tiny(tmp_path)
    meta = first.metadata
    assert (meta["train_pairs"], meta["test_pairs"], meta["feature_size"]) == (12, 12, 64)
    assert 0 <= meta["test_accuracy"] <= 1 and meta["train_accuracy"] >= 0.9  # 64 features for 12 pairs
    assert first.summary().startswith("a RM: test acc")

    def refuse(*args, **kwargs):
        raise AssertionError("features were computed on a cache hit")

    monkeypatch.setattr(rm, "response_features", refuse)
    second = train_tiny(tmp_path)
    assert torch.equal(second.weight, first.weight) and second.metadata == meta
    with pytest.raises(AssertionError, match="cache hit"):  # other data: another key, so no hit
        train_tiny(tmp_path, train=[PairSource(str(tmp_path / "a.jsonl"), split="train", max_pairs=10)])
    with pytest.raises(AssertionError, match="cache hit"):  # another base model
        train_tiny(tmp_path, model=tiny_llama(seed=1))


def test_a_seed_folder_is_read_where_the_cache_misses_and_never_written(tmp_path, monkeypatch):
    """$PANACEA_CACHE_SEEDS: a head committed in a seed folder (laid out like the cache) spares a fresh machine the
    base-model pass; the cache is searched first, and a head fitted now goes to the cache, not to the seed."""
    first = train_tiny(tmp_path)
    (folder,) = (tmp_path / "cache").iterdir()
    seed = tmp_path / "seed"
    (seed / "reward-models").mkdir(parents=True)
    folder.rename(seed / "reward-models" / folder.name)  # the cache is now empty; the seed holds the head
    monkeypatch.setenv(CACHE_SEEDS_ENV, f"{tmp_path / 'elsewhere'}{os.pathsep}{seed}")

    def refuse(*args, **kwargs):
        raise AssertionError("features were computed although a seed folder holds the head")

    with monkeypatch.context() as patch:
        patch.setattr(rm, "response_features", refuse)
        read = train_tiny(tmp_path)
    assert torch.equal(read.weight, first.weight) and read.metadata == first.metadata
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing copied to cache
    other = train_tiny(tmp_path, model=tiny_llama(seed=1))  # no entry anywhere: fitted, written to the cache only
    assert [entry.name for entry in (tmp_path / "cache").iterdir()] == [f"a-{other.metadata['cache_key'][:32]}"]
    assert [entry.name for entry in (seed / "reward-models").iterdir()] == [folder.name]


def test_a_damaged_cache_entry_is_trained_again(tmp_path):
    first = train_tiny(tmp_path)
    (folder,) = (tmp_path / "cache").iterdir()
    (folder / rm.WEIGHTS_FILE).write_bytes(b"not safetensors")
    again = train_tiny(tmp_path)
    assert torch.equal(again.weight, first.weight)
    assert torch.equal(RewardModel.load(folder).weight, first.weight)


def test_score_responses_matches_the_pair_path_and_refuses_another_base_model(tmp_path):
    head = train_tiny(tmp_path)
    tokenizer, model = tiny_tokenizer(), tiny_llama()
    pairs, _ = load_dimension(
        [PairSource(str(tmp_path / "a.jsonl"), split="test")], "a", ["a"], tokenizer, MAX_LENGTH, MAX_PROMPT_LENGTH
    )
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    records = [record for record in records if record["split"] == "test"]
    prompts, chosen = [r["prompt"] for r in records], [r["chosen"] for r in records]
    scores = score_responses(head, model, tokenizer, prompts, chosen, batch_size=3)
    expected = head.score(pair_features(model, pairs, pad_token_id=0)[0])
    assert scores.shape == (12,) and torch.allclose(scores, expected, atol=1e-5)
    with pytest.raises(ValueError, match="trained on base model"):
        score_responses(head, tiny_llama(num_hidden_layers=1), tokenizer, prompts, chosen)
    with pytest.raises(ValueError, match="one response per prompt"):
        score_responses(head, model, tokenizer, prompts, chosen[:-1])


def test_reward_models_that_truncate_alike_share_one_feature_pass_and_score_as_alone(tmp_path, monkeypatch):
    """Two heads on one base model with the same truncation: one features pass, the numbers of scoring each alone."""
    head, model, tokenizer = train_tiny(tmp_path), tiny_llama(), tiny_tokenizer()
    other = dataclasses.replace(head, dimension="b", weight=-2 * head.weight, bias=head.bias + 1.0)
    prompts, responses = ["w5 w6", "w7", "w9 w8"], ["w10 w11", "w12", "w13 w14 w15"]
    alone = {name: score_responses(rm, model, tokenizer, prompts, responses, batch_size=2) for name, rm in
             (("a", head), ("b", other))}  # fmt: skip
    calls, original = [], rm.response_features
    monkeypatch.setattr(rm, "response_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    together = rm.score_responses_many({"a": head, "b": other}, model, tokenizer, prompts, responses, batch_size=2)
    assert len(calls) == 1 and list(together) == ["a", "b"]
    assert all(torch.equal(together[name], alone[name]) for name in alone)
    assert not torch.equal(together["a"], together["b"])
    shorter = dataclasses.replace(head, metadata={**head.metadata, "max_length": head.metadata["max_length"] - 1})
    rm.score_responses_many({"a": head, "s": shorter}, model, tokenizer, prompts, responses, batch_size=2)
    assert len(calls) == 3  # another truncation: a pass of its own
