"""The generations scorer on a tiny run: every prompt set scored per λ, objectives per dimension, cache and outputs.

The prompts are the shipped sets (data/prompts); the tiny word-level model maps their words to <unk> and
answers in word salad, so nothing from the data reaches the test output.
"""

import json
import random

import pytest
import torch
from panacea.eval import reward_model as reward_model_module
from panacea.eval.generations import PROMPT_SETS, GenerationsScorer, load_prompts
from panacea.eval.sweep import evaluate_path
from panacea.training import TrainConfig, train

from panacea._config import dataclass_from_dict
from tests.conftest import panacea_llama, tiny_tokenizer
from tests.helpers import config_dict, make_workspace


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run over dimensions helpful and harmless, each file with train and test pairs."""
    root = tmp_path_factory.mktemp("generations")
    workspace = make_workspace(root)
    rng = random.Random(1)
    for name in ("helpful", "harmless"):
        with open(root / f"{name}.jsonl", "w") as handle:
            for index in range(24):
                words = [" ".join(f"w{rng.randrange(4, 64)}" for _ in range(rng.randrange(2, 6))) for _ in range(3)]
                record = dict(id=f"{name}{index}", prompt=words[0], chosen=words[1], rejected=words[2], dim=name)
                handle.write(json.dumps({**record, "source": "test", "split": "test" if index % 4 == 0 else "train"}))
                handle.write("\n")
    data = config_dict(workspace, root / "run", max_steps=2, save_steps=2)
    data["dimensions"] = [
        {
            "name": name,
            "train": [{"path": str(root / f"{name}.jsonl")}],
            "eval": [{"path": str(root / f"{name}.jsonl")}],
        }
        for name in ("helpful", "harmless")
    ]
    train(dataclass_from_dict(TrainConfig, data, where="test"))
    return root / "run"


@pytest.fixture(autouse=True)
def reward_model_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(reward_model_module, "cache_dir", lambda: tmp_path_factory.getbasetemp() / "cache")


def test_generations_score_every_set_and_every_dimension(run_dir):
    document = evaluate_path(
        run_dir, grid_points=3, scorers=["generations"], limit=2, max_new_tokens=4, batch_size=8, progress=False
    )
    scored = document["scorers"]["generations"]
    assert len(scored["points"]) == 3
    for point in scored["points"]:
        assert set(point["objectives"]) == {"helpful", "harmless"}
        assert set(point["sets"]) == {s.name for s in PROMPT_SETS}
        for values in point["sets"].values():
            assert values["prompts"] == 2 and 0 <= values["refusal"] <= 1 and values["tokens"] >= 0
        assert "reward_helpful" in point["sets"]["mt_bench"] and "reward_harmless" in point["sets"]["harmbench"]
        assert "reward_harmless" not in point["sets"]["mt_bench"]
        assert "responses" not in point  # answers stay in the cache files, out of results.json
    assert set(scored["reward_models"]) == {"helpful", "harmless"}
    assert 0 <= scored["reward_models"]["helpful"]["test_accuracy"] <= 1
    assert scored["refusal_detector_xstest"]["test"] >= 0.85
    assert scored["decoding"] == {"do_sample": False, "max_new_tokens": 4, "chat_template": True}
    cached = json.loads(next((run_dir / "eval" / "cache").glob("generations-*/0.5000-0.5000.json")).read_text())
    assert [len(answers) for answers in cached["responses"].values()] == [2] * len(PROMPT_SETS)


def test_the_concise_objective_is_minus_the_mean_words_of_the_helpful_answers():
    model, tokenizer = panacea_llama(), tiny_tokenizer()
    prompts = {"helpful_test": [{"id": "p1", "prompt": "w5 w6"}, {"id": "p2", "prompt": "w7"}]}
    scorer = GenerationsScorer(tokenizer, ["concise"], prompts, {}, max_new_tokens=5)
    (point,) = scorer.score(model, torch.tensor([[0.5, 0.5]]))
    words = [len(answer["text"].split()) for answer in point["responses"]["helpful_test"]]
    assert point["objectives"]["concise"] == pytest.approx(-sum(words) / 2)
    assert point["sets"]["helpful_test"]["words"] == pytest.approx(sum(words) / 2)


def test_limit_keeps_evenly_spaced_prompts():
    mt_bench = next(s for s in PROMPT_SETS if s.name == "mt_bench")
    every = load_prompts(mt_bench)
    assert [r["id"] for r in load_prompts(mt_bench, 3)] == [every[0]["id"], every[40]["id"], every[79]["id"]]
    safe = next(s for s in PROMPT_SETS if s.name == "xstest_safe")
    assert len(load_prompts(safe)) == 250


def test_an_unknown_dimension_is_refused():
    with pytest.raises(ValueError, match=r"no prompt sets for dimension\(s\) \['kind'\]"):
        GenerationsScorer(tiny_tokenizer(), ["helpful", "kind"], {}, {})
