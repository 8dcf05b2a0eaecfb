"""benchmarks/rl_throughput.py: its options, one token/second accounting for both contenders, and a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from panacea.training import TrainConfig

from tests.conftest import tiny_llama, tiny_tokenizer
from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports _children, as when run
    return load_script(ROOT / "benchmarks" / "rl_throughput.py", monkeypatch)


def test_the_options_default_to_hh_2d_rl_and_refuse_what_cannot_run(bench, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = bench.parse_args([])
    assert (args.steps, args.prompts_per_step, args.k, args.max_new_tokens, args.threads) == (3, 8, 4, 64, 2)
    assert args.micro_batch_size == 8  # hh-2d-rl's, which divides 8 × 4 rollouts
    assert bench.parse_args(["--prompts-per-step", "2", "--k", "2"]).micro_batch_size == 4  # gcd(4, 8)
    for bad in (["--k", "1"], ["--steps", "0"], ["--micro-batch-size", "3"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_the_overrides_pin_one_ppo_epoch_the_callable_reward_and_the_sizes(bench, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = bench.parse_args(["--steps", "2", "--prompts-per-step", "2", "--k", "3", "--max-new-tokens", "8"])
    config = TrainConfig.from_yaml(args.config, bench.overrides(args, 2, Path("/tmp/pool.jsonl")))
    rl = config.rl
    assert (rl.prompts_per_step, rl.rollouts_per_prompt, rl.max_new_tokens, rl.ppo_epochs) == (2, 3, 8, 1)
    assert (config.max_steps, config.micro_batch_size, config.logging_steps) == (3, 2, 1)  # one warm-up step
    assert [dimension.reward for dimension in config.dimensions] == [{"type": "callable", "function": bench.REWARD}] * 2
    assert [source.path for source in rl.prompts] == ["/tmp/pool.jsonl"]


def test_both_contenders_account_one_step_alike_and_the_warm_up_is_left_out(bench):
    """The same step as ours' log.jsonl row and as TRL's timers gives one record; rates by hand."""
    row = {
        "response_length": 10.0,  # 4 rollouts → 40 generated tokens
        "tokens": 200.0,
        "tokens_per_second": 20.0,  # step 10 s
        "rollout_tokens_per_second": 10.0,  # sampling 4 s
        "update_tokens_per_second": 50.0,  # update 4 s
        "scoring_seconds": 0.5,
    }
    timers = {"generated": 40, "trained": 200, "step_s": 10.0, "sampling_s": 4.0, "rollout_s": 6.0, "scoring_s": 0.5}
    step = bench.ours_step(row, rows=4)
    assert step == bench.trl_step(timers)
    assert step == {
        "generated": 40.0,
        "trained": 200.0,
        "step_s": 10.0,
        "sampling_s": 4.0,
        "update_s": 4.0,
        "scoring_s": 0.5,
    }
    warm_up = {**step, "step_s": 1000.0, "sampling_s": 900.0}
    second = {"generated": 20, "trained": 100, "step_s": 5.0, "sampling_s": 2.0, "update_s": 3.0, "scoring_s": 0.1}
    rates = bench.rates([warm_up, step, second])
    assert rates["rollout"] == pytest.approx(60 / 6)  # generated / sampling s
    assert rates["update"] == pytest.approx(300 / 7)  # trained / update s
    assert rates["step"] == pytest.approx((60 + 300) / 15)  # (generated + trained) / step s
    assert (rates["step_s"], rates["other_s"]) == pytest.approx((7.5, 1.0))
    with pytest.raises(ValueError, match="warm-up"):
        bench.rates([step])


def test_the_reward_scores_minus_words_and_records_each_steps_prompts(bench, tmp_path, monkeypatch):
    monkeypatch.setenv(bench.FOLDER_ENV, str(tmp_path))
    for _ in range(2):  # one step: m = 2 dimensions, each scoring P = 2 prompts × K = 2 responses
        assert bench.words_reward(["p", "p", "q", "q"], ["a b", "", "c", "d e f"]) == [-2.0, 0.0, -1.0, -3.0]
    conversational = bench.trl_reward(
        [[{"role": "user", "content": "r"}]] * 2, [[{"role": "assistant", "content": "x y"}]] * 2, trainer_state=None
    )
    assert conversational == [-2.0, -2.0]
    bench.trl_reward(["r", "r"], ["x", "y z"])
    assert bench.scored_prompts(tmp_path, dimensions=2, k=2) == [["p", "q"], ["r"]]


def test_a_tiny_run_of_both_contenders_trains_the_same_prompts_with_the_same_lora_size(bench, tmp_path):
    """The whole script on a tiny random Llama: two children each, a report, the JSON of --out."""
    model = tmp_path / "model"
    tiny_llama().save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 7} w{i + 3}"}) + "\n" for i in range(4, 20)))
    dimension = {"objective": "rl", "reward": {"type": "length"}}
    config = {
        "device": "cpu",
        "adapter": {"svd_rank": 2, "init": "lora"},
        "dimensions": [{"name": "a", **dimension}, {"name": "b", **dimension}],
        "rl": {"prompts": [{"path": str(prompts)}]},
        "max_prompt_length": 8,
        "micro_batch_size": 4,
    }
    (tmp_path / "config.yaml").write_text(json.dumps(config))
    out = tmp_path / "out.json"
    bench.main(
        ["--config", str(tmp_path / "config.yaml"), "--model", str(model), "--steps", "1", "--prompts-per-step", "2"]
        + ["--k", "2", "--max-new-tokens", "4", "--repeats", "1", "--threads", "1", "--out", str(out)]
    )
    result = json.loads(out.read_text())
    ours, theirs = result["results"]["ours"][0], result["results"]["trl"][0]
    assert ours["prompts"] == theirs["prompts"] == result["plan"]["order"]  # 2 steps × 2 prompts, same order
    assert len(ours["prompts"]) == 2 and all(len(step) == 2 for step in ours["prompts"])
    assert theirs["different_prompt_ids"] == 0
    layers = 2 * 7  # q, k, v, o, gate, up, down in 2 layers: same A and B, ours adds σ (k = 2) and s per layer
    assert ours["trainable"] - theirs["trainable"] == layers * 3
    for run in (ours, theirs):
        assert len(run["steps"]) == 2
        assert all(0 < step["generated"] <= 2 * 2 * 4 and step["trained"] > step["generated"] for step in run["steps"])
    assert set(result["summary"]["ratio"]) == {"rollout", "update", "step", "peak_rss"}
