"""benchmarks/vertex_drift.py: each vertex's ‖ΔW‖_F, read from the run's own LoRA export, equals the dense update."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import load_script, tiny_soup, train_tiny_run

ROOT = Path(__file__).resolve().parents[1]


def _script(monkeypatch):
    return load_script(ROOT / "benchmarks" / "vertex_drift.py", monkeypatch)


def test_a_panacea_vertex_drift_is_the_norm_of_the_dense_update_its_merge_adds(monkeypatch, tmp_path, capsys):
    script = _script(monkeypatch)
    run = train_tiny_run(tmp_path, max_steps=2)
    drift = script.vertex_drift(run)
    loaded = script.load_run(run, device="cpu")
    model, names = loaded.model, loaded.dimensions
    assert list(drift) == names
    for index, name in enumerate(names):
        vertex = [float(index == other) for other in range(2)]
        layers = dict(model.adapter_layers())
        before = {key: layer.base_layer.weight.detach().clone().double() for key, layer in layers.items()}
        model.merge(vertex)
        dense = [
            float(torch.linalg.matrix_norm(layer.base_layer.weight.detach().double() - before[key]))
            for key, layer in layers.items()
        ]
        model.unmerge()
        assert drift[name]["modules"] == len(dense)
        assert drift[name]["mean"] == pytest.approx(float(np.mean(dense)), rel=1e-4)
        assert drift[name]["median"] == pytest.approx(float(np.median(dense)), rel=1e-4)
    assert drift[names[0]]["mean"] != drift[names[1]]["mean"]  # each vertex its own update
    assert script.main([str(run)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {run} |")]
    assert len(rows) == 2 and all(row.endswith("| 1.00× |") for row in rows)


def test_a_soups_vertex_is_its_member_alone(monkeypatch, tmp_path):
    script = _script(monkeypatch)
    soup = tiny_soup(rank=2)  # scaling 1
    soup.export_lora([1.0, 0.0], tmp_path / "lora")
    norms = script.lora_update_norms(tmp_path / "lora")
    members = [float(torch.linalg.matrix_norm(B[0].double() @ A[0].double())) for A, B in soup._members.stacks()]
    assert len(norms) == len(members) > 0
    assert sorted(norms.values()) == pytest.approx(sorted(members), rel=1e-5)


@pytest.mark.parametrize(("rslora", "scaling"), [(False, 8 / 2), (True, 8 / 2**0.5)])
def test_the_update_norm_carries_peft_s_scaling(monkeypatch, tmp_path, rslora, scaling):
    script = _script(monkeypatch)
    A, B = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    save_file({"m.q_proj.lora_A.weight": A, "m.q_proj.lora_B.weight": B}, tmp_path / "adapter_model.safetensors")
    config = {"r": 2, "lora_alpha": 8, "use_rslora": rslora}
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    assert script.lora_update_norms(tmp_path) == {"m.q_proj": pytest.approx(scaling * math.sqrt(1 + 4 + 9))}
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "rank_pattern": {"q_proj": 4}}))
    with pytest.raises(ValueError, match="rank_pattern/alpha_pattern"):
        script.lora_update_norms(tmp_path)
