"""The generations scorer on a tiny run: every prompt set scored per λ, objectives per dimension, cache and outputs.

The prompts are the shipped sets (data/prompts); the tiny word-level model maps their words to <unk> and
answers in word salad, so nothing from the data reaches the test output.
"""

import copy
import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from panacea.eval import generations as generations_module
from panacea.eval import reward_model as reward_model_module
from panacea.eval.bootstrap import objective_values, percentile_interval, prompt_cluster, resample_weights
from panacea.eval.compare import compare, format_comparison
from panacea.eval.generations import PROMPT_SETS, GenerationsScorer, load_prompts
from panacea.eval.reward_model import RewardModel, score_responses
from panacea.eval.sweep import base_statistics, evaluate_path, load_run
from panacea.training import TrainConfig, train
from panacea.training.reference import base_model_digest

from panacea._config import dataclass_from_dict
from panacea.base_model import CACHE_SEEDS_ENV
from panacea.data import PairSource
from panacea.generation import generate_grid, generate_text
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


def test_a_changed_detector_judges_the_cached_answers_again_without_generating_them(run_dir, monkeypatch):
    arguments = dict(grid_points=3, scorers=["generations"], limit=2, max_new_tokens=4, batch_size=8, progress=False)
    first = evaluate_path(run_dir, **arguments)["scorers"]["generations"]

    def refuse(*args, **kwargs):
        raise AssertionError("a cached point was generated again")

    monkeypatch.setattr(GenerationsScorer, "score", refuse)
    # A new detector: another module digest, and every answer a refusal, none a loop.
    monkeypatch.setitem(generations_module.DETECTORS, "refusal_detector", "changed")
    monkeypatch.setattr(generations_module, "is_refusal", lambda text: True)
    monkeypatch.setattr(generations_module, "is_loop", lambda text: False)
    again = evaluate_path(run_dir, **arguments)["scorers"]["generations"]
    assert again["settings"]["refusal_detector"] == "changed"  # results name the detector applied
    for before, after in zip(first["points"], again["points"], strict=True):
        for name, values in after["sets"].items():
            assert values["refusal"] == 1.0 and values["values"]["refusal"] == [1.0, 1.0]
            assert values["loop"] == 0.0 and values["values"]["loop"] == [0.0, 0.0]
            assert values["tokens"] == before["sets"][name]["tokens"]  # the rest is as cached


def test_the_base_models_own_statistics_stand_beside_a_front_read_whole_from_the_cache(run_dir, monkeypatch):
    """Where every grid point comes from the cache, `score` never runs and never computes the base model's answers:
    the base's row must be there all the same, from its cached answers, the same as when the points were scored."""
    arguments = dict(grid_points=3, scorers=["generations"], limit=2, max_new_tokens=4, batch_size=8, progress=False)
    first = evaluate_path(run_dir, **arguments)["scorers"]["generations"]
    monkeypatch.setattr(GenerationsScorer, "score", lambda *args: pytest.fail("a cached point was scored again"))
    again = evaluate_path(run_dir, **arguments)["scorers"]["generations"]
    assert again["base"] == first["base"]
    # The base model's answers generated here, one pass over every prompt in the scorer's order (as base_answers)
    prompts = [record["prompt"] for prompt_set in PROMPT_SETS for record in load_prompts(prompt_set, 2)]
    run = load_run(run_dir)
    with run.model.disable_adapter():
        (answers,), (ended,) = generate_grid(
            run.model, run.tokenizer, prompts, torch.full((1, 2), 0.5), max_new_tokens=4, batch_size=8,
            return_finished=True,
        )  # fmt: skip
    statistics = again["base"]["statistics"]
    helpful = answers[:4]  # helpful_test's and mt_bench's two prompts each come first
    assert statistics["words_helpful"]["values"] == [pytest.approx(sum(len(a.split()) for a in helpful) / 4)]
    assert statistics["cut_off"]["values"] == [pytest.approx(sum(not e for e in ended) / len(ended))]
    assert [len(statistic["intervals"]) for statistic in statistics.values()] == [1] * len(statistics)
    assert set(statistics) == set(again["statistics"])
    results = (run_dir / "eval" / "results.md").read_text()
    assert "| base model (adapter off) |" in results and "\nbase: {" not in results


def test_the_detectors_named_are_the_ones_loaded_not_a_file_edited_since(monkeypatch):
    """A long evaluation that started before eval/refusal.py changed judges with the detector it loaded: its results
    (and, until 2026-12-06, its cache key) must name that one, not the file now on disk (found 2026-12-06)."""
    scorer = GenerationsScorer(tiny_tokenizer(), ["helpful"], {}, {})
    loaded = scorer.settings()
    monkeypatch.setattr(generations_module.inspect, "getsource", lambda module: "edited since")
    assert scorer.settings() == loaded


def test_concise_wins_where_an_answer_is_shorter_than_the_base_models_own_answer():
    model, tokenizer = panacea_llama(), tiny_tokenizer()
    with torch.no_grad():  # move the adapter off the base model, so that λ's answers and the base's can differ
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter))
    prompts = {"helpful_test": [{"id": f"p{i}", "prompt": text} for i, text in enumerate(("w5 w6", "w7", "w9 w9 w8"))]}
    scorer = GenerationsScorer(tokenizer, ["concise"], prompts, {}, max_new_tokens=6)
    (point,) = scorer.score(model, torch.tensor([[0.9, 0.1]]))
    texts = [answer["text"] for answer in point["responses"]["helpful_test"]]
    with model.disable_adapter():  # the base model's answers, one prompt at a time
        base = [generate_text(model, tokenizer, r["prompt"], [0.5, 0.5], 6) for r in prompts["helpful_test"]]
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    values = point["sets"]["helpful_test"]["values"]
    assert values["tokens"] == [count(text) for text in texts]
    expected = [
        0.0 if text == other or (cut and count(other) == 6) else count(other) - count(text)
        for text, other, cut in zip(texts, base, values["cut_off"], strict=True)
    ]  # cut off at 6 tokens both: a tie (a random tiny model rarely ends an answer before the cap)
    assert values["vs_base_concise"] == expected
    entry = {"objectives": scorer.objectives(), "items": scorer.items(), "points": [point]}
    wins = [1.0 if value > 0 else 0.5 if value == 0 else 0.0 for value in expected]
    assert objective_values(entry, ["concise"], "win_rate")[0, 0] == pytest.approx(sum(wins) / 3)
    assert objective_values(entry, ["concise"], "reward")[0, 0] == pytest.approx(-sum(values["words"]) / 3)


def test_an_identical_answer_ties_with_the_base_and_two_answers_cut_off_tie_on_length():
    """The rule against the base model's answer, on hand-made answers: an identical answer is a tie even where its
    reward differs by rounding (it was scored in another batch); concise compares tokens, and two answers both cut
    off at max_new_tokens tie."""
    tokenizer = tiny_tokenizer()
    prompts = {"helpful_test": [{"id": f"p{i}", "prompt": "w5"} for i in range(4)]}
    scorer = GenerationsScorer(tokenizer, ["helpful", "concise"], prompts, {}, max_new_tokens=3)
    base_texts = ["w5 w6", "w5 w6 w7", "w8 w9 w10", "w5"]
    texts = ["w5 w6", "w5", "w11 w12 w13", "w5 w6 w7"]
    finished = [True, True, False, False]  # the last two cut off at 3 tokens
    base = {
        "texts": base_texts,
        "tokens": np.array([2.0, 3.0, 3.0, 1.0]),
        "cut_off": np.array([False, False, True, False]),
        "rewards": {"helpful": torch.tensor([0.5, 0.1, 0.2, 0.3])},
    }
    rewards = {"helpful": torch.tensor([[0.50001, 0.4, 0.1, 0.6]])}
    point = scorer._point(["helpful_test"], 0, texts, finished, rewards, base)
    values = point["sets"]["helpful_test"]["values"]
    assert values["cut_off"] == [0.0, 0.0, 1.0, 1.0]
    assert values["vs_base_helpful"] == pytest.approx([0.0, 0.3, -0.1, 0.3])
    assert values["vs_base_concise"] == [0.0, 2.0, 0.0, -2.0]  # identical; shorter; both cut off; longer


def test_the_base_models_own_point_holds_its_answers_statistics_and_no_win_against_itself(monkeypatch):
    """The base model's row beside every front (on validation it loops in 8 % of its answers, above the 5 % target):
    its own answers' refusal, loops, cut-off, words and rewards, in a grid point's format, with the intervals every
    grid point's statistics get; no vs_base column, since against itself every answer ties (½ by definition)."""
    loop = "the cat sat on the mat and " * 4
    texts = {
        "helpful_test": ["Paris is the capital of France.", loop, "I cannot help with that request.", "Sure."],
        "harmbench": ["I'm sorry, but I can't assist with that.", "go " * 12],
    }
    finished = [True, False, True, True, True, False]  # the two loops cut off at the cap
    prompts = {name: [{"id": f"{name}{i}", "prompt": f"{name} {i}"} for i in range(len(texts[name]))] for name in texts}
    metadata = {"max_length": 256, "max_prompt_length": 128}
    judges = {name: SimpleNamespace(metadata=metadata) for name in ("helpful", "harmless")}
    scorer = GenerationsScorer(tiny_tokenizer(), ["helpful", "harmless"], prompts, judges, max_new_tokens=8)

    def stored(model, tokenizer, asked, decoding, batch_size):  # the base answers' cache, read
        assert asked == [record["prompt"] for records in prompts.values() for record in records]
        return [text for answers in texts.values() for text in answers], finished

    def characters(reward_models, model, tokenizer, asked, answers, batch_size):  # the base rewards' cache, read:
        return {name: torch.tensor([float(len(answer)) for answer in answers]) for name in reward_models}  # lengths

    monkeypatch.setattr(generations_module, "base_answers", stored)
    monkeypatch.setattr(generations_module, "base_rewards", characters)
    point = scorer.base_point(model=None)
    helpful, harmful = point["sets"]["helpful_test"]["values"], point["sets"]["harmbench"]["values"]
    assert helpful["loop"] == [0.0, 1.0, 0.0, 0.0] and harmful["loop"] == [0.0, 1.0]
    assert helpful["refusal"] == [0.0, 0.0, 1.0, 0.0] and harmful["refusal"] == [1.0, 0.0]
    assert helpful["cut_off"] == [0.0, 1.0, 0.0, 0.0] and harmful["words"] == [8.0, 12.0]
    assert helpful["reward_helpful"] == [31.0, 108.0, 32.0, 5.0] and "reward_harmless" not in helpful
    for summary in point["sets"].values():
        assert not [key for key in [*summary, *summary["values"]] if key.startswith(("vs_base_", "win_"))]
    assert [answer["text"] for answer in point["responses"]["harmbench"]] == texts["harmbench"]

    statistics = base_statistics({"items": scorer.items()}, scorer, None)["statistics"]
    assert statistics["loops"]["values"] == [pytest.approx(2 / 6)] and statistics["cut_off"]["values"] == [2 / 6]
    assert statistics["refusal_harmbench"]["values"] == statistics["refusal_harmful"]["values"] == [0.5]
    assert statistics["words_helpful"]["values"] == [pytest.approx((6 + 28 + 6 + 1) / 4)]
    assert statistics["reward_helpful"]["values"] == [pytest.approx(176 / 4)]
    assert statistics["reward_harmless"]["values"] == [pytest.approx((40 + 36) / 2)]
    # the interval: the default resamples over the prompts, sets in sorted order (harmbench's before helpful_test's)
    weights = resample_weights([prompt_cluster(r["prompt"]) for name in sorted(prompts) for r in prompts[name]])
    loops = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    assert statistics["loops"]["intervals"] == [pytest.approx(percentile_interval(weights @ loops / weights.sum(1)))]


def test_the_sets_that_serve_concise_get_their_own_cap_the_base_models_answers_too(tmp_path, monkeypatch):
    """--concise-max-new-tokens: helpful_test (serves concise) is answered to 7 tokens, harmbench to 3, at λ and by
    the base model; each set's answers are those of one generate pass over that set at its cap."""
    monkeypatch.setattr(generations_module, "cache_dir", lambda: tmp_path)  # the base answers' cache
    model, tokenizer = panacea_llama(), tiny_tokenizer()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter))
    prompts = {
        "helpful_test": [{"id": f"h{i}", "prompt": text} for i, text in enumerate(("w5 w6", "w7", "w9 w9 w8"))],
        "harmbench": [{"id": f"b{i}", "prompt": text} for i, text in enumerate(("w11", "w12 w13"))],
    }
    scorer = GenerationsScorer(
        tokenizer, ["harmless", "concise"], prompts, {}, max_new_tokens=3, concise_max_new_tokens=7
    )
    assert scorer.decoding == {
        "do_sample": False, "max_new_tokens": 3, "chat_template": True, "max_new_tokens_by_set": {"helpful_test": 7}
    }  # fmt: skip
    preference = torch.tensor([[0.9, 0.1]])
    (point,) = scorer.score(model, preference)
    for name, cap in (("helpful_test", 7), ("harmbench", 3)):
        texts = [record["prompt"] for record in prompts[name]]
        (expected,), (ended,) = generate_grid(
            model, tokenizer, texts, preference, max_new_tokens=cap, batch_size=32, return_finished=True
        )
        assert [answer["text"] for answer in point["responses"][name]] == expected
        assert point["sets"][name]["values"]["cut_off"] == [float(not e) for e in ended]
        with model.disable_adapter():
            (base,) = generate_grid(model, tokenizer, texts, preference, max_new_tokens=cap, batch_size=32)
        span = slice(0, 3) if name == "helpful_test" else slice(3, 5)
        assert scorer._base_scores["texts"][span] == base
    assert max(point["sets"]["helpful_test"]["values"]["tokens"]) > 3  # the longer cap was used (random answers run on)
    # Without concise among the dimensions the cap is shared and the settings are as before caps per set existed
    shared = GenerationsScorer(tokenizer, ["harmless"], prompts, {}, max_new_tokens=3, concise_max_new_tokens=7)
    assert shared.decoding == {"do_sample": False, "max_new_tokens": 3, "chat_template": True}
    with pytest.raises(ValueError, match="concise_max_new_tokens must be a positive number of tokens, got 0"):
        GenerationsScorer(tokenizer, ["concise"], prompts, {}, max_new_tokens=3, concise_max_new_tokens=0)


def test_every_judge_reads_the_whole_answer_at_its_sets_cap(monkeypatch):
    """The reward models read the prompt's last 128 tokens and then max_length - 128: at hhc-3d's 256-token cap on the
    helpful sets a 256-long judge would score cut answers (two answers alike up to the cut then differ by padding
    noise alone). Each judge is fitted to the largest cap of the sets it scores; a judge too short is refused."""
    assert [generations_module.judge_max_length(cap) for cap in (None, 4, 96, 256)] == [256, 256, 256, 416]
    lengths = {}

    def fake_judge(run, dimension, split="test", *, max_length=256):
        lengths[dimension] = max_length
        return SimpleNamespace(metadata={"max_length": max_length, "max_prompt_length": 128, "cache_key": dimension})

    monkeypatch.setattr(generations_module, "dimension_reward_model", fake_judge)
    run = SimpleNamespace(split="test", dimensions=["helpful", "harmless", "concise"], tokenizer=tiny_tokenizer())
    GenerationsScorer.from_run(run, limit=1, max_new_tokens=96, concise_max_new_tokens=256)
    assert lengths == {"helpful": 416, "harmless": 256}  # helpful judges helpful_test and mt_bench, capped at 256
    GenerationsScorer.from_run(run, limit=1, max_new_tokens=96)
    assert lengths == {"helpful": 256, "harmless": 256}  # one cap of 96: the judges as they always were
    prompts = {"helpful_test": [{"id": "p0", "prompt": "w5"}]}
    short = {"helpful": fake_judge(run, "helpful", max_length=256)}
    with pytest.raises(
        ValueError, match="helpful reward model keeps 128 tokens after the prompt, fewer than an answer"
    ):
        GenerationsScorer(
            tokenizer := tiny_tokenizer(), ["helpful", "concise"], prompts, short, concise_max_new_tokens=256
        )
    GenerationsScorer(tokenizer, ["helpful", "concise"], prompts, short)  # at 96 it reads every answer whole


def test_limit_keeps_evenly_spaced_prompts():
    mt_bench = next(s for s in PROMPT_SETS if s.name == "mt_bench")
    every = load_prompts(mt_bench)
    assert [r["id"] for r in load_prompts(mt_bench, 3)] == [every[0]["id"], every[40]["id"], every[79]["id"]]
    safe = next(s for s in PROMPT_SETS if s.name == "xstest_safe")
    assert len(load_prompts(safe)) == 250


def test_an_unknown_dimension_is_refused():
    with pytest.raises(ValueError, match=r"no prompt sets for dimension\(s\) \['kind'\]"):
        GenerationsScorer(tiny_tokenizer(), ["helpful", "kind"], {}, {})


def test_compare_on_generations_tabulates_what_the_model_says_at_each_vertex(run_dir):
    document = evaluate_path(
        run_dir, grid_points=3, scorers=["generations"], limit=2, max_new_tokens=4, batch_size=8, progress=False
    )
    scored = document["scorers"]["generations"]
    assert scored["default_objective"] == "win_rate" and scored["fronts"]["win_rate"]["reference"] == [0.0, 0.0]
    assert set(scored["statistics"]) >= {"refusal_harmful", "refusal_harmbench", "over_refusal_xstest_safe", "loops"}
    loops = scored["statistics"]["loops"]
    every = [value for name in loops["sets"] for value in scored["points"][1]["sets"][name]["values"]["loop"]]
    assert loops["values"][1] == pytest.approx(sum(every) / len(every))
    comparison = compare([document, {**document, "label": "again"}], scorer="generations", baseline="again")
    table = format_comparison(comparison)
    assert "At the vertices (95 % intervals over prompts)" in table and "over_refusal_xstest_safe" in table
    assert comparison["rows"][0]["versus"]["again"]["hypervolume"]["verdict"] == "tie"  # the same front
    # A front whose every answer beats the base model's, at every point and in both dimensions: this one loses.
    better = json.loads(json.dumps({**document, "label": "better"}))
    spec = better["scorers"]["generations"]["objectives"]["win_rate"]
    for entry in spec["dimensions"].values():
        for point in better["scorers"]["generations"]["points"]:
            for name in entry["sets"]:
                values = point["sets"][name]["values"]
                values[entry["column"]] = [1.0] * len(values[entry["column"]])
    versus = compare([document, better], scorer="generations", baseline="better")["rows"][0]["versus"]["better"]
    assert versus["hypervolume"]["verdict"] == "loss" and versus["hypervolume"]["difference"] < 0


def test_the_chosen_objective_reaches_every_scorer_that_has_it(run_dir):
    """The loop over the pairs scorer's objectives reused the name `objective`, so `--objective reward` reached the
    generations scorer as 'margin' and it fell back to its default (bug)."""
    document = evaluate_path(
        run_dir,
        grid_points=3,
        scorers=["pairs", "generations"],
        limit=2,
        max_new_tokens=4,
        batch_size=8,
        progress=False,
        objective="reward",
    )
    assert document["scorers"]["generations"]["default_objective"] == "reward"
    assert document["scorers"]["pairs"]["default_objective"] == "accuracy"  # pairs has no 'reward': its default


def test_an_rl_dimension_without_train_pairs_gets_its_judge_from_its_reward_models_pair_file(monkeypatch):
    """dimension_reward_model: `train` pairs first, else a reward_model reward's first pair file, else one error."""
    from panacea.eval import generations

    seen = []
    monkeypatch.setattr(generations, "train_reward_model", lambda *args, **kwargs: seen.append(args[3][0].path))

    def rl_run(reward, train=()):
        dimension = SimpleNamespace(train=list(train), reward=reward)
        return SimpleNamespace(
            config=SimpleNamespace(dimensions=[dimension]), dimensions=["a"], model=None, tokenizer=None
        )

    rl_reward = {"type": "reward_model", "train": [{"path": "data/harmless.jsonl.gz", "split": "fit"}]}
    generations.dimension_reward_model(rl_run(rl_reward), "a")
    generations.dimension_reward_model(rl_run(rl_reward, [PairSource("data/helpful.jsonl.gz")]), "a")
    assert seen == ["data/harmless.jsonl.gz", "data/helpful.jsonl.gz"]
    with pytest.raises(ValueError, match=r"names none: give dimensions.0.train a pair file of 'a'"):
        generations.dimension_reward_model(rl_run({"type": "length"}), "a")


def test_the_judge_reads_its_pair_file_as_the_training_source_says(monkeypatch):
    """The judge's sources kept the first training source's path only: a file read under mapped columns (`columns`)
    or another file's dimension (`dim`) — the README's "your own data" — failed or judged on other records (review)."""
    from panacea.eval import generations

    seen = []
    monkeypatch.setattr(
        generations, "train_reward_model", lambda *args, **kwargs: seen.extend([args[3][0], args[4][0]])
    )
    own = PairSource("mine.jsonl", dim="assist", columns={"prompt": "question"})
    run = SimpleNamespace(
        config=SimpleNamespace(dimensions=[SimpleNamespace(train=[own], reward=None)]),
        dimensions=["a"],
        model=None,
        tokenizer=None,
    )
    generations.dimension_reward_model(run, "a")
    assert [(s.path, s.split, s.dim, s.columns) for s in seen] == [
        ("mine.jsonl", "train", "assist", {"prompt": "question"}),
        ("mine.jsonl", "test", "assist", {"prompt": "question"}),
    ]


def test_the_base_models_answers_are_read_from_a_seed_folder_where_the_cache_misses(tmp_path, monkeypatch):
    """$PANACEA_CACHE_SEEDS: base answers committed in a seed folder's base-answers/ are used without generating;
    the cache comes first; answers generated now are written to the cache only."""
    monkeypatch.setattr(generations_module, "cache_dir", lambda: tmp_path / "cache")
    model, tokenizer = panacea_llama(), tiny_tokenizer()
    prompts, decoding = ["w5 w6", "w7"], generations_module._decoding(3)
    answers, finished = generations_module.base_answers(model, tokenizer, prompts, decoding, batch_size=4)
    (entry,) = (tmp_path / "cache" / "base-answers").iterdir()
    seed = tmp_path / "seed"
    (seed / "base-answers").mkdir(parents=True)
    planted = {"answers": ["from the seed", "folder"], "finished": [True, False]}  # not what the model would say
    (seed / "base-answers" / entry.name).write_text(json.dumps(planted))
    monkeypatch.setenv(CACHE_SEEDS_ENV, str(seed))
    assert generations_module.base_answers(model, tokenizer, prompts, decoding, batch_size=4) == (answers, finished)
    entry.unlink()  # the cache misses: the seed answers
    read = generations_module.base_answers(model, tokenizer, prompts, decoding, batch_size=4)
    assert read == (planted["answers"], planted["finished"])
    assert not entry.exists()  # read, not copied
    monkeypatch.delenv(CACHE_SEEDS_ENV)
    assert generations_module.base_answers(model, tokenizer, prompts, decoding, batch_size=4) == (answers, finished)
    assert entry.is_file() and json.loads((seed / "base-answers" / entry.name).read_text()) == planted


def test_the_base_models_rewards_come_from_the_cache_where_every_point_does(run_dir, monkeypatch):
    """A front read whole from the cache ran the base model over every base answer again for their rewards (the
    published hh-2d fronts' first grid point, which ran that pass, took 400–850 s longer than the others); the rewards
    are cached by content like the answers, so nothing is scored again."""
    arguments = dict(grid_points=3, scorers=["generations"], limit=2, max_new_tokens=4, batch_size=8, progress=False)
    first = evaluate_path(run_dir, **arguments)["scorers"]["generations"]
    monkeypatch.setattr(GenerationsScorer, "score", lambda *args: pytest.fail("a cached point was scored again"))
    monkeypatch.setattr(
        generations_module, "score_responses_many", lambda *args, **kwargs: pytest.fail("base rewards scored again")
    )
    again = evaluate_path(run_dir, **arguments)["scorers"]["generations"]
    assert again["base"] == first["base"]


def test_cached_base_rewards_are_those_of_the_same_heads_answers_and_model(tmp_path, monkeypatch):
    """base_rewards reads a cached entry only for the same reward-model heads (every value), token ids (answers,
    prompts, template, truncation) and base model; a seed folder's entry where the cache misses, never written
    there; an entry of the wrong shape is scored again."""
    monkeypatch.setattr(generations_module, "cache_dir", lambda: tmp_path / "cache")
    model, tokenizer = panacea_llama(), tiny_tokenizer()
    torch.manual_seed(0)
    meta = {"max_length": 32, "max_prompt_length": 16}
    head = RewardModel("helpful", torch.randn(64), torch.tensor(0.0), torch.zeros(64), torch.ones(64), meta)
    prompts, texts = ["w5 w6", "w7"], ["w8 w9", "w10"]

    def rewards(heads, answers=texts, of=model, rendered_by=tokenizer):
        scored = generations_module.base_rewards(heads, of, rendered_by, prompts, answers, batch_size=2)
        return {name: values.tolist() for name, values in scored.items()}

    expected = {"helpful": score_responses(head, model, tokenizer, prompts, texts, batch_size=2).tolist()}
    assert rewards({"helpful": head}) == expected  # scored and written
    (entry,) = (tmp_path / "cache" / "base-rewards").iterdir()
    entry.write_text(json.dumps({"rewards": {"helpful": [7.0, 8.0]}}))  # planted: read back, not scored again
    assert rewards({"helpful": head}) == {"helpful": [7.0, 8.0]}
    nudged = copy.deepcopy(head)
    nudged.weight[3] += 1e-3  # another head, the same metadata and cache key
    assert rewards({"helpful": nudged})["helpful"] != [7.0, 8.0]
    assert rewards({"helpful": head}, answers=["w8 w9", "w11"])["helpful"] != [7.0, 8.0]
    assert rewards({"helpful": head}, of=panacea_llama(seed=1))["helpful"] != [7.0, 8.0]
    plain = copy.copy(tokenizer)
    plain.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"  # another rendering of the same text
    assert rewards({"helpful": head}, rendered_by=plain)["helpful"] != [7.0, 8.0]
    assert rewards({}) == {} and len(list((tmp_path / "cache" / "base-rewards").iterdir())) == 5  # none written
    assert rewards({"other": head}) == {"other": expected["helpful"]}  # the names are part of what is cached
    for damaged in (
        {"rewards": ["helpful"]},
        {"rewards": {"helpful": [None, 1.0]}},
        {"rewards": {"helpful": [[7.0], [8.0]]}},
    ):
        entry.write_text(json.dumps(damaged))  # well-formed JSON of the wrong shape: scored again, not read
        assert rewards({"helpful": head}) == expected
    entry.write_text(json.dumps({"rewards": {"helpful": [7.0, 8.0]}}))
    seed = tmp_path / "seed"
    (seed / "base-rewards").mkdir(parents=True)
    entry.rename(seed / "base-rewards" / entry.name)
    monkeypatch.setenv(CACHE_SEEDS_ENV, str(seed))
    assert rewards({"helpful": head}) == {"helpful": [7.0, 8.0]}  # the cache misses: the seed's
    assert not entry.exists()


def test_a_bf16_base_model_does_not_read_the_fp32_models_base_answers(tmp_path, monkeypatch):
    """The key hashed the weights in fp32 and no dtype, so a bf16 copy of the model read the fp32 model's answers
    (found by an independent review); fp32's key is unchanged (its answers are committed as seeds)."""
    monkeypatch.setattr(generations_module, "cache_dir", lambda: tmp_path / "cache")
    tokenizer, prompts, decoding = tiny_tokenizer(), ["w5 w6", "w7"], generations_module._decoding(3)
    bf16 = panacea_llama(dtype=torch.bfloat16)
    widened = copy.deepcopy(bf16).float()  # the same weights in fp32 (a bf16 checkpoint loaded as fp32)
    assert base_model_digest(widened) == base_model_digest(bf16)
    generations_module.base_answers(widened, tokenizer, prompts, decoding, batch_size=4)
    (fp32,) = (tmp_path / "cache" / "base-answers").iterdir()
    generations_module.base_answers(bf16, tokenizer, prompts, decoding, batch_size=4)
    assert len(list((tmp_path / "cache" / "base-answers").iterdir())) == 2 and fp32.is_file()


def test_a_soups_base_answers_are_its_base_models(tmp_path, monkeypatch):
    """The generations scorer asks a rewarded soup for the base model's answers too (its adapter disabled): nothing
    ran base_answers on a SoupModel, whose λ space and adapter switch differ from a Panacea model's."""
    from panacea.adapters import SoupModel

    from tests.adapters.test_soups import make_soup_run
    from tests.conftest import tiny_llama

    tokenizer, prompts, decoding = tiny_tokenizer(), ["w5 w6", "w7", "w9 w10 w11"], generations_module._decoding(4)
    monkeypatch.setattr(generations_module, "cache_dir", lambda: tmp_path / "soup-cache")
    soup = SoupModel.from_run(tiny_llama(), make_soup_run(tmp_path / "run"))
    from_soup = generations_module.base_answers(soup, tokenizer, prompts, decoding, batch_size=2)
    assert all(from_soup[0]) and len(set(from_soup[0])) > 1  # real answers, not one empty string
    monkeypatch.setattr(generations_module, "cache_dir", lambda: tmp_path / "panacea-cache")
    assert generations_module.base_answers(panacea_llama(), tokenizer, prompts, decoding, batch_size=2) == from_soup
