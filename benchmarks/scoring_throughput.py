"""Pairs-scoring throughput: the evaluation's log-probs at a λ grid vs the frozen base model's plain forward.

`panacea eval`'s pairs scorer needs, for every held-out pair and every λ of the grid, the summed log-probs of
the chosen and the rejected response. Contenders, each in a fresh child process, alternately (anchor, previous,
fast, anchor, …), so machine drift hits all alike; every process runs --threads torch/OpenMP threads with
OMP_WAIT_POLICY=PASSIVE unless it is set:

- anchor: the frozen base model (no adapter), `model(input_ids, attention_mask).logits` without gradients, over
  the same (pair, λ) rows in the same batches as the previous scorer formed them (length-sorted by prompt + chosen,
  --batch-size (pair, λ) combinations per forward, chosen and rejected rows padded together).
- previous: the scorer's path until 2026-12-04 (`previous_log_probs` below: collate_pairs + response_log_probs,
  mixed-λ batches of --batch-size combinations), on a Panacea model with the hh-2d adapter (k = 0, m = 2, r = 2,
  init lora).
- fast: `panacea.training.logprobs.pair_log_probs`, which `panacea eval` calls since 2026-12-04, on the same
  adapter: packed [prompt, chosen, rejected] rows batched by --token-budget, all λs in one call.
- fast-unpacked (not run unless named in --contenders): the same with pack=False, one row per response sorted by
  its own length (the token budget without the shared prompt).
- fast-per-point (idem): `pair_log_probs` once per λ, so every batch has one λ (the adapter's shared-λ matmul).

Tokens: the non-padding tokens of prompt + chosen and prompt + rejected of every (pair, λ): the same count for all
contenders; tokens/s = that count over the seconds of one call over all pairs and λs (after a small warm-up call).
Target fast/anchor ≥ 0.8. The adapter's B gets small seeded random values (a fresh "lora" init has B = 0, where λ
would change nothing), the same in every child, so the log-probs of previous and fast are compared (max |Δ|).

The default (96 pairs × 6 λs, ~163k tokens per contender) takes ~18 min on a quiet 2-core CPU (~450 tokens/s);
--pairs 24 takes ~5 min. Measured 2026-12-04 (96 × 6, training paused): anchor 445, previous 429 (0.97×), fast 595
tokens/s (1.34×); see docs/performance.md.

    python benchmarks/scoring_throughput.py [--pairs 96] [--points 6] [--threads 2] [--repeats 1] [--out m.json]
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

CONTENDERS = ("anchor", "previous", "fast", "fast-unpacked", "fast-per-point")
DEFAULT_CONTENDERS = "anchor,previous,fast"
TARGET = 0.8  # fast / anchor, tokens/s
DATA = ("data/helpful.jsonl.gz", "data/harmless.jsonl.gz")  # test splits; the dimensions helpful, harmless
WARM_UP_PAIRS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=96, help="Pairs, half from each dimension's test split.")
    parser.add_argument("--points", type=int, default=6, help="λs of the 2-D simplex grid, all scored in one call.")
    parser.add_argument("--max-length", type=int, default=256, help="As configs/hh-2d.yaml.")
    parser.add_argument("--max-prompt-length", type=int, default=128, help="As configs/hh-2d.yaml.")
    parser.add_argument("--batch-size", type=int, default=8, help="(pair, λ) per forward of anchor and previous.")
    parser.add_argument("--token-budget", type=int, default=None, help="fast's padded tokens per forward.")
    parser.add_argument("--contenders", default=DEFAULT_CONTENDERS, help=f"Comma-separated, of {CONTENDERS}.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, in every process.")
    parser.add_argument("--repeats", type=int, default=1, help="Runs per contender, alternating.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="Write the measurement as JSON here.")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, Path(args.plan))
        return
    contenders = [name.strip() for name in args.contenders.split(",") if name.strip()]
    unknown = [name for name in contenders if name not in CONTENDERS]
    if unknown or "anchor" not in contenders:
        parser.error(f"--contenders must name 'anchor' and others of {CONTENDERS}, got {args.contenders!r}.")
    if args.token_budget is None:
        from panacea.training.logprobs import DEFAULT_TOKEN_BUDGET

        args.token_budget = DEFAULT_TOKEN_BUDGET
    _children.quiet_third_party_output()

    with tempfile.TemporaryDirectory(prefix="scoring-throughput-") as folder:
        workdir = Path(folder)
        plan = write_plan(args, workdir)
        load = os.getloadavg()[0]
        results: dict[str, list[dict]] = {name: [] for name in contenders}
        for repeat in range(args.repeats):
            for name in contenders:
                print(f"[{name} {repeat + 1}/{args.repeats}]", file=sys.stderr, flush=True)
                results[name].append(run_in_child(name, plan, workdir / f"{name}-{repeat}"))
        measurement = summarize(args, json.loads(plan.read_text()), results, (load, os.getloadavg()[0]))
    report(measurement)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(measurement, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------
# Parent: the shared plan, the children


def write_plan(args, workdir: Path) -> Path:
    """Draw the pairs (seeded, half from each test split), tokenize them as hh-2d does, and fix the λ grid."""
    from transformers import AutoTokenizer

    from panacea.base_model import embedded_model_folder
    from panacea.data import PairSource, load_dimension
    from panacea.preferences import simplex_grid

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_folder())
    dimensions = [Path(path).name.split(".")[0] for path in DATA]
    rng = random.Random(args.seed)
    pairs = []
    for path, dimension, count in zip(DATA, dimensions, (args.pairs - args.pairs // 2, args.pairs // 2), strict=True):
        tokenized, _ = load_dimension(
            [PairSource(path, split="test")], dimension, dimensions, tokenizer, args.max_length, args.max_prompt_length
        )
        pairs += [tokenized[index] for index in sorted(rng.sample(range(len(tokenized)), count))]
    preferences = simplex_grid(2, args.points)
    plan = {
        **{key: value for key, value in vars(args).items() if key != "out"},
        "pairs": [[pair.id, pair.prompt_ids, pair.chosen_ids, pair.rejected_ids] for pair in pairs],
        "preferences": preferences.tolist(),
        "pad_token_id": tokenizer.pad_token_id,
        "tokens": args.points * sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs),
    }
    path = workdir / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def run_in_child(name: str, plan: Path, folder: Path) -> dict:
    """One contender in a fresh interpreter (benchmarks/_children.py)."""
    return _children.run_in_child(__file__, name, plan, folder, "SCORING_THROUGHPUT_DIR")


# ------------------------------------------------------------------------------------------------
# Children: one contender each, one timed call over all pairs and λs


def run_child(name: str, plan_path: Path) -> None:
    from panacea.base_model import load_base_model
    from panacea.data import TokenizedPair

    plan = json.loads(plan_path.read_text())
    folder = Path(os.environ["SCORING_THROUGHPUT_DIR"])
    _children.quiet_third_party_output()
    torch.set_num_threads(plan["threads"])
    model, _ = load_base_model(device="cpu")
    model.eval()
    pairs = [TokenizedPair(*fields) for fields in plan["pairs"]]
    preferences = torch.tensor(plan["preferences"])
    score = anchor_contender(model, plan) if name == "anchor" else adapter_contender(name, hh_2d_adapter(model), plan)
    score(pairs[:WARM_UP_PAIRS], preferences[:1])  # warm-up: first-call allocations, kernel selection
    start = time.perf_counter()
    logps, tokens = score(pairs, preferences)
    seconds = time.perf_counter() - start
    result = {
        "seconds": seconds,
        "tokens": tokens,
        "logps": None if logps is None else logps.tolist(),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024),
        "threads": torch.get_num_threads(),
    }
    (folder / "result.json").write_text(json.dumps(result))


def hh_2d_adapter(model):
    """A fresh Panacea adapter of configs/hh-2d.yaml (k = 0, m = 2, preference rank 2, init lora), seeded; B random."""
    from panacea import PanaceaConfig, get_panacea_model

    torch.manual_seed(0)  # A's Kaiming-uniform init: the same adapter in every child
    panacea = get_panacea_model(model, PanaceaConfig(svd_rank=0, num_preferences=2, preference_rank=2, init="lora"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in panacea.named_parameters():
            if name.endswith("lora_B"):  # init lora: B = 0, where λ changes nothing; give it a trained-like size
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return panacea.eval()


def combinations_tokens(pairs, points: int) -> int:
    """Non-padding tokens of prompt + chosen and prompt + rejected of every (pair, λ)."""
    return points * sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)


def anchor_contender(model, plan: dict):
    """The frozen base model's plain forward over the previous scorer's batches (the same rows, the same padding)."""
    from panacea.training.logprobs import collate_pairs

    @torch.no_grad()
    def score(pairs, preferences):
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].prompt_ids) + len(pairs[i].chosen_ids))
        combos = [pair for pair in order for _ in range(len(preferences))]  # as previous_log_probs forms them
        tokens = 0
        for start in range(0, len(combos), plan["batch_size"]):
            batch = collate_pairs([pairs[i] for i in combos[start : start + plan["batch_size"]]], plan["pad_token_id"])
            _ = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            tokens += batch.num_tokens
        return None, tokens

    return score


def adapter_contender(name: str, model, plan: dict):
    """The previous scorer, or `pair_log_probs` (packed, unpacked, or once per λ), on the Panacea model."""
    from panacea.training.logprobs import pair_log_probs

    def score(pairs, preferences):
        tokens = combinations_tokens(pairs, len(preferences))
        if name == "previous":
            with torch.no_grad():  # as score_pairs ran it
                logps = previous_log_probs(model, pairs, preferences, plan["pad_token_id"], plan["batch_size"])
            return logps, tokens
        options = {"pad_token_id": plan["pad_token_id"], "token_budget": plan["token_budget"]}
        if name == "fast-per-point":
            logps = torch.cat([pair_log_probs(model, pairs, point[None], **options) for point in preferences])
        else:  # fast: the defaults (packed, as the embedded model's sdpa attention allows)
            pack = False if name == "fast-unpacked" else None
            logps = pair_log_probs(model, pairs, preferences, pack=pack, **options)
        return logps, tokens

    return score


def previous_log_probs(model, pairs, preferences, pad_token_id: int, batch_size: int) -> torch.Tensor:
    """The pairs scorer's path until 2026-12-04: (pair, λ) combinations of similar length, `batch_size` a forward,
    chosen and rejected as separate rows padded together; summed response log-probs (n, pairs, 2)."""
    from panacea.training.logprobs import collate_pairs, response_log_probs

    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].prompt_ids) + len(pairs[i].chosen_ids))
    combos = [(pair, point) for pair in order for point in range(len(preferences))]
    result = torch.empty(len(preferences), len(pairs), 2)
    device_preferences = preferences.to(model.device)
    for start in range(0, len(combos), batch_size):
        chunk = combos[start : start + batch_size]
        batch = collate_pairs([pairs[pair] for pair, _ in chunk], pad_token_id).to(model.device)
        rows = device_preferences[[point for _, point in chunk]].repeat(2, 1)  # chosen rows, then rejected rows
        logps = response_log_probs(model, batch, preference=rows).float().cpu().view(2, len(chunk))
        for slot, (pair, point) in enumerate(chunk):
            result[point, pair] = logps[:, slot]
    return result


# ------------------------------------------------------------------------------------------------
# Report


def summarize(args, plan: dict, results: dict[str, list[dict]], load: tuple[float, float]) -> dict:
    """tokens/s per contender (median over repeats), ratios to the anchor of the same repeat, exactness."""
    med = statistics.median
    rates = {name: [plan["tokens"] / run["seconds"] for run in runs] for name, runs in results.items()}
    ratios = {
        name: [rate / anchor for rate, anchor in zip(rates[name], rates["anchor"], strict=True)]
        for name in results
        if name != "anchor"
    }
    scored = {name: torch.tensor(runs[0]["logps"]) for name, runs in results.items() if runs[0]["logps"] is not None}
    baseline = scored.get("previous")
    difference = {name: float((logps - baseline).abs().max()) for name, logps in scored.items() if baseline is not None}
    return {
        "date": datetime.date.today().isoformat(),
        "settings": {
            "pairs": args.pairs,
            "points": args.points,
            "max_length": args.max_length,
            "max_prompt_length": args.max_prompt_length,
            "batch_size": args.batch_size,
            "token_budget": args.token_budget,
            "threads": args.threads,
            "omp_wait_policy": _children.omp_wait_policy(),
            "repeats": args.repeats,
            "seed": args.seed,
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "load_average": list(load),
        },
        "tokens": plan["tokens"],
        "target": {"fast/anchor": TARGET},
        "contenders": {
            name: {
                "tokens_per_second": med(rates[name]),
                "tokens_per_second_runs": rates[name],
                "seconds_runs": [run["seconds"] for run in runs],
                "tokens_counted": runs[0]["tokens"],
                "peak_rss_gib": med([run["peak_rss"] / 2**30 for run in runs]),
                "ratio_to_anchor": med(ratios[name]) if name in ratios else 1.0,
                "ratio_to_anchor_runs": ratios.get(name, [1.0] * len(runs)),
                "max_abs_difference_to_previous": difference.get(name),
            }
            for name, runs in results.items()
        },
    }


def report(measurement: dict) -> None:
    settings, contenders = measurement["settings"], measurement["contenders"]
    print(f"\n### Pairs-scoring throughput vs the frozen base model's forward ({measurement['date']})\n")
    print("| contender | tokens/s | / anchor | max abs Δ log-prob vs previous | peak RSS |")
    print("|---|---:|---:|---:|---:|")
    for name, entry in contenders.items():
        ratio = f"{entry['ratio_to_anchor']:.2f}×"
        if name != "anchor":
            mark = "met" if entry["ratio_to_anchor"] >= TARGET else "NOT met"
            ratio = f"**{ratio}** (target ≥ {TARGET}: {mark})" if name == "fast" else f"{ratio} (≥ {TARGET}: {mark})"
        difference = entry["max_abs_difference_to_previous"]
        print(
            f"| {name} | {entry['tokens_per_second']:,.0f} | {ratio} | "
            f"{'' if difference is None else f'{difference:.2e}'} | {entry['peak_rss_gib']:.2f} GiB |"
        )
    counted = {entry["tokens_counted"] for entry in contenders.values()}
    print(
        f"\n- {settings['pairs']} pairs × {settings['points']} λs, {measurement['tokens']:,} tokens "
        f"(counted alike by every contender: {'yes' if counted == {measurement['tokens']} else 'NO'}); "
        f"anchor and previous {settings['batch_size']} (pair, λ) per forward, fast a budget of "
        f"{settings['token_budget']} padded tokens; {settings['threads']} threads, OMP_WAIT_POLICY "
        f"{settings['omp_wait_policy']}, load average {settings['load_average'][0]:.1f} → "
        f"{settings['load_average'][1]:.1f} on {settings['cpus']} CPUs; fp32 CPU, torch {settings['torch']}; "
        f"{settings['repeats']} repeat(s), contenders alternately, one process each (medians; ratios per repeat)."
    )


if __name__ == "__main__":
    main()
