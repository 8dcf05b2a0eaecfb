"""Our DPO trainer vs TRL's DPOTrainer + a peft LoRA, measured side by side in one run on the embedded model.

Both train one dimension (helpful; λ = (1,) is fixed) on the same pairs in the same order, with the same
batch, micro-batch, lengths, β, learning rate and schedule, AdamW settings and clipping, and an adapter of
the same rank on the same modules: ours a Panacea SVD-LoRA (k + 1, init "lora"), TRL a LoRA with r = k + 1,
lora_alpha = r, on q/k/v/o/gate/up/down_proj. Each contender runs in a fresh child process, alternately
(ours, TRL, ours, TRL, …), so each peak RSS is its own and machine drift hits both alike.

1. Tokens/s: the non-padding tokens of prompt + chosen and prompt + rejected of a step's pairs, over that
   optimizer step's seconds, first step skipped (warm-up). Target ours/TRL >= 2.0. TRL runs the reference
   forward (adapter disabled) inside every step; ours computes reference log-probs once before training,
   so ours is also given end to end, with that pass (cold cache) added pro rata to the timed steps.
2. Peak RSS (ru_maxrss) of each child after its run. Target ours/TRL <= 1.0.
3. Our share of the 4·N FLOP/token limit P / (4·N): P is a dense fp32 matmul peak measured in this run, N the
   non-embedding parameters (forward 2N + backward to the inputs 2N; frozen base weights need no weight
   gradients). Target >= 50 %.

TRL 1.16 has no max_prompt_length: it cuts prompt + response to max_length keeping the start. So the pool is
drawn from pairs whose chat-templated prompt fits max_prompt_length; then both cut exactly the same tokens,
and the TRL child checks that its token ids equal ours, pair by pair. Step times: ours from its log.jsonl
(collating the batch included), TRL's from a callback's on_step_begin to on_step_end (its Trainer collates
the step's batches before on_step_begin). Every process runs --threads torch/OpenMP threads, with
OMP_WAIT_POLICY=PASSIVE unless it is set (see `run_in_child`).

    pip install -e .[bench]
    python benchmarks/dpo_throughput.py [--steps 6] [--batch-size 4] [--max-length 256] [--repeats 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _children  # benchmarks/_children.py (the script's folder is on sys.path)
import torch
from transformers import AutoTokenizer, TrainerCallback

from panacea.base_model import embedded_model_folder, load_base_model
from panacea.data import PairRecord, PairSource, TokenizedPair, load_dimension, load_pairs, tokenize_pairs

CONTENDERS = ("ours", "trl")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # all linear but lm_head
TARGETS = {"tokens/s": 2.0, "peak RSS": 1.0, "share": 0.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Base model (default: the embedded SmolLM2-135M-Instruct).")
    parser.add_argument("--data", default="data/helpful.jsonl.gz", help="Pair file; its 'train' split is used.")
    parser.add_argument("--dimension", default="helpful")
    parser.add_argument("--svd-rank", type=int, default=8, help="k; both adapters have rank k + 1.")
    parser.add_argument("--steps", type=int, default=6, help="Optimizer steps per run (the first is not timed).")
    parser.add_argument("--batch-size", type=int, default=4, help="Pairs per optimizer step.")
    parser.add_argument("--micro-batch-size", type=int, default=None, help="Pairs per forward (default: batch).")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--max-prompt-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, in every process.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per contender, alternating.")
    parser.add_argument("--matmul-size", type=int, default=2048, help="Side of the square fp32 matmul behind P.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, Path(args.plan))
        return
    args.micro_batch_size = args.micro_batch_size or args.batch_size
    if args.batch_size % args.micro_batch_size:
        parser.error(
            f"--batch-size {args.batch_size} must be a multiple of --micro-batch-size {args.micro_batch_size}."
        )
    _children.quiet_third_party_output()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="dpo-throughput-") as folder:
        workdir = Path(folder)
        plan = write_plan(args, workdir)
        peak, load = 0.0, os.getloadavg()[0]
        results: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
        for repeat in range(args.repeats):
            peak = max(peak, matmul_peak(args.matmul_size))  # the best of the run: the least disturbed
            for name in CONTENDERS:  # ours, TRL, ours, TRL, …
                print(f"[{name} {repeat + 1}/{args.repeats}]", file=sys.stderr, flush=True)
                results[name].append(run_in_child(name, plan, workdir / f"{name}-{repeat}"))
        load = (load, os.getloadavg()[0])
        report(args, json.loads(plan.read_text()), results, peak, load)


# ------------------------------------------------------------------------------------------------
# Parent: the shared plan, P, the children


def write_plan(args, workdir: Path) -> Path:
    """Choose the pool (steps × batch pairs whose prompt fits), write it as JSONL, fix the order and tokens per step."""
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_folder() if args.model is None else args.model)
    records = load_pairs(PairSource(args.data, split="train"), args.dimension, [args.dimension])
    whole, _ = tokenize_pairs(records, tokenizer, max_length=10**9, max_prompt_length=10**9 - 1)  # untruncated
    fitting = [
        record for record, pair in zip(records, whole, strict=True) if len(pair.prompt_ids) <= args.max_prompt_length
    ]
    size = args.steps * args.batch_size  # one epoch: every pair is trained on once, and referenced once
    if len(fitting) < size:
        raise SystemExit(
            f"{args.data}: only {len(fitting)} pairs have a prompt of <= {args.max_prompt_length} tokens; "
            f"{size} are needed. Lower --steps or --batch-size, or raise --max-prompt-length."
        )
    pool = [fitting[index] for index in sorted(random.Random(args.seed).sample(range(len(fitting)), size))]
    pool_path = workdir / "pairs.jsonl"
    with pool_path.open("w") as handle:  # no 'dim' or 'split' column: the whole file is the dimension's train data
        for record in pool:
            handle.write(
                json.dumps({key: getattr(record, key) for key in ("id", "prompt", "chosen", "rejected")}) + "\n"
            )

    pairs, _ = tokenize_pairs(pool, tokenizer, args.max_length, args.max_prompt_length)
    order = our_draw_order(pairs, args.seed)
    tokens = [
        sum(_tokens(pairs[index]) for index in order[step * args.batch_size : (step + 1) * args.batch_size])
        for step in range(args.steps)
    ]
    plan = {
        **vars(args),
        "data": str(Path(args.data).resolve()),
        "pool": str(pool_path),
        "order": order,
        "tokens": tokens,
        "fitting": len(fitting),
        "available": len(records),
    }
    path = workdir / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def our_draw_order(pairs: list[TokenizedPair], seed: int) -> list[int]:
    """The pool indices in the order our trainer draws them (first epoch; its dimension 0 is seeded seed·1000).

    TRL reads the pool in this order (sequential sampler), so step s of both trains on the same pairs; the
    per-step token counts of both runs are checked against this order's.
    """
    from panacea.training.trainer import DimensionData

    dimension = DimensionData(None, pairs, None, seed=seed * 1000)  # only its data order is used here
    return dimension.indices(torch.arange(len(pairs))).tolist()


def _tokens(pair: TokenizedPair) -> int:
    """Non-padding tokens of prompt + chosen and prompt + rejected."""
    return 2 * len(pair.prompt_ids) + len(pair.chosen_ids) + len(pair.rejected_ids)


def matmul_peak(size: int, repeats: int = 5) -> float:
    """Dense fp32 FLOP/s of one (size × size) @ (size × size) matmul on this process's threads, best of `repeats`."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def run_in_child(name: str, plan: Path, folder: Path) -> dict:
    """One contender in a fresh interpreter (benchmarks/_children.py)."""
    return _children.run_in_child(__file__, name, plan, folder, "DPO_THROUGHPUT_DIR")


# ------------------------------------------------------------------------------------------------
# Children: one contender each, timed per optimizer step


def run_child(name: str, plan_path: Path) -> None:
    plan = json.loads(plan_path.read_text())
    folder = Path(os.environ["DPO_THROUGHPUT_DIR"])
    _children.quiet_third_party_output()
    torch.set_num_threads(plan["threads"])
    result = run_ours(plan, folder) if name == "ours" else run_trl(plan, folder)
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    result["threads"] = torch.get_num_threads()
    (folder / "result.json").write_text(json.dumps(result))


def run_ours(plan: dict, folder: Path) -> dict:
    """`panacea.training.train` on the pool; step seconds and tokens from its log.jsonl, the reference pass timed."""
    from panacea.training import DimensionConfig, TrainConfig, train
    from panacea.training import trainer as trainer_module
    from panacea.training.reference import SEED_DIRS_ENV

    config = TrainConfig(
        output_dir=str(folder / "run"),
        seed=plan["seed"],
        model=plan["model"],
        device="cpu",
        adapter={"svd_rank": plan["svd_rank"], "init": "lora"},
        dimensions=[DimensionConfig(name=plan["dimension"], train=[PairSource(plan["pool"])], beta=plan["beta"])],
        max_length=plan["max_length"],
        max_prompt_length=plan["max_prompt_length"],
        max_steps=plan["steps"],
        batch_size=plan["batch_size"],
        micro_batch_size=plan["micro_batch_size"],
        learning_rate=plan["learning_rate"],
        # TRL's settings below, pinned: TrainConfig's defaults moved (constant_with_warmup, σ/s at 10×) after the
        # published run of 2026-11-30 13:22, which took them (cosine, one learning rate) from the defaults of then
        lr_scheduler="cosine",
        warmup_steps=0,
        diagonal_lr_ratio=1.0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        save_steps=plan["steps"],
        save_total_limit=1,
    )
    reference_seconds = []
    cached_reference = trainer_module.reference_log_probs

    def cold_reference(*args, **kwargs):  # a cache folder of our own, empty: the pass runs (shared cache untouched)
        start = time.perf_counter()
        logps = cached_reference(*args, folder=folder / "reference-cache", **kwargs)
        reference_seconds.append(time.perf_counter() - start)
        return logps

    os.environ.pop(SEED_DIRS_ENV, None)  # nor committed entries: the timed pass runs cold
    trainer_module.reference_log_probs = cold_reference
    result = train(config)
    rows = [json.loads(line) for line in (folder / "run" / "log.jsonl").read_text().splitlines()]
    return {
        "step_seconds": [row["tokens"] / row["tokens_per_second"] for row in rows],
        "tokens": [int(row["tokens"]) for row in rows],
        "loss": [row[f"loss/{plan['dimension']}"] for row in rows],
        "reference_seconds": sum(reference_seconds),
        "non_embedding_parameters": non_embedding_parameters(result.model),
    }


class StepTimer(TrainerCallback):
    """Seconds of every optimizer step (on_step_begin to on_step_end), and the logged losses."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.losses: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


class CountingCollator:
    """TRL's collator, plus the non-padding tokens of every batch it builds."""

    def __init__(self, collator) -> None:
        self.collator, self.tokens = collator, []

    def __call__(self, examples):
        batch = self.collator(examples)
        self.tokens.append(int(batch["attention_mask"].sum()))
        return batch


def run_trl(plan: dict, folder: Path) -> dict:
    """TRL DPOTrainer + peft LoRA on the same pairs, in our draw order; the reference is the adapter disabled."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = load_base_model(plan["model"], device="cpu")
    records = load_pairs(PairSource(plan["pool"]), plan["dimension"], [plan["dimension"]])
    dataset = Dataset.from_list([conversation(records[i]) for i in plan["order"]])  # TRL applies the chat template
    args = DPOConfig(
        output_dir=str(folder / "run"),
        seed=plan["seed"],
        use_cpu=True,
        bf16=False,  # TRL defaults to bf16 autocast; ours trains in fp32 on CPU
        gradient_checkpointing=False,  # TRL's default is True; ours is False
        per_device_train_batch_size=plan["micro_batch_size"],
        gradient_accumulation_steps=plan["batch_size"] // plan["micro_batch_size"],
        max_steps=plan["steps"],
        learning_rate=plan["learning_rate"],
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",  # torch.optim.AdamW, as ours (betas 0.9/0.999, eps 1e-8 in both)
        beta=plan["beta"],
        loss_type=["sigmoid"],
        max_length=plan["max_length"],
        truncation_mode="keep_start",  # the only mode TRL 1.16 keeps; prompts fit, so it equals ours
        precompute_ref_log_probs=False,
        train_sampling_strategy="sequential",  # the dataset is already in our draw order
        dataloader_num_workers=0,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=plan["svd_rank"] + 1,
        lora_alpha=plan["svd_rank"] + 1,
        target_modules=LORA_TARGETS,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    timer = StepTimer()
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora, callbacks=[timer]
    )
    trainer.data_collator = counter = CountingCollator(trainer.data_collator)
    different = different_token_ids(plan, tokenizer, trainer.train_dataset)
    trainer.train()
    accumulation = args.gradient_accumulation_steps
    return {
        "step_seconds": timer.seconds,
        "tokens": [sum(counter.tokens[i : i + accumulation]) for i in range(0, len(counter.tokens), accumulation)],
        "loss": timer.losses,
        "reference_seconds": 0.0,  # inside every step
        "non_embedding_parameters": non_embedding_parameters(trainer.model),
        "different_token_ids": different,
    }


def conversation(record: PairRecord) -> dict:
    """One pair in TRL's conversational preference format."""
    return {
        "prompt": [{"role": "user", "content": record.prompt}],
        "chosen": [{"role": "assistant", "content": record.chosen}],
        "rejected": [{"role": "assistant", "content": record.rejected}],
    }


def different_token_ids(plan: dict, tokenizer, trl_dataset) -> int:
    """Pairs whose TRL rows (prompt + response, cut to max_length keeping the start) differ from ours."""
    ours, _ = load_dimension(
        [PairSource(plan["pool"])],
        plan["dimension"],
        [plan["dimension"]],
        tokenizer,
        plan["max_length"],
        plan["max_prompt_length"],
    )
    cut = plan["max_length"]
    different = 0
    for index, theirs in zip(plan["order"], trl_dataset, strict=True):
        pair = ours[index]
        different += (
            theirs["prompt_ids"] != pair.prompt_ids
            or (theirs["prompt_ids"] + theirs["chosen_ids"])[:cut] != pair.prompt_ids + pair.chosen_ids
            or (theirs["prompt_ids"] + theirs["rejected_ids"])[:cut] != pair.prompt_ids + pair.rejected_ids
        )
    return different


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """Frozen base parameters less the input and output embeddings (tied or not): N of the 4·N FLOP/token rule."""
    embeddings = {
        id(parameter)
        for module in (model.get_input_embeddings(), model.get_output_embeddings())
        for parameter in module.parameters()
    }
    return sum(
        parameter.numel()
        for parameter in model.parameters()
        if not parameter.requires_grad and id(parameter) not in embeddings
    )


# ------------------------------------------------------------------------------------------------
# Report


def throughput(result: dict, plan: dict) -> tuple[float, float]:
    """(steady, end-to-end) tokens/s over steps 2…N; end to end adds the reference pass pro rata to those steps."""
    tokens = sum(plan["tokens"][1:])
    seconds = sum(result["step_seconds"][1:])
    reference = result["reference_seconds"] * (plan["steps"] - 1) / plan["steps"]  # one pass over steps × batch pairs
    return tokens / seconds, tokens / (seconds + reference)


def report(args, plan: dict, results: dict[str, list[dict]], peak: float, load: tuple[float, float]) -> None:
    ours, theirs = results["ours"], results["trl"]
    steady = {name: [throughput(result, plan)[0] for result in runs] for name, runs in results.items()}
    whole = {name: [throughput(result, plan)[1] for result in runs] for name, runs in results.items()}
    rss = {name: [result["peak_rss"] / 2**30 for result in runs] for name, runs in results.items()}
    speed = [a / b for a, b in zip(steady["ours"], steady["trl"], strict=True)]
    speed_whole = [a / b for a, b in zip(whole["ours"], whole["trl"], strict=True)]
    memory = [a / b for a, b in zip(rss["ours"], rss["trl"], strict=True)]
    parameters = ours[0]["non_embedding_parameters"]
    limit = peak / (4 * parameters)
    med = statistics.median

    print(
        f"\n### DPO throughput: ours vs TRL {_version('trl')} DPOTrainer + peft LoRA "
        f"({datetime.date.today().isoformat()})\n"
    )
    print("| | tokens/s, steady | tokens/s, end to end | peak RSS | share of P/(4·N) |")
    print("|---|---:|---:|---:|---:|")
    for name, label in (
        ("ours", f"panacea `train`, SVD-LoRA k={args.svd_rank} m=1"),
        ("trl", f"TRL `DPOTrainer`, LoRA r={args.svd_rank + 1}"),
    ):
        print(
            f"| {label} | {med(steady[name]):,.0f} | {med(whole[name]):,.0f} | {med(rss[name]):.2f} GiB | "
            f"{med(steady[name]) / limit:.0%} |"
        )
    print(
        f"| **ours / TRL** (median of per-repeat ratios) | **{med(speed):.2f}×** (target ≥ {TARGETS['tokens/s']:.1f}) "
        f"| {med(speed_whole):.2f}× | **{med(memory):.2f}** (target ≤ {TARGETS['peak RSS']:.1f}) "
        f"| **{med(steady['ours']) / limit:.0%}** (target ≥ {TARGETS['share']:.0%}) |"
    )

    print(
        "\n| repeat | ours s/step | TRL s/step | ours tok/s (end to end) | TRL tok/s | ratio | ours RSS | TRL RSS "
        "| RSS ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for repeat in range(args.repeats):
        seconds = {name: med(results[name][repeat]["step_seconds"][1:]) for name in CONTENDERS}
        print(
            f"| {repeat + 1} | {seconds['ours']:.1f} | {seconds['trl']:.1f} | {steady['ours'][repeat]:,.0f} "
            f"({whole['ours'][repeat]:,.0f}) | {steady['trl'][repeat]:,.0f} | {speed[repeat]:.2f}× | "
            f"{rss['ours'][repeat]:.2f} GiB | {rss['trl'][repeat]:.2f} GiB | {memory[repeat]:.2f} |"
        )

    print(
        f"\n- Settings: {ours[0]['threads']} torch threads (TRL: {theirs[0]['threads']}), OMP_WAIT_POLICY "
        f"{_children.omp_wait_policy()}, load average {load[0]:.1f} → {load[1]:.1f} on {os.cpu_count()} CPUs; "
        "fp32 CPU, torch "
        f"{torch.__version__}; {args.steps} optimizer steps (step 1 not timed) × {args.batch_size} pairs "
        f"(micro-batch {args.micro_batch_size}), max_length {args.max_length}, max_prompt_length "
        f"{args.max_prompt_length}, k = {args.svd_rank} (rank {args.svd_rank + 1}), β {args.beta}, lr "
        f"{args.learning_rate:g} cosine; repeats: {args.repeats}, ours and TRL alternately, one process each. "
        f"Pairs: {len(plan['order'])} of the {plan['fitting']} (of {plan['available']}) {args.dimension} train pairs "
        f"in {args.data} whose templated prompt fits {args.max_prompt_length} tokens; "
        f"{sum(plan['tokens'][1:]):,} tokens in the timed steps."
    )
    print(
        f"- Limit: P = {peak / 1e9:.1f} GFLOP/s ({args.matmul_size}² fp32 matmul, {args.threads} threads, best of "
        f"{5 * args.repeats} in this run), "
        f"N = {parameters / 1e6:.1f} M non-embedding parameters → P/(4·N) = {limit:,.0f} tokens/s."
    )
    print(
        f"- Ours' reference pass (once, cold cache): {med([r['reference_seconds'] for r in ours]):.1f} s; "
        f"TRL runs it in every step."
    )
    checks(plan, ours, theirs)


def checks(plan: dict, ours: list[dict], theirs: list[dict]) -> None:
    """Same token ids, same tokens per step, and both start at the DPO loss of a fresh adapter, ln 2."""
    same_tokens = all(result["tokens"] == plan["tokens"] for result in ours + theirs)
    different = max(result["different_token_ids"] for result in theirs)
    print(
        f"- Checks: token ids identical in both: {'yes' if different == 0 else f'NO ({different} pairs differ)'}; "
        f"tokens per step identical: {'yes' if same_tokens else 'NO'}; "
        f"loss at step 1 (ln 2 = 0.6931): ours {ours[0]['loss'][0]:.4f}, TRL {theirs[0]['loss'][0]:.4f}; "
        f"at step {plan['steps']}: ours {ours[0]['loss'][-1]:.4f}, TRL {theirs[0]['loss'][-1]:.4f}."
    )


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
