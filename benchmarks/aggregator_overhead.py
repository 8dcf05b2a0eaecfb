"""Step time and peak memory of every gradient aggregator against linear scalarisation, side by side.

On the embedded SmolLM2-135M-Instruct, for m = 2 (helpful, harmless) and m = 3 (+ concise): the same
pairs, the same λ per step (seeded) and the same batches for every method, each run in a fresh child
process so that its peak RSS is its own. Step time is the mean over the steps after the first (the
first pays one-off allocations); the reference log-probs are cached before any child is timed.

    python benchmarks/aggregator_overhead.py                 # ~6 min here
    python benchmarks/aggregator_overhead.py --steps 8 --dims 2

Target (issue 8): step time with an aggregator / with LS <= 1.10. Beside the step-time ratio, which
compares separate runs and so moves by several per cent from run to run on a shared 2-core machine,
each child times what an aggregator adds to a step (the Gram matrix and the coefficient solve) inside
its own run, as a share of the LS step. Children run with OMP_WAIT_POLICY=PASSIVE
unless the caller sets it (on a busy 2-core machine spinning OpenMP workers distort every timing).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).parents[1] / "configs" / "hhc-3d.yaml"
METHODS = ["none", "mgda", "pcgrad", "cagrad", "clipped_cagrad", "plc", "normalized"]


def overrides(dims: int, method: str, steps: int, output_dir: Path) -> list[str]:
    settings = [
        f"output_dir={output_dir}",
        f"max_steps={steps}",
        f"save_steps={steps}",
        "batch_size=2",
        "micro_batch_size=2",
        "max_length=128",
        "max_prompt_length=64",
        "preference_sampling=per_step",
        "scalarization=ls",
        f"aggregator={method}",
        "device=cpu",
    ]
    settings += [f"dimensions.{index}.train.0.max_pairs=16" for index in range(3)]
    return settings


def run_child(dims: int, method: str, steps: int) -> None:
    """Train in this process and print {"step_seconds", "aggregation_seconds", "peak_rss"} as the last line.

    `aggregation_seconds`: the mean time per step spent in what an aggregator adds to a step — the Gram
    matrix of the per-dimension gradients and the coefficients from it (0 for LS, which needs neither) —
    timed inside this process, so it is free of the run-to-run noise that the step-time ratios carry.
    """
    from panacea.training import TrainConfig, scalarisation, train, trainer

    spent: list[float] = []

    def timed(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - started)

        return wrapper

    trainer.GradientBuffers.gram = timed(trainer.GradientBuffers.gram)
    scalarisation.GradientAggregation.coefficients = timed(scalarisation.GradientAggregation.coefficients)
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig.from_yaml(CONFIG, overrides(dims, method, steps, Path(folder) / "run"))
        if dims == 2:
            config = dataclasses.replace(config, dimensions=config.dimensions[:2])
        train(config)
        rows = [json.loads(line) for line in (Path(folder) / "run" / "log.jsonl").read_text().splitlines()]
    seconds = [row["tokens"] / row["tokens_per_second"] for row in rows[1:]]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    per_step = len(spent) // steps  # gram and coefficients: one call each per step with an aggregator
    aggregation = sum(spent[per_step:]) / (steps - 1) if per_step else 0.0  # the first step is not timed
    print(
        json.dumps(
            {
                "step_seconds": sum(seconds) / len(seconds),
                "aggregation_seconds": aggregation,
                "peak_rss": peak,
                "tokens": rows[-1]["tokens"],
            }
        )
    )


def measure(dims: int, method: str, steps: int) -> dict:
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        "TQDM_DISABLE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [sys.executable, __file__, "--child", method, "--dims", str(dims), "--steps", str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{method} (m = {dims}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run (the first is not timed)")
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=[2, 3])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is not timed)")
    if args.child:
        run_child(args.dims[0], args.child, args.steps)
        return 0
    lines = [
        "| m | aggregator | step s | step time / LS | aggregation ms / step | aggregation / LS step | peak RSS / LS |",
        "|---|---|---|---|---|---|---|",
    ]
    for dims in args.dims:
        measure(dims, "none", 2)  # fills the reference-log-prob cache; not timed
        results = {method: measure(dims, method, args.steps) for method in METHODS}
        base = results["none"]
        for method, result in results.items():
            lines.append(
                f"| {dims} | {'LS (none)' if method == 'none' else method} | {result['step_seconds']:.2f} | "
                f"{result['step_seconds'] / base['step_seconds']:.3f} | {1e3 * result['aggregation_seconds']:.2f} | "
                f"{result['aggregation_seconds'] / base['step_seconds']:.5f} | "
                f"{result['peak_rss'] / base['peak_rss']:.3f} |"
            )
        print("\n".join(lines[-len(METHODS) :]), flush=True)
    print(
        f"\n{args.steps} steps per run (first not timed), batch 2 pairs per dimension, 128 tokens; OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
