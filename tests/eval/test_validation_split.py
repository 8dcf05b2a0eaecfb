"""`panacea eval --split validation`: tuning numbers from pairs and prompts carved from train, never from test.

The tiny run's data hold train and test pairs; its validation pairs are the train pairs whose prompt falls in
panacea.data's validation fold. The word-level tiny model maps the shipped prompts' words to <unk>, so nothing
from the data reaches the test output.
"""

import gzip
import json
import random
import shutil

import pytest
from panacea.eval import generations as generations_module
from panacea.eval import reward_model as reward_model_module
from panacea.eval.compare import compare_paths, run_results
from panacea.eval.generations import (
    PROMPT_SETS,
    VALIDATION_PROMPT_SETS,
    GenerationsScorer,
    load_prompts,
)
from panacea.eval.scorers import load_pair_sets, validation_sources
from panacea.eval.sweep import evaluate_path
from panacea.training import TrainConfig, train

from panacea._config import dataclass_from_dict
from panacea.data import in_validation_fold, load_pairs
from tests.conftest import tiny_tokenizer
from tests.helpers import config_dict, make_workspace

DIMENSIONS = ("helpful", "harmless")


def write_pairs(path, name: str, count: int = 48) -> None:
    """`count` word-salad pairs, every fourth prompt's pairs in 'test', the rest in 'train'; prompts repeat in twos."""
    rng = random.Random(name)
    with open(path, "w") as handle:
        for index in range(count):
            prompt = f"p{index // 2} " + " ".join(f"w{rng.randrange(4, 64)}" for _ in range(2))
            words = [" ".join(f"w{rng.randrange(4, 64)}" for _ in range(rng.randrange(2, 5))) for _ in range(2)]
            split = "test" if (index // 2) % 4 == 0 else "train"
            record = dict(id=f"{name}{index}", prompt=prompt, chosen=words[0], rejected=words[1], dim=name)
            handle.write(json.dumps({**record, "source": "test", "split": split}) + "\n")


def config_data(root, split: str) -> dict:
    data = config_dict(root, root / f"run-{split}", max_steps=2, save_steps=2)
    data["dimensions"] = [
        {
            "name": name,
            "train": [{"path": str(root / f"{name}.jsonl"), "split": split}],
            "eval": [{"path": str(root / f"{name}.jsonl"), "split": "test"}],
        }
        for name in DIMENSIONS
    ]
    return data


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = make_workspace(tmp_path_factory.mktemp("validation"))
    for name in DIMENSIONS:
        write_pairs(root / f"{name}.jsonl", name)
    return root


@pytest.fixture(scope="module")
def fit_run(workspace):
    """A run trained on split 'fit': what a tuning study scores on validation."""
    train(dataclass_from_dict(TrainConfig, config_data(workspace, "fit"), where="test"))
    return workspace / "run-fit"


@pytest.fixture(autouse=True)
def reward_model_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(reward_model_module, "cache_dir", lambda: tmp_path_factory.getbasetemp() / "cache")


def test_validation_pairs_come_from_train_prompts_in_the_validation_fold_never_from_test(workspace):
    config = dataclass_from_dict(TrainConfig, config_data(workspace, "fit"), where="test")
    pair_sets = load_pair_sets(config, tiny_tokenizer(), "validation")
    assert [s.name for s in pair_sets] == ["helpful/helpful-validation", "harmless/harmless-validation"]
    for pair_set, name in zip(pair_sets, DIMENSIONS, strict=True):
        every = {pair.id: pair for pair in load_pairs(validation_sources(config)[name][0], name, DIMENSIONS)}
        test_ids = {r["id"] for r in map(json.loads, open(workspace / f"{name}.jsonl")) if r["split"] == "test"}
        ids = [pair.id for pair in pair_set.pairs]
        assert ids and not set(ids) & test_ids
        assert all(in_validation_fold(every[pair_id].prompt) for pair_id in ids)
        fit = load_pairs(config.dimensions[DIMENSIONS.index(name)].train[0], name, DIMENSIONS)
        assert not set(ids) & {pair.id for pair in fit}  # never a pair the run trained on


def test_a_run_trained_on_the_validation_prompts_is_refused(workspace):
    config = dataclass_from_dict(TrainConfig, config_data(workspace, "train"), where="test")
    with pytest.raises(ValueError, match=r"dimensions\.0\.train\.0 .*helpful\.jsonl.*split 'train'.*split=fit"):
        validation_sources(config)


def test_eval_on_validation_writes_its_own_folder_and_compare_reads_it(fit_run, tmp_path):
    document = evaluate_path(fit_run, grid_points=3, split="validation", progress=False)
    assert document["split"] == "validation"
    sets = document["scorers"]["pairs"]["settings"]["sets"]
    assert set(sets) == {"helpful/helpful-validation", "harmless/harmless-validation"}
    assert (fit_run / "eval-validation" / "results.json").is_file() and not (fit_run / "eval").exists()
    with pytest.raises(FileNotFoundError, match=r"no eval/results\.json"):
        run_results(fit_run)  # the test split's numbers are not there, and validation's never stand in for them
    shutil.copytree(fit_run, tmp_path / "again")
    comparison = compare_paths([fit_run, tmp_path / "again"], output_dir=tmp_path / "compare", split="validation")
    assert [row["label"] for row in comparison["rows"]] == ["run-fit (panacea)", "again (panacea)"]


def test_validation_prompt_sets_hold_distinct_train_prompts_of_the_fold():
    test_prompts = {r["prompt"] for s in PROMPT_SETS for r in load_prompts(s)}
    for prompt_set in VALIDATION_PROMPT_SETS:
        records = load_prompts(prompt_set)
        prompts = [r["prompt"] for r in records]
        assert len(prompts) == len(set(prompts)) > 50
        assert all(in_validation_fold(prompt) for prompt in prompts)
        assert not set(prompts) & test_prompts
        splits = {r["prompt"]: r["split"] for r in pair_rows(prompt_set.file)}
        assert {splits[prompt] for prompt in prompts} == {"train"}


def test_the_generations_scorer_on_validation_answers_only_validation_sets(fit_run, monkeypatch):
    judges, train_reward_model = [], generations_module.train_reward_model

    def spy(model, tokenizer, dimension, fitted, held_out, **kwargs):
        judges.append((fitted[0], held_out[0]))
        return train_reward_model(model, tokenizer, dimension, fitted, held_out, **kwargs)

    monkeypatch.setattr(generations_module, "train_reward_model", spy)
    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match=r"prompt set\(s\) \['harmbench'\] are not validation sets"):
        GenerationsScorer(tokenizer, DIMENSIONS, {"harmbench": []}, {}, split="validation")
    document = evaluate_path(
        fit_run,
        grid_points=3,
        scorers=["generations"],
        split="validation",
        limit=2,
        max_new_tokens=3,
        batch_size=8,
        progress=False,
    )
    scored = document["scorers"]["generations"]
    assert set(scored["points"][0]["sets"]) == {s.name for s in VALIDATION_PROMPT_SETS}
    assert set(scored["statistics"]) == {
        "refusal_harmful",
        "over_refusal_helpful",
        "loops",
        "cut_off",
        "words_helpful",
        "reward_helpful",
        "reward_harmless",
    }
    assert [(fitted.split, held_out.split) for fitted, held_out in judges] == [("fit", "validation")] * 2


def pair_rows(file: str) -> list[dict]:
    with gzip.open(f"data/{file}", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]
