"""Does a trained run loop, whatever prompts it is asked? Its greedy answers at every vertex of the simplex to the
validation prompt sets (the distinct prompts of the validation split carved from each pair file's `train`), with
the share of answers caught in a repetition loop, refused, and ended within the cap, each with its 95 % interval
over prompts.

A diagnostic, not part of any choosing rule. It reads no test prompt. A run trained on all of `train` (a published
benchmark run) has trained on these prompts' pairs, so its shares here say whether it loops on these prompts too,
not how it does on held-out ones; set beside a study row trained on `fit` (which excludes them), it separates "the
prompts differ" from "the trained models differ" (docs/steering.md, round 4).

    python benchmarks/loop_probe.py runs/hh-2d
    python benchmarks/loop_probe.py runs/validation-study/proxy/defaults/run --max-new-tokens 96
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from panacea.eval.bootstrap import flagged_share
from panacea.eval.degeneration import is_loop
from panacea.eval.generations import VALIDATION_PROMPT_SETS, load_prompts
from panacea.eval.refusal import is_refusal
from panacea.eval.report import format_interval, format_preference
from panacea.eval.sweep import load_run

from panacea.generation import generate_grid

FLAGS = {"loops": is_loop, "refusal": is_refusal}


def loop_probe(run: Path, *, max_new_tokens: int = 96, batch_size: int = 32, limit: int | None = None) -> dict:
    """{prompt set: {vertex λ as text: {"loops", "refusal", "ended": {"value", "interval"}, "prompts"}}}."""
    loaded = load_run(run, device="cpu")
    vertices = torch.eye(len(loaded.dimensions))
    result = {}
    for prompt_set in VALIDATION_PROMPT_SETS:
        prompts = [record["prompt"] for record in load_prompts(prompt_set, limit)]
        answers, ended = generate_grid(
            loaded.model,
            loaded.tokenizer,
            prompts,
            vertices,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            return_finished=True,
        )
        result[prompt_set.name] = {
            format_preference(vertex): {
                **{name: flagged_share([detect(text) for text in texts], prompts) for name, detect in FLAGS.items()},
                "ended": flagged_share(stopped, prompts),
                "prompts": len(prompts),
            }
            for vertex, texts, stopped in zip(vertices.tolist(), answers, ended, strict=True)
        }
    return result


def format_probe(probe: dict) -> str:
    """One Markdown row per prompt set and vertex."""
    lines = ["| prompt set | λ | n | loops | refusal | ended within the cap |", "|---|---|---|---|---|---|"]
    for name, vertices in probe.items():
        for label, shares in vertices.items():
            cells = [format_interval(shares[key]["value"], shares[key]["interval"]) for key in (*FLAGS, "ended")]
            lines.append(f"| {name} | {label} | {shares['prompts']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="A trained run folder (runs/NAME).")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="The cap (the generations scorer's default).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, help="At most this many prompts per set, evenly spaced.")
    args = parser.parse_args(argv)
    probe = loop_probe(args.run, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, limit=args.limit)
    print(format_probe(probe))


if __name__ == "__main__":
    main()
