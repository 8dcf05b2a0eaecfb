"""Rewarded soups at evaluation: the documented 2 × 2 case, SoupModel against dense weights and peft, bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from panacea.adapters import SoupModel, get_lora_model, lora_config_for, soup_delta
from panacea.adapters.serialization import base_model_fingerprint
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from torch import nn

from panacea import PanaceaConfig
from panacea.generation import generate_grid
from tests.conftest import panacea_llama, tiny_gpt2, tiny_llama, tiny_tokenizer
from tests.helpers import input_ids

NAMES = ["a", "b"]
TARGETS = ["q_proj", "v_proj", "down_proj"]


def make_soup_run(root, rank=3, alpha=6, names=NAMES):
    """A soups run folder without training: one random peft LoRA per dimension, and a complete manifest."""
    runs = {}
    for index, name in enumerate(names):
        lora = get_peft_model(
            tiny_llama(), LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS, task_type="CAUSAL_LM")
        )
        generator = torch.Generator().manual_seed(10 + index)
        with torch.no_grad():
            for key, parameter in lora.named_parameters():
                if "lora_" in key:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        lora.save_pretrained(root / "soups" / name / "adapter")
        runs[name] = {"adapter": f"soups/{name}/adapter"}
    manifest = {
        "format_version": 1,
        "method": "soups",
        "dimensions": list(names),
        "runs": runs,
        "complete": True,
        "base_model": base_model_fingerprint(tiny_llama()),
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def members(run, names=NAMES):
    """{module: [(A_i, B_i) for each dimension]} read straight from the saved files."""
    result = {}
    for name in names:
        for key, tensor in load_file(run / "soups" / name / "adapter" / "adapter_model.safetensors").items():
            module, factor = key.removeprefix("base_model.model.").rsplit(".lora_", 1)
            result.setdefault(module, {}).setdefault(name, {})[factor[0]] = tensor
    return {module: [(pair[name]["A"], pair[name]["B"]) for name in names] for module, pair in result.items()}


def dense_logits(run, preference, mode, scaling=2.0):
    """Logits of W0 + ΔW written into a fresh base model's weights, ΔW computed layer by layer in fp64."""
    model = tiny_llama()
    weights = torch.as_tensor(preference, dtype=torch.float64)
    with torch.no_grad():
        for module, factors in members(run).items():
            pairs = [(w, a.double(), b.double()) for w, (a, b) in zip(weights, factors, strict=True)]
            if mode == "ab":  # s (Σ λ_i B_i)(Σ λ_i A_i)
                delta = scaling * sum(w * b for w, _, b in pairs) @ sum(w * a for w, a, _ in pairs)
            else:  # Σ λ_i s B_i A_i
                delta = sum(w * scaling * b @ a for w, a, b in pairs)
            model.get_submodule(module).weight += delta.float()
        return model(input_ids=input_ids()).logits


# --- the documented test case (docs/algorithms.md, Rewarded soups) ------------------------------------------


def two_by_two_peft():
    """A 2 × 2 layer, W0 = 0, with peft LoRAs 'one' (A₁ = [1,0], B₁ = [1,0]ᵀ) and 'two' (A₂ = [0,1], B₂ = [0,1]ᵀ)."""
    layer = nn.Sequential(nn.Linear(2, 2, bias=False))
    nn.init.zeros_(layer[0].weight)
    model = get_peft_model(layer, LoraConfig(r=1, lora_alpha=1, target_modules=["0"]), adapter_name="one")
    model.add_adapter("two", LoraConfig(r=1, lora_alpha=1, target_modules=["0"]))
    lora = model.base_model.model[0]
    with torch.no_grad():
        for name, vector in (("one", [1.0, 0.0]), ("two", [0.0, 1.0])):
            lora.lora_A[name].weight.copy_(torch.tensor([vector]))
            lora.lora_B[name].weight.copy_(torch.tensor([vector]).T)
    return model


def peft_delta(model, combination_type):
    model.add_weighted_adapter(["one", "two"], [0.5, 0.5], combination_type, combination_type=combination_type)
    model.set_adapter(combination_type)
    with torch.no_grad():
        return model(torch.eye(2)).T  # rows of x Wᵀ for x = I are the columns of W


def test_the_documented_two_by_two_case():
    A = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (m, R, in)
    B = A.transpose(1, 2)  # (m, out, R)
    half = torch.tensor([0.5, 0.5])
    assert torch.equal(soup_delta(A, B, half, 1.0, "ab"), torch.full((2, 2), 0.25))
    assert torch.equal(soup_delta(A, B, half, 1.0, "delta"), torch.diag(half))
    torch.testing.assert_close(peft_delta(two_by_two_peft(), "linear"), torch.full((2, 2), 0.5))  # √½ · √½
    torch.testing.assert_close(peft_delta(two_by_two_peft(), "cat"), torch.diag(half))


# --- SoupModel against independent references ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["ab", "delta"])
def test_soup_logits_equal_dense_weights_at_random_preferences(tmp_path, mode):
    run = make_soup_run(tmp_path)
    soup = SoupModel.from_run(tiny_llama(), run, mode)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        weight = float(torch.rand((), generator=generator))
        preference = [weight, 1 - weight]
        logits = soup(input_ids=input_ids(), preference=preference).logits
        torch.testing.assert_close(logits, dense_logits(run, preference, mode), atol=1e-5, rtol=1e-5)


def test_delta_mode_equals_peft_add_weighted_adapter_cat(tmp_path):
    run = make_soup_run(tmp_path)
    peft_model = PeftModel.from_pretrained(tiny_llama(), run / "soups/a/adapter", adapter_name="a")
    peft_model.load_adapter(run / "soups/b/adapter", adapter_name="b")
    peft_model.add_weighted_adapter(["a", "b"], [0.3, 0.7], "cat", combination_type="cat")
    peft_model.set_adapter("cat")
    soup = SoupModel.from_run(tiny_llama(), run, "delta")
    torch.testing.assert_close(
        soup(input_ids=input_ids(), preference=[0.3, 0.7]).logits,
        peft_model(input_ids=input_ids()).logits,
        atol=1e-5,
        rtol=1e-5,
    )


@pytest.mark.parametrize("mode", ["ab", "delta"])
def test_at_a_vertex_both_modes_are_that_dimensions_lora(tmp_path, mode):
    run = make_soup_run(tmp_path)
    member = PeftModel.from_pretrained(tiny_llama(), run / "soups/b/adapter")
    soup = SoupModel.from_run(tiny_llama(), run, mode)
    expected = member(input_ids=input_ids()).logits
    torch.testing.assert_close(soup(input_ids=input_ids(), preference=[0, 1]).logits, expected, atol=1e-5, rtol=0)


def test_a_switch_rebuilds_only_when_the_preference_changes_and_is_timed(tmp_path):
    soup = SoupModel.from_run(tiny_llama(), make_soup_run(tmp_path))
    for preference in ([0.2, 0.8], [0.2, 0.8], torch.tensor([[0.2, 0.8], [0.2, 0.8]]), {"a": 0.5, "b": 0.5}):
        soup(input_ids=input_ids(), preference=preference)
    assert len(soup.switch_seconds) == 2 and all(seconds > 0 for seconds in soup.switch_seconds)
    assert soup.last_switch_seconds == soup.switch_seconds[-1]
    assert soup.active_preference.tolist() == [0.5, 0.5]


def test_equal_rows_match_one_vector_and_generation_takes_a_preference(tmp_path):
    soup = SoupModel.from_run(tiny_llama(), make_soup_run(tmp_path), "delta")
    rows = torch.tensor([[0.6, 0.4]] * 3)
    torch.testing.assert_close(
        soup(input_ids=input_ids(), preference=rows).logits, soup(input_ids=input_ids(), preference=[0.6, 0.4]).logits
    )
    output = soup.generate(input_ids=input_ids(), preference=rows, max_new_tokens=3, do_sample=False)
    assert output.shape == (3, 9)


def test_disable_adapter_runs_the_base_model(tmp_path):
    soup = SoupModel.from_run(tiny_llama(), make_soup_run(tmp_path))
    with soup.disable_adapter():
        disabled = soup(input_ids=input_ids()).logits  # no λ needed for the base model
    torch.testing.assert_close(disabled, tiny_llama()(input_ids=input_ids()).logits)
    assert not soup.training and soup.device.type == "cpu" and soup.config.model_type == "llama"


@pytest.mark.parametrize("mode, rank", [("ab", 3), ("delta", 6)])
def test_export_lora_writes_the_mix_as_a_plain_peft_lora(tmp_path, mode, rank):
    soup = SoupModel.from_run(tiny_llama(), make_soup_run(tmp_path / "run"), mode)
    soup.export_lora([0.25, 0.75], tmp_path / "export")
    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path / "export")
    assert loaded.peft_config["default"].r == rank and loaded.peft_config["default"].lora_alpha == rank
    torch.testing.assert_close(
        loaded(input_ids=input_ids()).logits, soup(input_ids=input_ids(), preference=[0.25, 0.75]).logits
    )


def test_a_soups_export_over_an_earlier_grid_export_replaces_it_whole(tmp_path):
    """SoupModel.export_lora(overwrite=True) kept an earlier grid export's index and LoRA folders beside the new LoRA
    (PanaceaModel's export replaced it whole, as docs/adapter.md says; found by an independent review)."""
    panacea_llama(preference_names=NAMES).export_lora_grid(3, tmp_path / "export")
    (tmp_path / "export" / "notes.txt").write_text("mine")  # not an export's: stays
    soup = SoupModel.from_run(tiny_llama(), make_soup_run(tmp_path / "run"))
    soup.export_lora([0.25, 0.75], tmp_path / "export", overwrite=True)
    assert sorted(path.name for path in (tmp_path / "export").iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "notes.txt",
    ]  # fmt: skip


def test_an_export_never_replaces_a_members_trained_lora_even_with_overwrite(tmp_path):
    """A member's adapter (RUN/soups/NAME/adapter) and a checkpoint's are plain peft folders, which the export check
    took for an earlier export and replaced with --overwrite (a review)."""
    run = make_soup_run(tmp_path / "run")
    (run / "soups" / "a" / "config.yaml").write_text("seed: 0\n")  # a member is a training run of its own
    checkpoint = run / "soups" / "b" / "checkpoints" / "step-10" / "adapter"
    shutil.copytree(run / "soups" / "b" / "adapter", checkpoint)
    soup = SoupModel.from_run(tiny_llama(), run)
    for target in (run / "soups" / "a" / "adapter", checkpoint):
        before = (target / "adapter_model.safetensors").read_bytes()
        with pytest.raises(FileExistsError, match="holds a training run's adapter, which an export never replaces"):
            soup.export_lora([0.25, 0.75], target, overwrite=True)
        assert (target / "adapter_model.safetensors").read_bytes() == before


def test_a_plain_lora_matches_the_panacea_adapters_rank_modules_and_scaling():
    config = PanaceaConfig(svd_rank=2, num_preferences=3, preference_rank=2, target_modules=["q_proj", "o_proj"])
    lora = lora_config_for(tiny_llama(), config)
    assert (lora.r, lora.lora_alpha, lora.target_modules, lora.fan_in_fan_out) == (8, 8, {"q_proj", "o_proj"}, False)
    assert lora_config_for(tiny_gpt2(), PanaceaConfig(svd_rank=1, alpha=6.0)).fan_in_fan_out  # Conv1D layers
    first, second = get_lora_model(tiny_llama(), config, seed=3), get_lora_model(tiny_llama(), config, seed=3)
    assert first.adapter_state_dict().keys() == second.adapter_state_dict().keys()
    for key, value in first.adapter_state_dict().items():
        assert torch.equal(value, second.adapter_state_dict()[key])
        assert (value == 0).all() == ("lora_B" in key)  # peft's init: A Kaiming-uniform, B = 0


def test_a_plain_lora_ignores_the_preference_and_trains_under_gradient_checkpointing():
    model = get_lora_model(tiny_llama(), PanaceaConfig(svd_rank=2, num_preferences=2), seed=0).train()
    model.gradient_checkpointing_enable()
    assert model.base_model.is_activation_checkpointing
    logits = model(input_ids=input_ids(), use_cache=False, preference=[0.5, 0.5]).logits
    logits.pow(2).mean().backward()
    grads = {name: parameter.grad for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert all(float(grad.abs().sum()) > 0 for name, grad in grads.items() if "lora_B" in name)  # B = 0: only B moves


# --- bad input: one clear error each ------------------------------------------------------------------------


def test_a_missing_lora_folder_is_named(tmp_path):
    run = make_soup_run(tmp_path)
    (run / "soups/b/adapter/adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="the LoRA of dimension 'b' is missing"):
        SoupModel.from_run(tiny_llama(), run)


def test_a_run_of_another_base_model_is_refused(tmp_path):
    run = make_soup_run(tmp_path)
    with pytest.raises(ValueError, match="was saved for a different base model .*hidden_size: adapter 32, model 48"):
        SoupModel.from_run(tiny_llama(hidden_size=48), run)


def test_mismatched_dimensions_are_refused(tmp_path):
    run = make_soup_run(tmp_path)
    with pytest.raises(ValueError, match=r"the soups run has dimensions \['a', 'b'\], the caller expects \['b', 'a'\]"):
        SoupModel.from_run(tiny_llama(), run, dimensions=["b", "a"])
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "dimensions": ["a", "c"]}))
    with pytest.raises(ValueError, match=r"dimensions \['a', 'c'\] do not match its runs \['a', 'b'\]"):
        SoupModel.from_run(tiny_llama(), run)


def test_an_unfinished_or_foreign_run_is_refused(tmp_path):
    run = make_soup_run(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(
        json.dumps({**manifest, "complete": False, "runs": {"a": manifest["runs"]["a"]}})
    )
    with pytest.raises(ValueError, match=r"unfinished \(no LoRA yet for \['b'\]\)"):
        SoupModel.from_run(tiny_llama(), run)
    (run / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="is not a rewarded-soups run"):
        SoupModel.from_run(tiny_llama(), run)


def test_members_of_different_ranks_are_refused(tmp_path):
    make_soup_run(tmp_path / "other", rank=2)
    run = make_soup_run(tmp_path / "run")
    (run / "soups/b/adapter").rename(tmp_path / "old")
    (tmp_path / "other/soups/b/adapter").rename(run / "soups/b/adapter")
    with pytest.raises(ValueError, match=r"not trained alike \(they differ in \['r'\]\)"):
        SoupModel.from_run(tiny_llama(), run)


def test_bad_preferences_and_modes_give_one_clear_error_each(tmp_path):
    run = make_soup_run(tmp_path)
    with pytest.raises(ValueError, match=r"soup mode must be one of \('ab', 'delta'\), got 'linear'"):
        SoupModel.from_run(tiny_llama(), run, "linear")
    soup = SoupModel.from_run(tiny_llama(), run)
    with pytest.raises(ValueError, match="no preference yet: pass preference="):
        soup(input_ids=input_ids())
    with pytest.raises(ValueError, match=r"one λ per call .* holds 2 different rows"):
        soup(input_ids=input_ids(), preference=torch.tensor([[0.5, 0.5], [0.5, 0.5], [1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"one λ per call"):
        soup.generate(input_ids=input_ids(), preference=torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \(2,\) or \(batch, 2\)"):
        soup(input_ids=input_ids(), preference=[0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="must be non-negative"):
        soup(input_ids=input_ids(), preference=[1.5, -0.5])
    assert soup.switch_seconds == []  # nothing was built for a refused λ


def test_a_grid_of_a_soup_is_read_by_the_soups_dimension_names(tmp_path):
    """A soup has no Panacea config: generate_grid checks λ against its dimensions, so named mappings work there too
    (the generations scorer answers with soups through generate_grid)."""
    soup, tokenizer = SoupModel.from_run(tiny_llama(), make_soup_run(tmp_path)), tiny_tokenizer()
    assert (soup.num_preferences, soup.preference_names) == (2, NAMES)  # what generate_grid validates λ against
    prompts = ["w5 w9", "w7"]
    expected = generate_grid(soup, tokenizer, prompts, torch.tensor([[0.25, 0.75]]), max_new_tokens=4)
    assert generate_grid(soup, tokenizer, prompts, [{"b": 0.75, "a": 0.25}], max_new_tokens=4) == expected
    with pytest.raises(ValueError, match=r"unknown name\(s\) \['c'\] and missing name\(s\) \['a', 'b'\]"):
        generate_grid(soup, tokenizer, prompts, [{"c": 1.0}], max_new_tokens=4)
