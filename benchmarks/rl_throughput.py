"""Our RL step vs TRL's RLOOTrainer + a peft LoRA, measured side by side in one run on the embedded model.

Both train on rollouts of the same prompts with the same settings, all read from one TrainConfig (default
configs/hh-2d-rl.yaml, with this script's overrides): K responses per prompt, `--prompts-per-step` prompts a
step, at most `--max-new-tokens` new tokens at the config's temperature and top-p, a k1 KL penalty in the
reward against the adapter disabled (β = rl.kl_coef), one PPO epoch (REINFORCE-RLOO: one optimizer update per
rollout batch), the same micro-batch, AdamW settings, learning-rate schedule and clipping, fp32 on the CPU.
Ours is `panacea.training.train` (a Panacea SVD-LoRA, each prompt at its own λ); TRL's a LoRA of the same
rank (k + m·r) on the same modules. Every dimension's reward is one cheap rule, minus the response's words, as
a Python callable on both sides (ours: reward type `callable`; TRL: one reward function per dimension, weights
1/m), so the reward model's cost is not part of the comparison. TRL reads the prompts in the order our run drew
them (recorded by the reward), so step s of both answers the same prompts; the pool is drawn from the config's
RL prompts whose chat-templated ids fit max_prompt_length, so neither truncates.

Each contender runs `--steps` + 1 steps in a fresh child process, alternately (ours, TRL, ours, TRL, …); the
first step is a warm-up and is not timed. Per contender, over the timed steps:

- rollout tokens/s: generated tokens (EOS included) over the seconds of the sampling call;
- update tokens/s: trained tokens (prompt + response, no padding, of every rollout) over the seconds from the
  end of the rollout phase to the end of the optimizer step (forward, backward, clipping, AdamW);
- whole-step tokens/s: generated + trained tokens over the step's wall time (sampling, π_old and π_ref
  passes, scoring, update);
- peak RSS (ru_maxrss) of the child. Ratios are ours / TRL, median over repeats; target ≥ 1.5× whole-step.

Ours' timings come from its log.jsonl (rollout_tokens_per_second, update_tokens_per_second, tokens_per_second),
TRL's from a callback (on_step_begin to on_step_end; its step includes generation) and timers around its
sampling call (`_generate_single_turn`) and rollout phase (`_generate_and_score_completions`). Every process
runs --threads torch/OpenMP threads, with OMP_WAIT_POLICY=PASSIVE unless it is set (benchmarks/_children.py).

    pip install -e .[bench]
    python benchmarks/rl_throughput.py [--steps 3] [--prompts-per-step 8] [--k 4] [--max-new-tokens 64] \\
        [--repeats 2] [--threads 2] [--out rl-throughput.json]

Expected duration on a quiet 2-core CPU at the defaults: about 30 min (estimated, not measured: ~1.5 min a step
for ours and ~2 for TRL, 4 steps a run, 2 repeats, plus loading). The smoke form (--steps 1 --prompts-per-step 2
--k 2 --max-new-tokens 8 --repeats 1) takes about 1 min.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _children  # benchmarks/_children.py (the script's folder is on sys.path)
import torch
from panacea.training import TrainConfig
from transformers import AutoTokenizer, TrainerCallback

from panacea._config import load_yaml
from panacea.base_model import embedded_model_folder, load_base_model
from panacea.data import load_prompt_source, tokenize_prompts

CONTENDERS = ("ours", "trl")
TARGET = 1.5  # whole-step tokens/s, ours / TRL
FOLDER_ENV = "RL_THROUGHPUT_DIR"  # the child's folder: its result.json and the reward's record
REWARD = "rl_throughput:words_reward"  # importable in our child: the script's folder is on sys.path
SCORED = "scored.jsonl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/hh-2d-rl.yaml", help="The RL train config both follow.")
    parser.add_argument("--model", default=None, help="Base model path or id (default: the config's).")
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per run (after one warm-up step).")
    parser.add_argument("--prompts-per-step", type=int, default=8, help="Prompts per step (P).")
    parser.add_argument("--k", type=int, default=4, help="Responses per prompt (K >= 2).")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--micro-batch-size", type=int, default=None, help="Rows per forward (default: the config's, or a divisor)."
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads, in every process.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per contender, alternating.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="Also write the plan, every step's numbers and the summary here.")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return args
    for name in ("steps", "prompts_per_step", "max_new_tokens", "threads", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.k < 2:
        parser.error(f"--k must be at least 2 (RLOO's baseline is the other K - 1 responses), got {args.k}.")
    rows = args.prompts_per_step * args.k
    if args.micro_batch_size is None:  # the config's, or its largest divisor of the rollout batch
        configured = load_yaml(args.config).get("micro_batch_size", TrainConfig.micro_batch_size)
        args.micro_batch_size = math.gcd(rows, configured)
    if args.micro_batch_size < 1 or rows % args.micro_batch_size:
        parser.error(f"--micro-batch-size {args.micro_batch_size} must divide --prompts-per-step × --k = {rows}.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, Path(args.plan))
        return
    _children.quiet_third_party_output()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="rl-throughput-") as folder:
        plan_path = write_plan(args, Path(folder))
        load = os.getloadavg()[0]
        results, failure = run_alternately(plan_path, Path(folder), args.repeats)
        plan = json.loads(plan_path.read_text())
        summary = report(plan, results, (load, os.getloadavg()[0]), failure)
    if args.out:
        Path(args.out).write_text(json.dumps({"plan": plan, "results": results, "summary": summary}, indent=1))


def run_alternately(plan_path: Path, workdir: Path, repeats: int) -> tuple[dict[str, list[dict]], str | None]:
    """Ours, TRL, ours, TRL, …, each in a fresh child; (the results, why TRL could not run or None).

    Ours runs first: TRL answers the prompts in the order ours' first run drew them (written into the plan).
    A TRL run that fails is not retried; its reason (the end of its log) goes into the report.
    """
    results: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
    failure = trl_missing()
    for repeat in range(repeats):
        for name in CONTENDERS:
            if name == "trl" and failure:
                continue
            print(f"[{name} {repeat + 1}/{repeats}]", file=sys.stderr, flush=True)
            try:
                result = _children.run_in_child(__file__, name, plan_path, workdir / f"{name}-{repeat}", FOLDER_ENV)
            except SystemExit as error:
                if name == "ours":
                    raise
                failure = str(error)
                continue
            results[name].append(result)
            if name == "ours" and repeat == 0:
                plan_path.write_text(json.dumps({**json.loads(plan_path.read_text()), "order": result["prompts"]}))
    return results, failure


def trl_missing() -> str | None:
    """Why TRL cannot run at all here, or None."""
    try:
        from trl import RLOOConfig, RLOOTrainer  # noqa: F401
    except ImportError as error:
        return f"TRL's RLOOTrainer does not import ({error}); install it with `pip install -e .[bench]`."
    return None


# ------------------------------------------------------------------------------------------------
# Parent: the shared config and prompt pool


def overrides(args: argparse.Namespace, dimensions: int, pool: Path | None) -> list[str]:
    """`--set` overrides of the config for both contenders: sizes, one PPO epoch, the callable reward, the pool."""
    values: dict[str, Any] = {
        "rl.prompts_per_step": args.prompts_per_step,
        "rl.rollouts_per_prompt": args.k,
        "rl.max_new_tokens": args.max_new_tokens,
        "rl.ppo_epochs": 1,
        "micro_batch_size": args.micro_batch_size,
        "max_steps": args.steps + 1,
        "save_steps": args.steps + 1,
        "logging_steps": 1,
        "seed": args.seed,
        **{f"dimensions.{i}.reward": {"type": "callable", "function": REWARD} for i in range(dimensions)},
    }
    if args.model is not None:
        values["model"] = args.model
    if pool is not None:
        values["rl.prompts"] = [{"path": str(pool)}]
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]  # JSON is YAML


def write_plan(args: argparse.Namespace, workdir: Path) -> Path:
    """Draw the pool ((steps + 1) × P prompts that fit), write it, and write the plan both children read."""
    dimensions = len(load_yaml(args.config)["dimensions"])
    config = TrainConfig.from_yaml(args.config, overrides(args, dimensions, None))  # the config's own prompts
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_folder() if config.model is None else config.model)
    texts = list(dict.fromkeys(record.prompt for source in config.rl.prompts for record in load_prompt_source(source)))
    lengths = [len(ids) for ids in tokenize_prompts(texts, tokenizer, 10**9)]  # untruncated
    fitting = [text for text, length in zip(texts, lengths, strict=True) if length <= config.max_prompt_length]
    size = (args.steps + 1) * args.prompts_per_step
    if len(fitting) < size:
        raise SystemExit(
            f"{args.config}: only {len(fitting)} RL prompts fit max_prompt_length {config.max_prompt_length}; "
            f"{size} are needed. Lower --steps or --prompts-per-step."
        )
    pool = [fitting[index] for index in sorted(random.Random(args.seed).sample(range(len(fitting)), size))]
    pool_path = workdir / "prompts.jsonl"
    pool_path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": text}) + "\n" for i, text in enumerate(pool)))
    settings = overrides(args, dimensions, pool_path)
    config = TrainConfig.from_yaml(args.config, settings)  # every error before a child starts
    plan = {
        **vars(args),
        "config": str(Path(args.config).resolve()),
        "overrides": settings,
        "dimensions": config.dimension_names,
        "rank": config.adapter_config().rank,
        "precision": f"{config.dtype}, mixed precision {config.mixed_precision}, device {config.device}",
        "prompt_tokens": sum(len(ids) for ids in tokenize_prompts(pool, tokenizer, 10**9)) / size,
        "fitting": len(fitting),
        "available": len(texts),
    }
    path = workdir / "plan.json"
    path.write_text(json.dumps(plan))
    return path


# ------------------------------------------------------------------------------------------------
# The reward: the same rule and the same record on both sides


def score(prompts: list[str], responses: list[str]) -> list[float]:
    """Minus each response's whitespace words; the prompts scored are appended to the child's record."""
    folder = os.environ.get(FOLDER_ENV)
    if folder:
        with open(Path(folder) / SCORED, "a") as handle:
            handle.write(json.dumps(prompts) + "\n")
    return [-float(len(response.split())) for response in responses]


def words_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Ours: reward type `callable`, called once per dimension with the prompt and response texts."""
    return score(prompts, responses)


def trl_reward(prompts: list, completions: list, **kwargs) -> list[float]:
    """TRL: a reward function on (conversational or plain) prompts and completions."""
    prompt_texts = [prompt[-1]["content"] if isinstance(prompt, list) else prompt for prompt in prompts]
    texts = [completion[-1]["content"] if isinstance(completion, list) else completion for completion in completions]
    return score(prompt_texts, texts)


def scored_prompts(folder: Path, dimensions: int, k: int) -> list[list[str]]:
    """Each step's P prompts, in order, as the reward saw them (m calls a step, each prompt K times in a row)."""
    calls = [json.loads(line) for line in (folder / SCORED).read_text().splitlines()]
    return [calls[call][::k] for call in range(0, len(calls), dimensions)]


# ------------------------------------------------------------------------------------------------
# Children: one contender each


def run_child(name: str, plan_path: Path) -> None:
    plan = json.loads(plan_path.read_text())
    folder = Path(os.environ[FOLDER_ENV])
    _children.quiet_third_party_output()
    torch.set_num_threads(plan["threads"])
    result = run_ours(plan, folder) if name == "ours" else run_trl(plan, folder)
    result["prompts"] = scored_prompts(folder, len(plan["dimensions"]), plan["k"])
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    result["threads"] = torch.get_num_threads()
    (folder / "result.json").write_text(json.dumps(result))


def run_ours(plan: dict, folder: Path) -> dict:
    """`panacea.training.train` on the pool; every step's tokens and seconds from its log.jsonl."""
    from panacea.training import train

    config = TrainConfig.from_yaml(
        plan["config"], [*plan["overrides"], f"output_dir={json.dumps(str(folder / 'run'))}"]
    )
    result = train(config)
    rows = [json.loads(line) for line in (folder / "run" / "log.jsonl").read_text().splitlines()]
    return {
        "steps": [ours_step(row, plan["prompts_per_step"] * plan["k"]) for row in rows],
        "trainable": sum(parameter.numel() for parameter in result.model.parameters() if parameter.requires_grad),
    }


def ours_step(row: dict, rows: int) -> dict:
    """One log.jsonl row as the step record both contenders give (tokens, and seconds by phase)."""
    generated = row["response_length"] * rows  # the mean response length (tokens) × the step's rollouts
    return {
        "generated": generated,
        "trained": row["tokens"],  # prompt + response tokens of the update's forwards (one PPO epoch)
        "step_s": row["tokens"] / row["tokens_per_second"],
        "sampling_s": generated / row["rollout_tokens_per_second"],
        "update_s": row["tokens"] / row["update_tokens_per_second"],
        "scoring_s": row["scoring_seconds"],
    }


class TrlTimings(TrainerCallback):
    """TRL's steps (on_step_begin to on_step_end) and, inside them, its sampling call and rollout phase."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.prompt_ids: list[list[list[int]]] = []  # per step, the rows' prompt ids as TRL generated from them
        self._current: dict = {}

    def on_step_begin(self, args, state, control, **kwargs):
        self._current = {"start": time.perf_counter()}

    def on_step_end(self, args, state, control, **kwargs):
        self._current["step_s"] = time.perf_counter() - self._current.pop("start")
        self.records.append(self._current)

    def wrap(self, trainer) -> None:
        """Time TRL's own methods from the outside (instance attributes; the trainer calls them through self)."""
        generate, rollout, rewards = (
            trainer._generate_single_turn,
            trainer._generate_and_score_completions,
            trainer._calculate_rewards,
        )

        def timed_generate(prompt_ids, *args, **kwargs):
            start = time.perf_counter()
            completions = generate(prompt_ids, *args, **kwargs)
            self._current.update(sampling_s=time.perf_counter() - start, generated=sum(map(len, completions)))
            self.prompt_ids.append([list(ids) for ids in prompt_ids])
            return completions

        def timed_rollout(*args, **kwargs):
            start = time.perf_counter()
            output = rollout(*args, **kwargs)
            trained = int(output["prompt_mask"].sum()) + int(output["completion_mask"].sum())
            self._current.update(rollout_s=time.perf_counter() - start, trained=trained)
            return output

        def timed_rewards(*args, **kwargs):
            start = time.perf_counter()
            output = rewards(*args, **kwargs)
            self._current["scoring_s"] = time.perf_counter() - start
            return output

        trainer._generate_single_turn = timed_generate
        trainer._generate_and_score_completions = timed_rollout
        trainer._calculate_rewards = timed_rewards

    def steps(self) -> list[dict]:
        return [trl_step(record) for record in self.records]


def trl_step(record: dict) -> dict:
    """One TRL step as the step record both contenders give: the update is the step after the rollout phase."""
    return {
        "generated": record["generated"],
        "trained": record["trained"],
        "step_s": record["step_s"],
        "sampling_s": record["sampling_s"],
        "update_s": record["step_s"] - record["rollout_s"],
        "scoring_s": record["scoring_s"],
    }


def run_trl(plan: dict, folder: Path) -> dict:
    """TRL RLOOTrainer + peft LoRA on ours' prompts in ours' order; the reference is the adapter disabled."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import RLOOTrainer

    config = TrainConfig.from_yaml(plan["config"], plan["overrides"])
    model, tokenizer = load_base_model(config.model, dtype=config.dtype, device="cpu")
    texts = [text for step in plan["order"] for text in step]
    chat = tokenizer.chat_template is not None  # TRL applies the template to conversational prompts, as ours
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": t}] if chat else t} for t in texts])
    adapter = config.adapter_config()
    lora = LoraConfig(
        r=adapter.rank,
        lora_alpha=adapter.rank * adapter.scaling,  # peft's scaling lora_alpha / r = ours
        target_modules=adapter.target_modules,
        exclude_modules=adapter.exclude_modules,
        lora_dropout=adapter.dropout,
        task_type="CAUSAL_LM",
    )
    timings = TrlTimings()
    trainer = RLOOTrainer(
        model=model,
        reward_funcs=[trl_reward] * len(config.dimensions),
        args=rloo_config(config, folder),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[timings],
    )
    timings.wrap(trainer)
    trainer.train()
    expected = tokenize_prompts(texts, tokenizer, config.max_prompt_length)
    k, size = plan["k"], plan["prompts_per_step"]
    seen = [ids for step in timings.prompt_ids for ids in step[::k]]
    return {
        "steps": timings.steps(),
        "trainable": sum(parameter.numel() for parameter in trainer.model.parameters() if parameter.requires_grad),
        "different_prompt_ids": sum(a != b for a, b in zip(seen, expected, strict=True)),
        "prompts_generated": len(seen) // size,
    }


def rloo_config(config: TrainConfig, folder: Path):
    """RLOOConfig with our config's settings; TRL defaults that differ from ours are set to ours."""
    from trl import RLOOConfig

    rl, m = config.rl, len(config.dimensions)
    rows = rl.prompts_per_step * rl.rollouts_per_prompt
    return RLOOConfig(
        output_dir=str(folder / "run"),
        seed=config.seed,
        use_cpu=config.device == "cpu",
        bf16=config.mixed_precision == "bf16",  # TRL defaults to bf16 autocast; ours to none (fp32)
        gradient_checkpointing=config.gradient_checkpointing,  # TRL's default is True; ours False
        per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=rows // config.micro_batch_size,  # one rollout batch per optimizer step
        num_generations=rl.rollouts_per_prompt,
        max_completion_length=rl.max_new_tokens,
        temperature=rl.temperature,
        top_p=rl.top_p,
        beta=rl.kl_coef,  # k1 in the reward, as ours (ours after normalising the rewards)
        num_iterations=rl.ppo_epochs,
        epsilon=rl.clip_epsilon,
        reward_weights=[1 / m] * m,  # the mean λ; ours weighs each prompt by its own λ
        shuffle_dataset=False,  # the dataset is in ours' draw order
        disable_dropout=config.disable_dropout,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        adam_beta1=config.adam_betas[0],
        adam_beta2=config.adam_betas[1],
        adam_epsilon=config.adam_epsilon,
        max_grad_norm=config.max_grad_norm or 0.0,
        optim="adamw_torch",
        dataloader_num_workers=0,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
    )


# ------------------------------------------------------------------------------------------------
# Report


def rates(steps: list[dict]) -> dict[str, float]:
    """Tokens/s and mean seconds a step over the timed steps (the first, a warm-up, is left out).

    rollout = Σ generated / Σ sampling s; update = Σ trained / Σ update s; step = Σ (generated + trained) / Σ
    step s. `other_s` is the step less sampling and update: π_old and π_ref passes, scoring, decoding.
    """
    timed = steps[1:]
    if not timed:
        raise ValueError("rates need at least two steps: the first is a warm-up.")

    def total(key: str) -> float:
        return sum(step[key] for step in timed)

    return {
        "rollout": total("generated") / total("sampling_s"),
        "update": total("trained") / total("update_s"),
        "step": (total("generated") + total("trained")) / total("step_s"),
        "step_s": total("step_s") / len(timed),
        "sampling_s": total("sampling_s") / len(timed),
        "update_s": total("update_s") / len(timed),
        "scoring_s": total("scoring_s") / len(timed),
        "other_s": (total("step_s") - total("sampling_s") - total("update_s")) / len(timed),
        "generated": total("generated") / len(timed),
        "trained": total("trained") / len(timed),
    }


RATIOS = ("rollout", "update", "step", "peak_rss")


def summarise(results: dict[str, list[dict]]) -> dict:
    """Per contender the median over repeats of each rate; ratios ours / TRL as the median of per-repeat ratios."""
    med = statistics.median
    runs = {
        name: [rates(result["steps"]) | {"peak_rss": result["peak_rss"]} for result in results[name]]
        for name in CONTENDERS
        if results.get(name)
    }
    summary: dict[str, Any] = {
        name: {key: med(run[key] for run in runs[name]) for key in runs[name][0]} for name in runs
    }
    if "trl" in runs:  # a TRL run that failed after the first leaves ours' later runs unpaired
        pairs = zip(runs["ours"], runs["trl"], strict=False)
        summary["per_repeat"] = [{key: ours[key] / theirs[key] for key in RATIOS} for ours, theirs in pairs]
        summary["ratio"] = {key: med(ratio[key] for ratio in summary["per_repeat"]) for key in RATIOS}
    return summary


def report(plan: dict, results: dict[str, list[dict]], load: tuple[float, float], failure: str | None) -> dict:
    summary = summarise(results)
    print(f"\n### RL throughput: ours vs TRL {_version('trl')} RLOOTrainer + peft LoRA ({datetime.date.today()})\n")
    print(
        "| | rollout tokens/s | update tokens/s | whole-step tokens/s | s/step (sampling + update + other) "
        "| tokens/step (generated + trained) | peak RSS |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    labels = {
        "ours": f"panacea `train`, SVD-LoRA rank {plan['rank']}",
        "trl": f"TRL `RLOOTrainer`, LoRA r={plan['rank']}",
    }
    for name in (name for name in CONTENDERS if name in summary):
        row = summary[name]
        print(
            f"| {labels[name]} | {row['rollout']:,.1f} | {row['update']:,.1f} | {row['step']:,.1f} | "
            f"{row['step_s']:.1f} ({row['sampling_s']:.1f} + {row['update_s']:.1f} + {row['other_s']:.1f}) | "
            f"{row['generated']:,.0f} + {row['trained']:,.0f} | {row['peak_rss'] / 2**30:.2f} GiB |"
        )
    if "ratio" in summary:
        ratio = summary["ratio"]
        print(
            f"| **ours / TRL** (median of per-repeat ratios) | {ratio['rollout']:.2f}× | {ratio['update']:.2f}× | "
            f"**{ratio['step']:.2f}×** (target ≥ {TARGET}) | | | {ratio['peak_rss']:.2f} |"
        )
        print("- Per repeat, whole-step ratio: " + ", ".join(f"{r['step']:.2f}×" for r in summary["per_repeat"]))
    if failure:
        print(f"\n**TRL could not run here**: {failure}")
    print(
        f"\n- Settings: {plan['threads']} torch threads, OMP_WAIT_POLICY {_children.omp_wait_policy()}, load average "
        f"{load[0]:.1f} → {load[1]:.1f} on {os.cpu_count()} CPUs; {plan['precision']}, torch {torch.__version__}; "
        f"{plan['config']} with {plan['steps']} timed steps (+1 warm-up) × {plan['prompts_per_step']} prompts × "
        f"K = {plan['k']}, ≤ {plan['max_new_tokens']} new tokens, micro-batch {plan['micro_batch_size']}, one PPO "
        f"epoch; dimensions {plan['dimensions']}, each rewarded by −(response words) on both sides (no reward "
        f"model); repeats: {len(results['ours'])}, ours and TRL alternately, one process each. Prompts: "
        f"{(plan['steps'] + 1) * plan['prompts_per_step']} of the {plan['fitting']} (of {plan['available']}) "
        f"distinct RL prompts that fit max_prompt_length, {plan['prompt_tokens']:.1f} tokens on average."
    )
    print(
        "- Tokens: generated = response tokens sampled (EOS included); trained = prompt + response tokens of every "
        "rollout (no padding). Rollout = generated / sampling s; update = trained / (forward, backward, clip, "
        "AdamW) s; whole step = (generated + trained) / step s."
    )
    print(
        "- What still differs: ours samples with `sample_responses` (each row at its prompt's λ; finished rows leave "
        "the batch), TRL with `generate` on the peft model (finished rows stay padded until the last ends), with "
        "different random draws, so response lengths differ (tokens/step above); ours normalises each dimension's "
        "reward and weighs it by the row's λ, TRL sums the rewards with weights 1/m; ours' loss has a per-token "
        "ratio (Σ_t / max_new_tokens), TRL's a per-sequence ratio, and TRL also computes the entropy of every "
        "completion token in its update; TRL shuffles a rollout batch's rows into micro-batches, ours keeps a "
        "prompt's K rows together; ours' `train` flushes subnormal floats, TRL keeps the CPU's default. TRL defaults "
        "set to ours: bf16 off, gradient checkpointing off, prompts unshuffled."
    )
    if results.get("trl"):
        checks(plan, results)
    return summary


def checks(plan: dict, results: dict[str, list[dict]]) -> None:
    """Same prompts in every step and the same prompt token ids; the adapters' trainable sizes."""
    ours, theirs = results["ours"], results["trl"]
    same = all(result["prompts"] == ours[0]["prompts"] for result in ours + theirs)
    different = max(result["different_prompt_ids"] for result in theirs)
    print(
        f"- Checks: every step's prompts identical in all runs: {'yes' if same else 'NO'}; prompt token ids "
        f"identical in TRL: {'yes' if different == 0 else f'NO ({different} prompts differ)'}; trainable "
        f"parameters: ours {ours[0]['trainable']:,}, TRL {theirs[0]['trainable']:,}."
    )


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "(not installed)"


if __name__ == "__main__":
    main()
