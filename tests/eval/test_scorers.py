"""The pairs scorer: its held-out sets (one column per source, never merged) and its numbers against a hand
computation (each pair's margin from each sequence run alone)."""

from __future__ import annotations

import math

import pytest
import torch
from panacea.eval.scorers import PairSet, load_pair_sets, score_pairs
from panacea.training import TrainConfig

from panacea._config import dataclass_from_dict
from panacea.data import TokenizedPair
from tests.conftest import panacea_llama, randomize_adapter, tiny_tokenizer
from tests.helpers import config_dict, make_workspace


def test_two_sources_with_one_file_name_stay_two_sets(tmp_path):
    workspace = make_workspace(tmp_path)
    data = config_dict(workspace, tmp_path / "run")
    path = data["dimensions"][0]["train"][0]["path"]
    data["dimensions"][0]["eval"] = [{"path": path, "max_pairs": 2}, {"path": path, "max_pairs": 3, "seed": 1}]
    config = dataclass_from_dict(TrainConfig, data, where="test")
    sets = load_pair_sets(config, tiny_tokenizer())
    assert [(pair_set.name, len(pair_set.pairs)) for pair_set in sets] == [("a/a", 2), ("a/a-2", 3)]


PAD = 0
PAIRS = [
    TokenizedPair("p0", prompt_ids=[5, 6, 7], chosen_ids=[8, 9], rejected_ids=[10, 11, 12, 13]),
    TokenizedPair("p1", prompt_ids=[14, 15], chosen_ids=[16, 17, 18], rejected_ids=[19]),
    TokenizedPair("p2", prompt_ids=[20], chosen_ids=[21, 22, 23, 24, 25], rejected_ids=[28, 29]),
]
OTHER = [TokenizedPair("q0", prompt_ids=[30, 31], chosen_ids=[32, 33], rejected_ids=[34, 35, 36])]


def alone(model, pair: TokenizedPair, response: list[int], preference=None) -> float:
    """Σ log π(response | prompt), the sequence run alone, fp64 log-softmax; the frozen base model without λ."""
    ids = torch.tensor([pair.prompt_ids + response])
    with torch.no_grad():
        if preference is None:
            with model.disable_adapter():
                logits = model(input_ids=ids).logits[0].double()
        else:
            logits = model(input_ids=ids, preference=preference).logits[0].double()
    token_logps = torch.log_softmax(logits[:-1], dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return float(token_logps[len(pair.prompt_ids) - 1 :].sum())


def test_score_pairs_gives_each_pairs_dpo_margin_and_the_sets_accuracy_win_probability_and_mean():
    model = panacea_llama().eval()
    randomize_adapter(model, seed=2, scale=0.5)
    preferences = torch.tensor([[1.0, 0.0], [0.3, 0.7]])
    sets = [PairSet("a", "x", PAIRS, beta=0.5), PairSet("b", "y", OTHER, beta=0.1)]
    results = score_pairs(
        model, sets, preferences, pad_token_id=PAD, batch_size=2, reference_settings={"test": "scorers"}
    )
    for point, preference in enumerate(preferences):
        for pair_set in sets:
            expected = []
            for pair in pair_set.pairs:
                policy = [alone(model, pair, response, preference) for response in (pair.chosen_ids, pair.rejected_ids)]
                reference = [alone(model, pair, response) for response in (pair.chosen_ids, pair.rejected_ids)]
                expected.append(pair_set.beta * ((policy[0] - reference[0]) - (policy[1] - reference[1])))
            scored = results[point][pair_set.name]
            assert scored["values"]["margin"] == pytest.approx(expected, abs=1e-5)
            assert scored["pairs"] == len(expected)
            assert scored["margin"] == pytest.approx(sum(expected) / len(expected), abs=1e-5)
            assert scored["accuracy"] == pytest.approx(sum(m > 0 for m in expected) / len(expected))
            win = sum(1 / (1 + math.exp(-m)) for m in expected) / len(expected)
            assert scored["win_probability"] == pytest.approx(win, abs=1e-6)
    assert results[0]["a/x"]["values"] != results[1]["a/x"]["values"]  # λ moves the margins


def test_at_the_reference_every_margin_is_zero_and_the_win_probability_one_half():
    """The base model (adapter at zero) ties every pair, up to the rounding of two fp32 paths (packed policy rows,
    the reference's one row per response): margins ~0, win probability ½ (accuracy's tie rule: test_bootstrap)."""
    model = panacea_llama(randomize=False, init="lora").eval()  # B = 0: the policy is the reference
    results = score_pairs(
        model,
        [PairSet("a", "x", PAIRS, beta=0.1)],
        torch.tensor([[0.5, 0.5]]),
        pad_token_id=PAD,
        batch_size=2,
        reference_settings={"test": "scorers-reference"},
    )
    scored = results[0]["a/x"]
    assert scored["values"]["margin"] == pytest.approx([0.0] * 3, abs=1e-6)
    assert scored["win_probability"] == pytest.approx(0.5)
