"""Saving, loading and exporting adapters; every bad file gives one clear error and nothing half-written."""

import json
import logging
import os

import pytest
import torch
from panacea.adapters import PanaceaLinear, serialization
from peft import PeftModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from panacea import PanaceaConfig, PanaceaModel, get_panacea_model
from tests.conftest import panacea_llama, randomize_adapter, tiny_gpt2, tiny_llama
from tests.helpers import input_ids


@pytest.fixture
def saved(tmp_path):
    model = panacea_llama()
    model.save_pretrained(tmp_path / "adapter")
    return model, tmp_path / "adapter"


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077], ids=oct)  # 0o077 alone gives 0600, the bug's mode
def test_saved_files_have_the_mode_the_umask_gives(tmp_path, umask):
    """adapter_model.safetensors was written 0600 (safetensors makes private files), its config 0644."""
    previous = os.umask(umask)
    try:
        panacea_llama().save_pretrained(tmp_path / "adapter")
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "adapter").iterdir()}
    assert modes == {"adapter_config.json": 0o666 & ~umask, "adapter_model.safetensors": 0o666 & ~umask}
    assert (tmp_path / "adapter").stat().st_mode & 0o777 == 0o777 & ~umask


def test_save_writes_config_weights_and_fingerprint(saved):
    model, directory = saved
    assert sorted(path.name for path in directory.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    data = json.loads((directory / "adapter_config.json").read_text())
    assert data["adapter"] == model.panacea_config.to_dict()
    assert data["base_model"] == {
        "architecture": "LlamaForCausalLM",
        "model_type": "llama",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "vocab_size": 64,
        "name_or_path": "",
    }
    weights = load_file(directory / "adapter_model.safetensors")
    assert set(weights) == set(model.adapter_state_dict())
    assert not list(directory.parent.glob(".*tmp*"))  # the staging folder is gone


def test_round_trip_restores_bit_identical_outputs(saved):
    model, directory = saved
    loaded = PanaceaModel.from_pretrained(tiny_llama(), directory)
    ids = input_ids()
    with torch.no_grad():
        for preference in ([1.0, 0.0], [0.3, 0.7], [[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]]):
            assert torch.equal(loaded(ids, preference=preference).logits, model(ids, preference=preference).logits)
    assert not loaded.training and loaded.num_parameters(only_trainable=True) == 0


def test_load_trainable_keeps_gradients(saved):
    _, directory = saved
    loaded = PanaceaModel.from_pretrained(tiny_llama(), directory, is_trainable=True)
    adapter_size = sum(tensor.numel() for tensor in loaded.adapter_state_dict().values())
    assert loaded.training and loaded.num_parameters(only_trainable=True) == adapter_size


def test_save_into_an_existing_folder_keeps_other_files(saved, tmp_path):
    model, directory = saved
    (directory / "notes.txt").write_text("keep me")
    randomize_adapter(model, seed=5)
    model.save_pretrained(directory)
    assert (directory / "notes.txt").read_text() == "keep me"
    assert torch.equal(
        load_file(directory / "adapter_model.safetensors")["model.layers.0.self_attn.q_proj.lora_A"],
        model.base_model.model.layers[0].self_attn.q_proj.lora_A.detach(),
    )


def test_failed_save_leaves_nothing_half_written(saved, monkeypatch):
    model, directory = saved
    before = {path.name: path.read_bytes() for path in directory.iterdir()}

    def fail_after_weights(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(serialization, "write_json", fail_after_weights)
    randomize_adapter(model, seed=9)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(directory)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(directory.parent / "new")
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == before
    assert not (directory.parent / "new").exists()
    assert sorted(path.name for path in directory.parent.iterdir()) == ["adapter"]  # no staging folders left


def test_wrong_base_model_is_named(saved):
    _, directory = saved
    with pytest.raises(ValueError, match=r"different base model \(hidden_size: adapter 32, model 48"):
        PanaceaModel.from_pretrained(tiny_llama(hidden_size=48), directory)
    with pytest.raises(ValueError, match=r"architecture: adapter 'LlamaForCausalLM', model 'GPT2LMHeadModel'"):
        PanaceaModel.from_pretrained(tiny_gpt2(), directory)


def test_other_name_same_architecture_only_warns(saved, caplog):
    _, directory = saved
    base = tiny_llama()
    base.config.name_or_path = "someone/else"
    with caplog.at_level(logging.WARNING):
        PanaceaModel.from_pretrained(base, directory)
    assert "'someone/else'" in caplog.text


def test_weights_that_do_not_fit_are_reported(saved):
    _, directory = saved
    weights_path = directory / "adapter_model.safetensors"
    weights = load_file(weights_path)
    del weights["model.layers.1.mlp.up_proj.lora_B"]
    save_file(weights, weights_path)
    base = tiny_llama()
    with pytest.raises(ValueError, match=r"1 missing, e.g. \['model.layers.1.mlp.up_proj.lora_B'\]"):
        PanaceaModel.from_pretrained(base, directory)
    # The failed load left the caller's model as it was: no Panacea layers, nothing frozen.
    assert not any(isinstance(module, PanaceaLinear) for module in base.modules())
    assert all(parameter.requires_grad for parameter in base.parameters())
    weights["model.layers.1.mlp.up_proj.lora_B"] = torch.zeros(48, 4)
    save_file(weights, weights_path)
    with pytest.raises(
        ValueError, match=r"'model.layers.1.mlp.up_proj.lora_B' has shape \(48, 4\), the model expects \(48, 5\)"
    ):
        PanaceaModel.from_pretrained(tiny_llama(), directory)


def test_missing_and_corrupt_files_are_named(saved):
    _, directory = saved
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PanaceaModel.from_pretrained(tiny_llama(), directory.parent / "nowhere")
    (directory / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="adapter_model.safetensors is corrupt"):
        PanaceaModel.from_pretrained(tiny_llama(), directory)
    (directory / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors not found"):
        PanaceaModel.from_pretrained(tiny_llama(), directory)
    (directory / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="adapter_config.json is not valid JSON"):
        PanaceaModel.from_pretrained(tiny_llama(), directory)
    (directory / "adapter_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_config.json not found"):
        PanaceaModel.from_pretrained(tiny_llama(), directory)


def _edit_config(directory, edit):
    path = directory / "adapter_config.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda data: data["adapter"].update(rank_k=3), r"\['adapter'\]: unknown PanaceaConfig key\(s\) \['rank_k'\]"),
        (lambda data: data.update(extra=1), r"unknown keys \['extra'\]"),
        (lambda data: data["adapter"].update(svd_rank=-2), r"\['adapter'\]: svd_rank must be"),
        (lambda data: data.update(format_version=99), "format_version 99 is not supported"),
        (lambda data: data.update(peft_type="LORA"), "load it with peft.PeftModel.from_pretrained"),
        (lambda data: data.update(base_model=[1, 2]), r"'base_model' must be the base-model fingerprint.*found list"),
        (lambda data: data["base_model"].update(seed=3), r"'base_model' must be .*found \['architecture'.*'seed'"),
        (lambda data: data.pop("base_model"), r"'base_model' must be .*found NoneType"),
    ],
)
def test_bad_config_contents_raise_one_clear_error(saved, edit, message):
    _, directory = saved
    _edit_config(directory, edit)
    with pytest.raises(ValueError, match=message):
        PanaceaModel.from_pretrained(tiny_llama(), directory)


@pytest.mark.parametrize("make_base", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2-conv1d"])
@pytest.mark.parametrize("preference", [[0.7, 0.3], [0.0, 1.0]])
def test_export_loads_in_plain_peft_and_reproduces_logits(tmp_path, make_base, preference):
    model = get_panacea_model(make_base(), PanaceaConfig(svd_rank=3, num_preferences=2, alpha=10.0))
    randomize_adapter(model)
    model.export_lora(preference, tmp_path / "lora")
    exported = PeftModel.from_pretrained(make_base(), tmp_path / "lora").eval()
    ids = input_ids()
    with torch.no_grad():
        expected = model(ids, preference=preference).logits
        with model.disable_adapter():
            assert (expected - model(ids).logits).abs().max() > 0.1  # the trade-off is not the base model
        # The layer computes B·diag(d) exactly as export_lora does, so peft's forward is the same arithmetic.
        assert torch.equal(exported(ids).logits, expected)
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 5, 5)


def test_preference_rank_saves_loads_and_exports_at_rank_k_plus_m_times_r(tmp_path):
    model = panacea_llama(preference_rank=2)
    model.save_pretrained(tmp_path / "adapter")
    loaded = PanaceaModel.from_pretrained(tiny_llama(), tmp_path / "adapter")
    model.export_lora([0.4, 0.6], tmp_path / "lora")
    exported = PeftModel.from_pretrained(tiny_llama(), tmp_path / "lora").eval()
    ids = input_ids()
    with torch.no_grad():
        expected = model(ids, preference=[0.4, 0.6]).logits
        assert torch.equal(loaded(ids, preference=[0.4, 0.6]).logits, expected)
        assert torch.equal(exported(ids).logits, expected)
    assert loaded.panacea_config.preference_rank == 2
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["r"] == 3 + 2 * 2


def test_export_of_a_bfloat16_model_reproduces_its_logits(tmp_path):
    model = get_panacea_model(
        tiny_llama().to(torch.bfloat16), PanaceaConfig(svd_rank=3, num_preferences=2, dropout=0.1)
    )
    randomize_adapter(model)
    model.eval()
    model.export_lora([0.3, 0.7], tmp_path / "lora")
    exported = PeftModel.from_pretrained(tiny_llama().to(torch.bfloat16), tmp_path / "lora").eval()
    ids = input_ids()
    with torch.no_grad():
        assert torch.equal(exported(ids).logits, model(ids, preference=[0.3, 0.7]).logits)
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["lora_dropout"] == 0.1


def test_export_target_modules_are_short_names_when_exact_else_full_names(tmp_path):
    model = panacea_llama()
    model.export_lora([0.5, 0.5], tmp_path / "all")
    config = json.loads((tmp_path / "all" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]
    partial = panacea_llama(target_modules=["q_proj"], exclude_modules=["model.layers.1.self_attn.q_proj"])
    partial.export_lora([0.5, 0.5], tmp_path / "partial")
    config = json.loads((tmp_path / "partial" / "adapter_config.json").read_text())
    assert config["target_modules"] == ["model.layers.0.self_attn.q_proj"]
    exported = PeftModel.from_pretrained(tiny_llama(), tmp_path / "partial")
    ids = input_ids()
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, partial(ids, preference=[0.5, 0.5]).logits, rtol=0, atol=1e-5)


def test_export_rejects_per_sample_and_invalid_preferences(tmp_path):
    model = panacea_llama()
    with pytest.raises(ValueError, match=r"export_lora needs one preference of shape \(m,\)"):
        model.export_lora([[0.5, 0.5], [1.0, 0.0]], tmp_path / "lora")
    with pytest.raises(ValueError, match="sum to 1"):
        model.export_lora([0.5, 0.6], tmp_path / "lora")
    assert not (tmp_path / "lora").exists()


def test_preference_names_are_saved_and_an_adapter_saved_before_them_still_loads(tmp_path):
    model = panacea_llama(preference_names=["helpful", "harmless"])
    model.save_pretrained(tmp_path / "named")
    data = json.loads((tmp_path / "named" / "adapter_config.json").read_text())
    assert data["adapter"]["preference_names"] == ["helpful", "harmless"]
    loaded = PanaceaModel.from_pretrained(tiny_llama(), tmp_path / "named")
    assert loaded.panacea_config.preference_names == ["helpful", "harmless"]
    ids = input_ids()
    with torch.no_grad():
        expected = model(ids, preference=[0.2, 0.8]).logits
        assert torch.equal(loaded(ids, preference={"helpful": 0.2, "harmless": 0.8}).logits, expected)

    def as_written_before(adapter):  # no preference_names, no init_singular_value, s as a number
        del adapter["preference_names"], adapter["init_singular_value"]
        adapter["init_preference_scale"] = 0.0

    _edit_config(tmp_path / "named", lambda data: as_written_before(data["adapter"]))
    old = PanaceaModel.from_pretrained(tiny_llama(), tmp_path / "named")
    assert old.panacea_config.preference_names is None and old.panacea_config.init_singular_value is None
    with torch.no_grad():
        assert torch.equal(old(ids, preference=[0.2, 0.8]).logits, expected)


def _export_preference(directory):
    with safe_open(directory / "adapter_model.safetensors", framework="pt") as weights:
        return json.loads(weights.metadata()["panacea_preference"])


def test_export_records_the_named_preference_in_metadata_and_readme(tmp_path):
    model = panacea_llama(preference_names=["helpful", "harmless"])
    model.base_model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model.export_lora({"harmless": 0.2, "helpful": 0.8}, tmp_path / "lora")
    assert sorted(path.name for path in (tmp_path / "lora").iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert list(_export_preference(tmp_path / "lora").items()) == [("helpful", 0.8), ("harmless", 0.2)]  # in order
    readme = (tmp_path / "lora" / "README.md").read_text()
    assert "Base model: `HuggingFaceTB/SmolLM2-135M-Instruct`" in readme
    assert "Preference: helpful=0.8, harmless=0.2" in readme
    assert "LoRA rank: r = 5" in readme
    assert "AutoModelForCausalLM.from_pretrained('HuggingFaceTB/SmolLM2-135M-Instruct')" in readme
    assert f"PeftModel.from_pretrained(base, {str(tmp_path / 'lora')!r})" in readme
    assert not list(tmp_path.glob(".*tmp*"))  # written through the staging folder, which is gone


def test_export_without_names_records_the_vector(tmp_path):
    model = panacea_llama()
    model.export_lora(torch.tensor([1 / 3, 2 / 3]), tmp_path / "lora")
    assert _export_preference(tmp_path / "lora") == [0.33333334, 0.6666667]  # float32, shortest round-trip form
    readme = (tmp_path / "lora" / "README.md").read_text()
    assert "Preference: λ = (0.333333, 0.666667)" in readme
    assert 'from_pretrained("...")' in readme  # this tiny base records no name
    embedded = panacea_llama()
    embedded.base_model.config.name_or_path = "embedded:SmolLM2-135M-Instruct"
    embedded.export_lora([0.5, 0.5], tmp_path / "embedded")
    assert (
        "panacea.load_base_model('embedded:SmolLM2-135M-Instruct')" in (tmp_path / "embedded" / "README.md").read_text()
    )
