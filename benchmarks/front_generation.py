"""Generation over a λ grid: mixed-preference batches vs the grid points one after another.

Both answer the same prompts greedily at the same 11 λs (m = 2) with the same batch size:

- one after another: for each λ, its prompts in batches of `--batch-size` (what a loop over λ does);
- mixed: each batch holds several prompts at *every* λ, each row with its own λ (`generate_grid`), so a
  grid costs about what one batch of its size costs.

Prints the wall time of each, their ratio, the same ratio for the frozen base model in the same batches
(adapter disabled: what batching alone gains on the machine, the ceiling of the first ratio), and how many
answers are identical. The padding of a prompt differs between the two (other rows share its batch), so a
float rounding can flip a greedy choice; the tests check exact equality where the padding is the same
(tests/test_generation.py).

    python benchmarks/front_generation.py                      # a run's adapter: runs/demo if it exists
    python benchmarks/front_generation.py --run runs/hh-2d --prompts 16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from panacea.eval.generations import PROMPT_SETS, load_prompts

from panacea import PanaceaConfig, PanaceaModel, get_panacea_model
from panacea.base_model import load_base_model
from panacea.generation import generate_grid
from panacea.preferences import simplex_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="A run folder with adapter/; if missing, a random adapter.")
    parser.add_argument("--prompts", type=int, default=8, help="Prompts (helpful test instructions).")
    parser.add_argument("--grid", type=int, default=11)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    base, tokenizer = load_base_model(None)
    model, adapter = load_adapter(base, Path(args.run), args.seed)
    prompt_set = next(s for s in PROMPT_SETS if s.name == "helpful_test")
    prompts = [record["prompt"] for record in load_prompts(prompt_set, args.prompts)]
    grid = simplex_grid(2, args.grid)
    settings = dict(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    print(
        f"{len(prompts)} prompts × {len(grid)} λs, greedy, {args.max_new_tokens} new tokens, batch size "
        f"{args.batch_size}, adapter: {adapter}, {torch.get_num_threads()} threads"
    )
    generate_grid(model, tokenizer, prompts[:2], grid[:2], max_new_tokens=4)  # warm-up

    sequential_seconds, mixed_seconds, one_after_another, mixed = time_both(model, tokenizer, prompts, grid, settings)
    with model.disable_adapter():  # the same rows in the same batches through the frozen base model
        base_sequential, base_mixed, _, _ = time_both(model, tokenizer, prompts, grid, settings)

    same = sum(
        a == b for row_a, row_b in zip(mixed, one_after_another, strict=True) for a, b in zip(row_a, row_b, strict=True)
    )
    vertices_differ = sum(a != b for a, b in zip(mixed[0], mixed[-1], strict=True))
    print(f"one λ after another: {sequential_seconds:7.1f} s")
    print(f"mixed-preference:    {mixed_seconds:7.1f} s")
    print(f"speed-up (one after another / mixed): {sequential_seconds / mixed_seconds:.2f}x")
    print(
        f"the base model (adapter disabled) in the same batches: {base_sequential:.1f} s / {base_mixed:.1f} s = "
        f"{base_sequential / base_mixed:.2f}x (what batching alone gains on this machine)"
    )
    print(f"identical answers: {same} of {len(grid) * len(prompts)}")
    print(f"answers that differ between the two vertices: {vertices_differ} of {len(prompts)} (λ steers)")


def time_both(model, tokenizer, prompts, grid, settings) -> tuple[float, float, list, list]:
    """Seconds and answers of the grid one λ after another (one call per λ), then in mixed-preference batches."""
    started = time.perf_counter()
    one_after_another = [
        generate_grid(model, tokenizer, prompts, grid[point : point + 1], **settings)[0] for point in range(len(grid))
    ]
    sequential_seconds = time.perf_counter() - started
    started = time.perf_counter()
    mixed = generate_grid(model, tokenizer, prompts, grid, **settings)
    return sequential_seconds, time.perf_counter() - started, one_after_another, mixed


def load_adapter(base, run: Path, seed: int) -> tuple[PanaceaModel, str]:
    """The run's trained adapter, or (no run) a seeded random one whose two preference directions differ."""
    if (run / "adapter" / "adapter_config.json").is_file():
        return PanaceaModel.from_pretrained(base, run / "adapter").eval(), str(run / "adapter")
    torch.manual_seed(seed)
    model = get_panacea_model(base, PanaceaConfig(num_preferences=2, svd_rank=0, preference_rank=2, init="lora"))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("lora_B"):
                parameter.normal_(0, 0.02)
    return model.eval(), f"random (seed {seed}; {run} has no adapter)"


if __name__ == "__main__":
    main()
