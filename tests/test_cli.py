"""The `panacea` command line on a tiny saved model (the embedded model is exercised by `make demo`)."""

import json

import pytest
import torch
import yaml
from peft import PeftModel

from panacea import PanaceaModel, load_base_model
from panacea.cli import main
from tests.adapters.test_model import input_ids


@pytest.fixture
def demo_config(tmp_path, tiny_model_dir):
    config = {
        "model": str(tiny_model_dir),
        "adapter": {"svd_rank": 2, "num_preferences": 2, "init": "orthogonal", "init_preference_scale": 8.0},
        "prompt": "w5 w6 w7",
        "preferences": [[0.9, 0.1], [0.1, 0.9]],
        "max_new_tokens": 5,
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_demo_generates_saves_and_exports(demo_config, tmp_path, capsys):
    assert main(["demo", "--config", str(demo_config)]) == 0
    output = capsys.readouterr().out
    assert "λ = (0.90, 0.10):" in output and "λ = (0.10, 0.90):" in output
    assert "max |Δ logit| vs Panacea" in output
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "lora-0.90-0.10" / "adapter_config.json").read_text())["r"] == 4


def test_demo_config_with_unknown_key_is_named(tmp_path, capsys):
    path = tmp_path / "demo.yaml"
    path.write_text("promt: hi\n")
    assert main(["demo", "--config", str(path)]) == 2
    assert "demo.yaml: unknown DemoConfig key(s) ['promt']" in capsys.readouterr().err


def test_generate_and_export_from_a_saved_adapter(demo_config, tmp_path, tiny_model_dir, capsys):
    main(["demo", "--config", str(demo_config)])
    capsys.readouterr()
    adapter = str(tmp_path / "run" / "adapter")
    assert main(["generate", adapter, "--preference", "0.5,0.5", "--max-new-tokens", "4", "w8 w9"]) == 0
    assert capsys.readouterr().out.strip()  # some words

    assert main(["export", adapter, "--preference", "0.25,0.75", str(tmp_path / "lora")]) == 0
    base, _ = load_base_model(tiny_model_dir)
    exported = PeftModel.from_pretrained(base, tmp_path / "lora").eval()
    panacea_model = PanaceaModel.from_pretrained(load_base_model(tiny_model_dir)[0], adapter)
    ids = input_ids()
    with torch.no_grad():
        expected = panacea_model(ids, preference=[0.25, 0.75]).logits
        torch.testing.assert_close(exported(ids).logits, expected, rtol=0, atol=1e-5)


def test_bad_preference_gives_one_clear_error(demo_config, tmp_path, capsys):
    main(["demo", "--config", str(demo_config)])
    capsys.readouterr()
    adapter = str(tmp_path / "run" / "adapter")
    assert main(["export", adapter, "--preference", "0.5,0.6", str(tmp_path / "lora")]) == 2
    assert "panacea export: error: preference weights must sum to 1" in capsys.readouterr().err
    assert not (tmp_path / "lora").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", adapter, "--preference", "half,half", "hi"])
    assert exit_info.value.code == 2
    assert "expected comma-separated numbers" in capsys.readouterr().err


def test_missing_adapter_folder_is_named(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "nope"), "--preference", "1,0", "hi"]) == 2
    assert "nope/adapter_config.json not found" in capsys.readouterr().err


def test_unreadable_inputs_give_one_line_errors(demo_config, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("prompt: [unclosed\n")
    assert main(["demo", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "panacea demo: error:" in capsys.readouterr().err
    main(["demo", "--config", str(demo_config)])
    capsys.readouterr()
    adapter = str(tmp_path / "run" / "adapter")
    assert main(["generate", adapter, "--preference", "1,0", "--model", str(tmp_path / "no-such-model"), "hi"]) == 2
    assert "panacea generate: error:" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("x")
    assert main(["export", adapter, "--preference", "1,0", str(tmp_path / "a-file")]) == 2
    assert "a-file exists and is not a directory" in capsys.readouterr().err


def test_adapter_without_a_recorded_base_model_asks_for_model(tmp_path, capsys):
    from tests.conftest import panacea_llama

    panacea_llama().save_pretrained(tmp_path / "adapter")  # built from a config: no name or path
    assert main(["generate", str(tmp_path / "adapter"), "--preference", "1,0", "hi"]) == 2
    assert "does not record which base model" in capsys.readouterr().err
