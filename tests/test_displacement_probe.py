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
                per_pair = table[pair_set.name][label]["per_pair"]
                assert per_pair["ids"] == [p.id for p in pairs]
                assert sum(per_pair[name]) / len(pairs) == pytest.approx(moved["value"], abs=1e-12)
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


def synthetic_table(ids, chosen, rejected, clusters=None) -> dict:
    """A `displacement` result of one pair set and one vertex from per-pair values."""
    clusters = clusters or [f"{index // 2:016x}" for index in range(len(ids))]  # prompts in twos
    per_pair = {"ids": list(ids), "clusters": clusters, "chosen": list(chosen), "rejected": list(rejected)}
    return {"harmless": {"(0.0, 1.0)": {"per_pair": per_pair}}}


def test_paired_differences_pair_each_pair_with_itself(monkeypatch):
    script = load_script(ROOT / "benchmarks" / "displacement_probe.py", monkeypatch)
    rng = random.Random(1)
    ids = [f"h{index}" for index in range(20)]
    chosen, rejected = [rng.gauss(-0.3, 0.2) for _ in ids], [rng.gauss(-0.5, 0.3) for _ in ids]
    first = synthetic_table(ids, chosen, rejected)
    # every pair moved by the same amount: a paired interval has no width; resampling the two runs apart would
    shifted = synthetic_table(ids, [value - 0.25 for value in chosen], [value + 0.1 for value in rejected])
    gaps = script.paired_differences(shifted, first, where="second")["harmless"]["(0.0, 1.0)"]
    assert gaps["chosen"]["difference"] == pytest.approx(-0.25)
    assert gaps["chosen"]["interval"] == pytest.approx([-0.25, -0.25]) and gaps["chosen"]["direction"] == "lower"
    assert gaps["rejected"]["interval"] == pytest.approx([0.1, 0.1]) and gaps["rejected"]["direction"] == "higher"
    # noise around no shift: a tie, and the estimate is the difference of the two means
    noisy = synthetic_table(ids, [value + rng.gauss(0, 0.05) for value in chosen], rejected)
    gap = script.paired_differences(noisy, first, where="second")["harmless"]["(0.0, 1.0)"]["chosen"]
    expected = sum(noisy["harmless"]["(0.0, 1.0)"]["per_pair"]["chosen"]) / 20 - sum(chosen) / 20
    assert gap["difference"] == pytest.approx(expected) and gap["direction"] == "tie"
    assert gap["interval"][0] < 0 < gap["interval"][1]
    row = script.format_differences("second", {"harmless": {"(0.0, 1.0)": gaps}})
    assert row == "| second | harmless | (0.0, 1.0) | -0.250 [-0.250, -0.250] lower | +0.100 [+0.100, +0.100] higher |"


def test_paired_differences_refuse_runs_scored_on_other_pairs(monkeypatch):
    script = load_script(ROOT / "benchmarks" / "displacement_probe.py", monkeypatch)
    first = synthetic_table(["a", "b"], [0.0, 0.1], [0.0, 0.1])
    other = synthetic_table(["a", "c"], [0.0, 0.1], [0.0, 0.1])
    with pytest.raises(ValueError, match=r"runs/other: pair set 'harmless' holds other pairs"):
        script.paired_differences(other, first, where="runs/other")


def test_paired_differences_keep_the_tables_order_of_sets_and_vertices(monkeypatch):
    script = load_script(ROOT / "benchmarks" / "displacement_probe.py", monkeypatch)
    cell = synthetic_table(["a", "b"], [0.0, 0.1], [0.0, 0.1])["harmless"]["(0.0, 1.0)"]
    vertices = ["(1.0, 0.0)", "(0.0, 1.0)", "(0.5, 0.5)"]
    table = {name: {vertex: cell for vertex in vertices} for name in ["helpful", "harmless", "xstest"]}
    gaps = script.paired_differences(table, table, where="same")
    assert list(gaps) == ["helpful", "harmless", "xstest"] and all(list(v) == vertices for v in gaps.values())
