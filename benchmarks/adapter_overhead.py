"""Panacea adapter cost vs its real anchors, measured side by side in one run on the embedded model.

1. Training step (forward + backward of the LM loss): Panacea (k + m = r) vs a peft LoRA of rank r
   on the same modules. Steps are interleaved so machine noise hits both alike. Target ratio <= 1.05.
2. Preference switch: `set_preference(λ)` vs what rewarded soups must do for a new λ with peft,
   re-combining two LoRAs with `add_weighted_adapter` and activating the result. Target <= 0.1 ms,
   >= 1,000x faster.

    python benchmarks/adapter_overhead.py [--steps 12] [--batch-size 4] [--seq-len 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model

from panacea import PanaceaConfig, get_panacea_model, load_base_model, sample_preferences
from panacea.cli import quiet_third_party_output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Base model (default: the embedded SmolLM2-135M-Instruct).")
    parser.add_argument("--svd-rank", type=int, default=8)
    parser.add_argument("--num-preferences", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12, help="Timed steps per contender (after 2 warm-up steps).")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--switches", type=int, default=2000, help="Timed set_preference calls.")
    parser.add_argument("--soup-switches", type=int, default=10, help="Timed peft re-combinations.")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    quiet_third_party_output()
    torch.manual_seed(0)

    config = PanaceaConfig(
        svd_rank=args.svd_rank, num_preferences=args.num_preferences, init="orthogonal", init_preference_scale=1.0
    )
    panacea_model = get_panacea_model(load_base_model(args.model, device=args.device)[0], config)
    targets = [name for name, _ in panacea_model.adapter_layers()]
    lora = LoraConfig(r=config.rank, lora_alpha=config.rank, lora_dropout=0.0, target_modules=targets)
    peft_model = get_peft_model(load_base_model(args.model, device=args.device)[0], lora)
    panacea_model.train()
    peft_model.train()

    print(
        f"base model: {panacea_model.config.name_or_path}; {len(targets)} adapted linear layers; "
        f"Panacea k={config.svd_rank}, m={config.num_preferences} vs peft LoRA r={config.rank}; "
        f"batch {args.batch_size} x {args.seq_len} tokens; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.device}"
    )
    step_times = time_training_steps(panacea_model, peft_model, args)
    report_steps(step_times, args)
    report_switch(panacea_model, args)


def time_training_steps(panacea_model, peft_model, args) -> dict[str, list[float]]:
    """Seconds per forward+backward step for each contender, interleaved step by step."""
    ids = torch.randint(0, panacea_model.config.vocab_size, (args.batch_size, args.seq_len), device=args.device)
    per_sample = sample_preferences(args.num_preferences, args.batch_size, rng=0)

    def peft_step():
        peft_model(input_ids=ids, labels=ids).loss.backward()

    def panacea_shared_step():
        panacea_model(input_ids=ids, labels=ids, preference=per_sample[0]).loss.backward()

    def panacea_per_sample_step():
        panacea_model(input_ids=ids, labels=ids, preference=per_sample).loss.backward()

    contenders = {
        "peft LoRA": peft_step,
        "panacea, one λ": panacea_shared_step,
        "panacea, per-sample λ": panacea_per_sample_step,
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for step in range(args.steps + 2):
        order = list(contenders.items())
        if step % 2:
            order.reverse()
        for name, run in order:
            panacea_model.zero_grad(set_to_none=True)
            peft_model.zero_grad(set_to_none=True)
            _synchronize(args.device)
            start = time.perf_counter()
            run()
            _synchronize(args.device)
            if step >= 2:  # the first two are warm-up
                times[name].append(time.perf_counter() - start)
    return times


def report_steps(times: dict[str, list[float]], args) -> None:
    """Medians, and the median of the step-by-step ratios to peft (pairs ran back to back, so drift cancels)."""
    tokens = args.batch_size * args.seq_len
    reference = times["peft LoRA"]
    print(f"\nforward+backward step, {args.steps} interleaved steps each:")
    for name, samples in times.items():
        median = statistics.median(samples)
        line = f"  {name:<24}{median:8.3f} s   {tokens / median:7.1f} tok/s"
        if name != "peft LoRA":
            ratios = sorted(ours / theirs for ours, theirs in zip(samples, reference, strict=True))
            line += (
                f"   ratio vs peft: median {statistics.median(ratios):.3f} "
                f"(quartiles {ratios[len(ratios) // 4]:.3f}-{ratios[(3 * len(ratios)) // 4]:.3f})"
            )
        print(line)
    ours = statistics.median(a / b for a, b in zip(times["panacea, one λ"], reference, strict=True))
    print(f"  target: panacea/peft <= 1.05 -> {ours:.3f}")


def report_switch(panacea_model, args) -> None:
    """set_preference latency vs peft re-combining two LoRAs for a new λ (rewarded soups)."""
    preferences = sample_preferences(args.num_preferences, args.switches, rng=1).tolist()
    panacea_times = []
    for preference in preferences:
        start = time.perf_counter()
        panacea_model.set_preference(preference)
        panacea_times.append(time.perf_counter() - start)
    switch = statistics.median(panacea_times)

    torch.manual_seed(1)
    soup_model = get_peft_model(
        load_base_model(args.model, device=args.device)[0],
        LoraConfig(
            r=panacea_model.panacea_config.rank,
            lora_alpha=panacea_model.panacea_config.rank,
            target_modules=[name for name, _ in panacea_model.adapter_layers()],
            init_lora_weights=False,
        ),
        adapter_name="objective_0",
    )
    objectives = [f"objective_{index}" for index in range(args.num_preferences)]
    for name in objectives[1:]:
        soup_model.add_adapter(name, soup_model.peft_config["objective_0"])
    soup_times = []
    for preference in sample_preferences(args.num_preferences, args.soup_switches, rng=2).tolist():
        _synchronize(args.device)
        start = time.perf_counter()
        soup_model.add_weighted_adapter(objectives, preference, adapter_name="soup", combination_type="linear")
        soup_model.set_adapter("soup")
        _synchronize(args.device)
        soup_times.append(time.perf_counter() - start)
        soup_model.set_adapter(objectives[0])
        soup_model.delete_adapter("soup")
    soup = statistics.median(soup_times)

    print("\npreference switch, median:")
    print(f"  panacea set_preference        {switch * 1e3:9.4f} ms   (target <= 0.1 ms; {args.switches} calls)")
    print(f"  peft add_weighted_adapter     {soup * 1e3:9.1f} ms   (rewarded soups, {args.soup_switches} new λ)")
    print(f"  speed-up                      {soup / switch:9,.0f}x   (target >= 1,000x)")


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
