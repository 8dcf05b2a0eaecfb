"""benchmarks/dpo_throughput.py on a tiny random Llama: both contenders train the same token ids, step by step."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_llama, tiny_tokenizer
from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
# A chat template without special tokens: TRL templates the conversational pairs, ours the prompt.
TEMPLATE = "{% for message in messages %}{{ message['content'] }} {% endfor %}"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports _children, as when run
    return load_script(ROOT / "benchmarks" / "dpo_throughput.py", monkeypatch)


def test_a_tiny_run_of_both_contenders_trains_the_same_tokens_from_a_fresh_adapters_loss(
    bench, tmp_path, monkeypatch, capsys
):
    model = tmp_path / "model"
    tiny_llama().save_pretrained(model)
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(model)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"p{i}",
                    "prompt": " ".join(f"w{j}" for j in range(i, i + 1 + i % 5)),  # lengths differ from step to step
                    "chosen": f"w{i + 1} w{i + 9}",
                    "rejected": f"w{i + 3} w{i + 4} w{i + 8}",
                    "dim": "helpful",
                    "split": "train",
                }
            )
            + "\n"
            for i in range(4, 40)
        )
    )
    argv = ["--model", str(model), "--data", str(pairs), "--steps", "3", "--batch-size", "4"]
    argv += ["--micro-batch-size", "2", "--max-length", "24", "--max-prompt-length", "12", "--svd-rank", "2"]
    argv += ["--repeats", "1", "--threads", "1", "--matmul-size", "64"]
    monkeypatch.setattr(sys, "argv", ["dpo_throughput.py", *argv])
    bench.main()
    out = capsys.readouterr().out
    checks = next(line for line in out.splitlines() if line.startswith("- Checks:"))
    assert "token ids identical in both: yes" in checks and "tokens per step identical: yes" in checks
    ours, theirs = (float(value) for value in re.search(r"ours ([\d.]+), TRL ([\d.]+);", checks).groups())
    assert ours == pytest.approx(math.log(2), abs=1e-4) and theirs == pytest.approx(math.log(2), abs=1e-4)
    ratio = re.search(r"\*\*ours / TRL\*\* \(median of per-repeat ratios\) \| \*\*([\d.]+)×\*\*", out)
    assert ratio and float(ratio.group(1)) > 0
