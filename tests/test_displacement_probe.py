"""benchmarks/displacement_probe.py: per-token log-prob change of the validation responses at each vertex."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from panacea.training import TrainConfig, train

from panacea._config import dataclass_from_dict
from tests.helpers import config_dict, load_script, make_workspace

ROOT = Path(__file__).resolve().parents[1]
DIMENSIONS = ("helpful", "harmless")


def tiny_run(root: Path, split: str) -> Path:
    """A tiny run trained on `split` ('train' holds the validation prompts, 'fit' does not) of 64 word-salad pairs
    per dimension, prompts in twos, so that some fall in the validation fold."""
    make_workspace(root)
    rng = random.Random(0)
    for name in DIMENSIONS:
        with open(root / f"{name}.jsonl", "w") as handle:
            for index in range(64):
                words = [" ".join(f"w{rng.randrange(4, 64)}" for _ in range(rng.randrange(2, 5))) for _ in range(3)]
                record = dict(
                    id=f"{name}{index}", prompt=f"p{index // 2} {words[2]}", chosen=words[0], rejected=words[1]
                )
                handle.write(json.dumps({**record, "dim": name, "split": "train"}) + "\n")
    data = config_dict(root, root / "run", max_steps=3, save_steps=3)
    data["dimensions"] = [{"name": name, "train": [{"path": str(root / f"{name}.jsonl"), "split": split}]}
                          for name in DIMENSIONS]  # fmt: skip
    train(dataclass_from_dict(TrainConfig, data, where="test"))
    return root / "run"


def dense_log_prob(model, prompt_ids, response_ids) -> float:
    """Σ log p(response | prompt) from one plain forward of `model` (the base, merged or not)."""
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].double()
    return float(F.log_softmax(logits, -1).gather(1, torch.tensor(response_ids)[:, None]).sum())


def test_each_vertexs_change_is_the_merged_models_log_prob_less_the_base_models_per_token(monkeypatch, tmp_path):
    script = load_script(ROOT / "benchmarks" / "displacement_probe.py", monkeypatch)
    run = tiny_run(tmp_path, "train")
    table = script.displacement(run, limit=3)
    loaded = script.load_run(run, device="cpu")
    sets, trained = script.validation_pair_sets(loaded.config, loaded.tokenizer)
    assert list(table) == [pair_set.name for pair_set in sets] and all(pair_set.pairs for pair_set in sets)
    model, base = loaded.model, loaded.model.base_model
    for pair_set in sets:
        pairs = pair_set.pairs[:3]
        for index, label in enumerate(["(1.0, 0.0)", "(0.0, 1.0)"]):
            for name in script.RESPONSES:
                with model.disable_adapter():
                    before = [dense_log_prob(base, p.prompt_ids, getattr(p, f"{name}_ids")) for p in pairs]
                model.merge(torch.eye(2)[index])
                after = [dense_log_prob(base, p.prompt_ids, getattr(p, f"{name}_ids")) for p in pairs]
                model.unmerge()
                lengths = [len(getattr(p, f"{name}_ids")) for p in pairs]
                expected = sum((a - b) / n for a, b, n in zip(after, before, lengths, strict=True)) / len(pairs)
                moved = table[pair_set.name][label][name]
                assert expected != 0.0  # the run moved the responses: not a check of zeros
                assert moved["value"] == pytest.approx(expected, abs=1e-5)
                assert moved["interval"][0] <= moved["value"] <= moved["interval"][1]
            # a run trained on all of 'train' has trained on its validation pairs, and the table says so
            assert table[pair_set.name][label]["pairs"] == table[pair_set.name][label]["trained_on"] == len(pairs)
            assert {pair.id for pair in pairs} <= trained[pair_set.dimension]
    rows = script.format_displacement("tiny", table).splitlines()
    assert len(rows) == 2 * len(sets) and rows[0].startswith(
        f"| tiny | {sets[0].name} | (1.0, 0.0) | 3 (3 trained on) | "
    )


def test_a_run_trained_on_fit_has_trained_on_none_of_the_validation_pairs(monkeypatch, tmp_path):
    script = load_script(ROOT / "benchmarks" / "displacement_probe.py", monkeypatch)
    table = script.displacement(tiny_run(tmp_path, "fit"), limit=3)
    assert [vertex["trained_on"] for vertices in table.values() for vertex in vertices.values()] == [0] * 4
