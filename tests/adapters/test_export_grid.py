"""Exports for other engines: a grid of plain LoRAs (a server routes each request to the nearest point) and the m
vertex LoRAs whose λ-weighted merge is the Panacea model at any λ on the simplex."""

from __future__ import annotations

import json

import pytest
import torch
from panacea.adapters import serialization
from panacea.adapters.serialization import INDEX_NAME, WEIGHTS_NAME, nearest_grid_adapter
from peft import PeftModel
from safetensors.torch import load_file

from panacea import sample_preferences, simplex_grid
from tests.conftest import panacea_llama, tiny_llama
from tests.helpers import input_ids

# Max |Δ logit|. The merge tests run in float64, so that only a wrong formula (λ², √λ, σ counted m times: errors of
# 0.1 and more here), not float32 round-off (~1e-6 on these random weights), can exceed it.
TOLERANCE = 1e-6
ALPHA = 10.0  # scaling = alpha / (k + m·r) ≠ 1, so a lost or doubled scaling shows


def dirichlet(num_preferences: int, count: int = 5, seed: int = 0) -> torch.Tensor:
    """`count` λ ~ Dirichlet(1), (count, m), in float64 summing to 1 (the split of σ is exact only when Σ λ_i = 1)."""
    preferences = sample_preferences(num_preferences, count, rng=seed).double()
    return preferences / preferences.sum(-1, keepdim=True)


def load_set(directory, index, dtype=torch.float64):
    """Every LoRA of an exported set on one fresh tiny Llama, as peft adapters 'lora0', 'lora1', …"""
    names = [f"lora{position}" for position in range(len(index["adapters"]))]
    folders = [directory / entry["folder"] for entry in index["adapters"]]
    model = PeftModel.from_pretrained(tiny_llama(dtype=dtype), folders[0], adapter_name=names[0]).eval()
    for name, folder in zip(names[1:], folders[1:], strict=True):
        model.load_adapter(folder, adapter_name=name)
    return model, names


def max_difference(left: torch.Tensor, right: torch.Tensor) -> float:
    return float((left - right).abs().max())


# --- the vertex export -------------------------------------------------------------------------------------


@pytest.mark.parametrize("preference_rank", [1, 2], ids=["r=1", "r=2"])
@pytest.mark.parametrize("num_preferences", [2, 3], ids=["m=2", "m=3"])
@pytest.mark.parametrize("svd_rank", [0, 3], ids=["k=0", "k=3"])
def test_peft_cat_merge_of_the_vertices_is_the_panacea_model(tmp_path, svd_rank, num_preferences, preference_rank):
    """peft's cat: lora_A = [λ_1·scaling_1·A_1; …], lora_B = [B_1 … B_m], so ΔW = Σ λ_i B_i A_i (each scaling_i = 1)."""
    model = panacea_llama(
        dtype=torch.float64,
        svd_rank=svd_rank,
        num_preferences=num_preferences,
        preference_rank=preference_rank,
        alpha=ALPHA,
    )
    index = model.export_vertex_loras(tmp_path / "vertices")
    assert [entry["preference"] for entry in index["adapters"]] == torch.eye(num_preferences).tolist()
    merged, vertices = load_set(tmp_path / "vertices", index)
    ids = input_ids()
    with torch.no_grad():
        first, last = (model(ids, preference=vertex).logits for vertex in torch.eye(num_preferences)[[0, -1]])
    assert max_difference(first, last) > 0.1  # the vertices differ, so a wrong mix shows
    for position, preference in enumerate(dirichlet(num_preferences)):
        merged.add_weighted_adapter(vertices, preference.tolist(), f"mix{position}", combination_type="cat")
        merged.set_adapter(f"mix{position}")
        with torch.no_grad():
            assert max_difference(merged(ids).logits, model(ids, preference=preference).logits) <= TOLERANCE


def test_peft_svd_merge_is_exact_too_and_linear_is_not(tmp_path):
    """svd (peft's default) refactors Σ λ_i ΔW_i at rank max r_i = k + m·r ≥ rank ΔW(λ), so it loses nothing;
    linear weights A and B by √λ_i each, (Σ √λ_i)·(Σ √λ_i B_i)·A, which is not ΔW(λ)."""
    model = panacea_llama(dtype=torch.float64, svd_rank=3, num_preferences=3, alpha=ALPHA)
    index = model.export_vertex_loras(tmp_path / "vertices")
    merged, vertices = load_set(tmp_path / "vertices", index)
    ids, preference = input_ids(), dirichlet(3, count=1)[0]
    with torch.no_grad():
        expected = model(ids, preference=preference).logits
    for combination_type in ("svd", "linear"):
        merged.add_weighted_adapter(vertices, preference.tolist(), combination_type, combination_type=combination_type)
        merged.set_adapter(combination_type)
        with torch.no_grad():
            difference = max_difference(merged(ids).logits, expected)
        assert difference <= TOLERANCE if combination_type == "svd" else difference > 0.01, combination_type


def test_a_tensor_by_tensor_weighted_sum_of_the_vertices_is_the_dense_update(tmp_path):
    """LoRAX's `linear` merge sums each tensor: A = Σ λ_i A_i, B = Σ λ_i B_i (predibase/lorax, LinearMerge). The
    vertices share A, so B·A is the Panacea update, here against scaling · B diag(σ, s·λ ⊗ 1_r) A built densely."""
    model = panacea_llama(dtype=torch.float64, svd_rank=3, num_preferences=3, preference_rank=2, alpha=ALPHA)
    index = model.export_vertex_loras(tmp_path / "vertices")
    vertices = [load_file(tmp_path / "vertices" / entry["folder"] / WEIGHTS_NAME) for entry in index["adapters"]]
    for preference in dirichlet(3):
        for name, layer in model.adapter_layers():
            key = f"base_model.model.{name}"
            weighted = list(zip(preference, vertices, strict=True))
            lora_a = sum(weight * vertex[f"{key}.lora_A.weight"] for weight, vertex in weighted)
            lora_b = sum(weight * vertex[f"{key}.lora_B.weight"] for weight, vertex in weighted)
            diagonal = torch.cat([layer.singular_values, layer.preference_scale * preference.repeat_interleave(2)])
            dense = layer.scaling * layer.lora_B @ torch.diag(diagonal) @ layer.lora_A
            assert max_difference(lora_b @ lora_a, dense.detach()) <= 1e-12, name


def test_the_vertex_merge_in_float32_is_within_round_off(tmp_path):
    """What users run: fp32 adapters, λ in fp32. The merge differs from the Panacea model by float round-off only."""
    model = panacea_llama(svd_rank=3, num_preferences=2, alpha=ALPHA)
    index = model.export_vertex_loras(tmp_path / "vertices")
    merged, vertices = load_set(tmp_path / "vertices", index, dtype=torch.float32)
    ids, preference = input_ids(), sample_preferences(2, rng=3)
    merged.add_weighted_adapter(vertices, preference.tolist(), "mix", combination_type="cat")
    merged.set_adapter("mix")
    with torch.no_grad():
        assert max_difference(merged(ids).logits, model(ids, preference=preference).logits) <= 1e-5


# --- the grid export ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_preferences", "num_points"), [(2, 5), (3, 4)], ids=["m=2", "m=3"])
def test_every_grid_point_is_the_panacea_model_at_its_preference(tmp_path, num_preferences, num_points):
    model = panacea_llama(svd_rank=3, num_preferences=num_preferences, preference_rank=2, alpha=ALPHA)
    index = model.export_lora_grid(num_points, tmp_path / "grid")
    grid = simplex_grid(num_preferences, num_points)
    torch.testing.assert_close(torch.tensor([entry["preference"] for entry in index["adapters"]]), grid)
    served, names = load_set(tmp_path / "grid", index, dtype=torch.float32)
    ids = input_ids()
    for name, preference in zip(names, grid, strict=True):
        served.set_adapter(name)
        with torch.no_grad():
            assert max_difference(served(ids).logits, model(ids, preference=preference).logits) <= TOLERANCE


def test_grid_folders_are_named_by_preference_and_indexed(tmp_path):
    named = panacea_llama(preference_names=["helpful", "harm less/x"], target_modules=["q_proj"])
    named.base_model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    index = named.export_lora_grid(11, tmp_path / "named")
    assert index["adapters"][2] == {"preference": [0.8, 0.2], "folder": "helpful-0.80_harm_less_x-0.20"}
    assert json.loads((tmp_path / "named" / INDEX_NAME).read_text()) == index
    assert {key: index[key] for key in index if key != "adapters"} == {
        "format_version": 1,
        "kind": "grid",
        "num_points": 11,
        "preference_names": ["helpful", "harm less/x"],
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "rank": 5,  # k + m·r = 3 + 2
    }
    entries = sorted(path.name for path in (tmp_path / "named").iterdir())
    assert entries == sorted([INDEX_NAME, "README.md", *(entry["folder"] for entry in index["adapters"])])
    member = tmp_path / "named" / "helpful-0.80_harm_less_x-0.20"
    assert sorted(path.name for path in member.iterdir()) == ["README.md", "adapter_config.json", WEIGHTS_NAME]
    assert "Preference: helpful=0.8, harm less/x=0.2" in (member / "README.md").read_text()
    assert "nearest_grid_adapter" in (tmp_path / "named" / "README.md").read_text()
    unnamed = panacea_llama(target_modules=["q_proj"]).export_lora_grid(3, tmp_path / "unnamed")
    assert [entry["folder"] for entry in unnamed["adapters"]] == ["1.00-0.00", "0.50-0.50", "0.00-1.00"]
    assert unnamed["preference_names"] is None


@pytest.mark.parametrize(("num_points", "example"), [(41, "0.95-0.05"), (101, "0.990-0.010")])
def test_fine_grids_get_the_decimals_that_keep_folder_names_apart(tmp_path, num_points, example):
    index = panacea_llama(target_modules=["q_proj"]).export_lora_grid(num_points, tmp_path / "grid")
    folders = [entry["folder"] for entry in index["adapters"]]
    assert len(set(folders)) == len(folders) == num_points and example in folders


def test_vertex_export_is_indexed_and_its_readme_shows_the_merge(tmp_path):
    model = panacea_llama(preference_names=["helpful", "harmless"], target_modules=["q_proj"])
    index = model.export_vertex_loras(tmp_path / "vertices")
    assert (index["kind"], index["num_points"]) == ("vertices", 2)
    folders = [entry["folder"] for entry in index["adapters"]]
    assert folders == ["helpful-1.00_harmless-0.00", "helpful-0.00_harmless-1.00"]
    readme = (tmp_path / "vertices" / "README.md").read_text()
    assert 'combination_type="cat")' in readme and 'adapter_name="vertex1"' in readme


# --- routing to the nearest grid point ---------------------------------------------------------------------


def test_nearest_grid_adapter_picks_the_closest_point_and_the_first_of_a_tie(tmp_path):
    model = panacea_llama(preference_names=["helpful", "harmless"], target_modules=["q_proj"])
    index = model.export_lora_grid(5, tmp_path / "grid")  # steps of 0.25
    assert nearest_grid_adapter(index, [0.7, 0.3]) == "helpful-0.75_harmless-0.25"
    assert nearest_grid_adapter(index, {"harmless": 0.3, "helpful": 0.7}) == "helpful-0.75_harmless-0.25"
    assert nearest_grid_adapter(tmp_path / "grid", [0.1, 0.9]) == "helpful-0.00_harmless-1.00"  # the folder
    assert nearest_grid_adapter(tmp_path / "grid" / INDEX_NAME, [0.4, 0.6]) == "helpful-0.50_harmless-0.50"
    # (0.875, 0.125) is exactly halfway between (1, 0) and (0.75, 0.25): the point listed first wins
    assert nearest_grid_adapter(index, [0.875, 0.125]) == "helpful-1.00_harmless-0.00"


def test_nearest_grid_adapter_measures_euclidean_distance_for_three_dimensions():
    grid = simplex_grid(3, 11)
    index = {"adapters": [{"preference": row, "folder": str(position)} for position, row in enumerate(grid.tolist())]}
    nearest = grid[int(nearest_grid_adapter(index, [0.33, 0.33, 0.34]))]
    # squared distances: (0.3, 0.3, 0.4) 0.0054; (0.4, 0.3, 0.3) and (0.3, 0.4, 0.3) 0.0074
    torch.testing.assert_close(nearest, torch.tensor([0.3, 0.3, 0.4]))


def test_nearest_grid_adapter_refuses_bad_input(tmp_path):
    index = panacea_llama(target_modules=["q_proj"]).export_lora_grid(3, tmp_path / "grid")
    with pytest.raises(ValueError, match="sum to 1"):
        nearest_grid_adapter(index, [0.5, 0.6])
    with pytest.raises(ValueError, match="one preference of shape"):
        nearest_grid_adapter(index, [[0.5, 0.5], [1.0, 0.0]])
    with pytest.raises(ValueError, match="no preference names"):
        nearest_grid_adapter(index, {"helpful": 1.0, "harmless": 0.0})
    with pytest.raises(ValueError, match="not a panacea LoRA index"):
        nearest_grid_adapter({"peft_type": "LORA"}, [0.5, 0.5])


# --- refusing, and writing atomically ----------------------------------------------------------------------


@pytest.mark.parametrize("export", ["grid", "vertices"])
def test_a_set_export_never_replaces_a_folder_that_holds_something_unless_asked(tmp_path, export):
    model = panacea_llama(target_modules=["q_proj"])
    write = {
        "grid": lambda directory, **options: model.export_lora_grid(3, directory, **options),
        "vertices": lambda directory, **options: model.export_vertex_loras(directory, **options),
    }[export]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"already holds 1 file\(s\) or folder\(s\) \(notes.txt\)"):
        write(tmp_path / "out")
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["notes.txt"]
    index = write(tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / INDEX_NAME).is_file() and (tmp_path / "out" / index["adapters"][0]["folder"]).is_dir()
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"  # as every export: what it did not write stays


def test_a_failed_set_export_leaves_nothing_half_written(tmp_path, monkeypatch):
    model = panacea_llama(target_modules=["q_proj"])
    original, calls = serialization.save_file, {"count": 0}

    def fail_at_the_third_lora(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 3:
            raise OSError("disk full")
        return original(*args, **kwargs)

    monkeypatch.setattr(serialization, "save_file", fail_at_the_third_lora)
    with pytest.raises(OSError, match="disk full"):
        model.export_lora_grid(5, tmp_path / "grid")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its staging folder


def test_an_overwriting_export_leaves_no_stale_lora_of_the_export_it_replaces(tmp_path):
    """A 3-point grid over a 5-point one keeps none of the 5's subfolders; a set over a single LoRA removes that
    LoRA's top-level weights (peft would load them); a single LoRA over a set removes the index and subfolders.
    A user's file stays throughout."""
    model = panacea_llama(target_modules=["q_proj"])
    out = tmp_path / "out"
    five = model.export_lora_grid(5, out)
    (out / "notes.txt").write_text("mine")
    three = model.export_lora_grid(3, out, overwrite=True)
    expected = {entry["folder"] for entry in three["adapters"]} | {INDEX_NAME, "README.md", "notes.txt"}
    assert {path.name for path in out.iterdir()} == expected
    assert len(five["adapters"]) == 5 and len(three["adapters"]) == 3
    model.export_lora([0.5, 0.5], out, overwrite=True)
    assert {path.name for path in out.iterdir()} == {WEIGHTS_NAME, "adapter_config.json", "README.md", "notes.txt"}
    index = model.export_vertex_loras(out, overwrite=True)
    expected = {entry["folder"] for entry in index["adapters"]} | {INDEX_NAME, "README.md", "notes.txt"}
    assert {path.name for path in out.iterdir()} == expected
