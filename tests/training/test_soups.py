"""The rewarded-soups baseline end to end on a tiny random Llama: members, budgets, manifest, resume, errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from panacea.adapters import PanaceaConfig, SoupModel, get_lora_model, get_panacea_model
from panacea.adapters.serialization import WEIGHTS_NAME
from panacea.training import TrainConfig, train
from panacea.training import soups as soups_module
from panacea.training import trainer as trainer_module
from panacea.training.reference import reference_cache_key
from panacea.training.soups import member_config, train_soups
from peft import PeftModel

from panacea import load_base_model
from panacea._config import dump_yaml
from panacea.cli import main
from tests.conftest import tiny_llama
from tests.helpers import config_dict, input_ids, make_config, max_difference


def adapter(run, name):
    from safetensors.torch import load_file

    return load_file(run / "soups" / name / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def soups_run(workspace, tmp_path_factory):
    """A finished split-budget soups run of the trainer tests' config (S = 6 steps of B = 4 pairs, m = 2)."""
    run = tmp_path_factory.mktemp("soups") / "run"
    train_soups(make_config(workspace, run, method="soups"))
    return run


def test_a_soups_run_holds_m_plain_peft_loras_and_a_manifest(workspace, soups_run):
    manifest = json.loads((soups_run / "manifest.json").read_text())
    assert (manifest["method"], manifest["mode"], manifest["budget"], manifest["complete"]) == (
        "soups",
        "ab",
        "split",
        True,
    )
    assert manifest["dimensions"] == ["a", "b"] and manifest["rank"] == 4 and manifest["seed"] == 0  # k + m·r = 2 + 2
    assert (soups_run / "config.yaml").is_file()
    base, _ = load_base_model(str(workspace / "model"))
    before = base(input_ids=input_ids()).logits
    for name in ("a", "b"):
        folder = soups_run / manifest["runs"][name]["adapter"]
        member = PeftModel.from_pretrained(base, folder)
        assert member.peft_config["default"].r == 4 and not torch.allclose(member(input_ids=input_ids()).logits, before)
        base = member.unload()
        member_yaml = (soups_run / "soups" / name / "config.yaml").read_text()
        assert "method: lora" in member_yaml and "preference_sampling: fixed" in member_yaml


def test_the_split_budget_matches_the_panacea_runs_steps_pairs_and_tokens(workspace, soups_run, tmp_path):
    panacea = train(make_config(workspace, tmp_path / "panacea")).state  # S = 6 steps of B = 4 pairs per dimension
    manifest = json.loads((soups_run / "manifest.json").read_text())
    for name in ("a", "b"):
        run = manifest["runs"][name]
        assert (run["max_steps"], run["batch_size"], run["steps"], run["pairs"]) == (3, 8, 3, 24)  # S/m steps of m·B
        assert run["pairs"] == panacea.pairs_seen[name]
    assert (manifest["total"]["steps"], manifest["total"]["pairs"]) == (6, 48) == (panacea.step, 2 * 24)
    assert manifest["total"]["tokens"] == panacea.tokens_seen  # the same pairs, so the very same tokens
    log = [json.loads(line) for line in (soups_run / "soups/b/log.jsonl").read_text().splitlines()]
    assert [sorted(key for key in entry if key.startswith("loss/")) for entry in log] == [["loss/b"]] * 3


def test_member_configs_follow_the_budget_rule(workspace, tmp_path):
    config = make_config(workspace, tmp_path, method="soups", max_steps=10, warmup_steps=5, save_steps=8)
    split = member_config(config, "b")
    assert (split.max_steps, split.batch_size, split.micro_batch_size) == (5, 8, 2)
    assert (split.warmup_steps, split.save_steps, split.fixed_preference) == (3, 5, [0.0, 1.0])  # 5/2 rounds up
    assert (split.method, split.output_dir) == ("lora", str(tmp_path / "soups" / "b"))
    full = member_config(make_config(workspace, tmp_path, method="soups", soups_budget="full", warmup_steps=5), "a")
    assert (full.max_steps, full.batch_size, full.warmup_steps) == (6, 8, 5)


def test_every_member_starts_from_the_same_initialisation(workspace, tmp_path, monkeypatch):
    original, initial = trainer_module.build_model, []

    def recording(base_model, config):
        model = original(base_model, config)
        initial.append({key: value.detach().clone() for key, value in model.adapter_state_dict().items()})
        return model

    monkeypatch.setattr(trainer_module, "build_model", recording)
    train_soups(make_config(workspace, tmp_path / "run", method="soups", max_steps=2))
    assert len(initial) == 2 and max_difference(*initial) == 0
    assert all(bool(value.abs().sum() > 0) != ("lora_B" in key) for key, value in initial[0].items())


def test_the_soup_at_a_vertex_is_that_dimensions_lora(workspace, soups_run):
    base, _ = load_base_model(str(workspace / "model"))
    expected = PeftModel.from_pretrained(base, soups_run / "soups/a/adapter")(input_ids=input_ids()).logits
    base, _ = load_base_model(str(workspace / "model"))
    soup = SoupModel.from_run(base, soups_run, "ab", dimensions=["a", "b"])
    torch.testing.assert_close(soup(input_ids=input_ids(), preference=[1, 0]).logits, expected, atol=1e-5, rtol=0)


def test_an_interrupted_soups_run_resumes_to_the_same_loras(workspace, soups_run, tmp_path, monkeypatch):
    """Stop during b's third step (after its step-2 checkpoint); resuming skips a and finishes b from step 2."""
    original, calls = trainer_module.GradientBuffers.combine, {"count": 0}

    def interrupt(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 6:  # a: calls 1-3; b: 4, 5 (checkpoint step-2), 6
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    config = make_config(workspace, tmp_path / "run", method="soups")
    monkeypatch.setattr(trainer_module.GradientBuffers, "combine", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_soups(config)
    assert json.loads((tmp_path / "run/manifest.json").read_text())["runs"].keys() == {"a"}
    monkeypatch.setattr(trainer_module.GradientBuffers, "combine", original)
    build, trained = trainer_module.build_model, []

    def recording(base_model, member):
        trained.append(member.fixed_preference)
        return build(base_model, member)

    monkeypatch.setattr(trainer_module, "build_model", recording)
    train_soups(config, resume=True)
    assert trained == [[0.0, 1.0]]  # only b
    for name in ("a", "b"):
        assert max_difference(adapter(soups_run, name), adapter(tmp_path / "run", name)) <= 1e-6
    resumed = json.loads((tmp_path / "run/manifest.json").read_text())
    assert (
        resumed["complete"]
        and resumed["total"]["tokens"] == json.loads((soups_run / "manifest.json").read_text())["total"]["tokens"]
    )


def test_a_complete_soups_run_missing_a_members_weights_is_incomplete_until_that_member_trains_again(
    workspace, soups_run, tmp_path, monkeypatch
):
    """A run folder whose manifest says complete but whose b LoRA is gone (a lost or partial copy): resuming retrains
    b, and while it does the manifest on disk says incomplete (it kept "complete": true)."""
    shutil.copytree(soups_run, tmp_path / "run")
    (tmp_path / "run/soups/b/adapter" / WEIGHTS_NAME).unlink()
    seen = []

    def interrupted(member, resume=False):
        seen.append(json.loads((tmp_path / "run/manifest.json").read_text())["complete"])
        raise KeyboardInterrupt

    monkeypatch.setattr(soups_module, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_soups(make_config(workspace, tmp_path / "run", method="soups"), resume=True)
    assert seen == [False]


def test_the_cli_trains_the_soups_baseline(workspace, tmp_path, capsys):
    dump_yaml(config_dict(workspace, tmp_path / "run", max_steps=2), tmp_path / "config.yaml")
    assert main(["train", str(tmp_path / "config.yaml"), "--set", "method=soups"]) == 0
    assert "trained 2 rewarded-soups LoRAs (split budget: 2 steps" in capsys.readouterr().out
    assert json.loads((tmp_path / "run/manifest.json").read_text())["complete"]


def test_a_lora_a_panacea_adapter_and_a_soup_share_the_reference_cache_key():
    config = PanaceaConfig(svd_rank=2, num_preferences=2)
    panacea = reference_cache_key(get_panacea_model(tiny_llama(), config), [], {})
    assert reference_cache_key(get_lora_model(tiny_llama(), config, seed=0), [], {}) == panacea


def test_the_shipped_soups_config_is_hh_2d_with_method_soups():
    configs = Path(__file__).parents[2] / "configs"
    soups = TrainConfig.from_yaml(configs / "soups-hh-2d.yaml")
    hh = TrainConfig.from_yaml(configs / "hh-2d.yaml")
    assert dataclasses.replace(hh, method="soups", output_dir=soups.output_dir) == soups


# --- errors ---------------------------------------------------------------------------------------------------


def test_train_and_train_soups_refuse_each_others_method(workspace, tmp_path):
    with pytest.raises(ValueError, match=r"method 'soups' trains one LoRA per dimension: call .*train_soups"):
        train(make_config(workspace, tmp_path / "run", method="soups"))
    with pytest.raises(ValueError, match="train_soups needs TrainConfig.method 'soups', got 'panacea'"):
        train_soups(make_config(workspace, tmp_path / "run"))


def test_bad_soups_configs_fail_at_start_up(workspace, tmp_path):
    with pytest.raises(ValueError, match=r"max_steps must be a multiple of the number of dimensions \(2\)"):
        make_config(workspace, tmp_path, method="soups", max_steps=5)
    assert make_config(workspace, tmp_path, method="soups", max_steps=5, soups_budget="full").max_steps == 5
    with pytest.raises(ValueError, match="soups_budget is 'full', but only method 'soups' uses it"):
        make_config(workspace, tmp_path, soups_budget="full")
    with pytest.raises(ValueError, match="method 'lora' trains one plain LoRA, which has no λ input"):
        make_config(workspace, tmp_path, method="lora")
    with pytest.raises(ValueError, match=r"method: expected one of \['panacea', 'soups', 'lora'\], got str 'sups'"):
        make_config(workspace, tmp_path, method="sups")


def test_a_soups_run_refuses_a_used_folder_and_a_changed_config_on_resume(workspace, soups_run):
    with pytest.raises(ValueError, match="already holds a run; pass --resume"):
        train_soups(make_config(workspace, soups_run, method="soups"))
    with pytest.raises(ValueError, match=r"the config differs from .* in \['soups_budget'\]"):
        train_soups(make_config(workspace, soups_run, method="soups", soups_budget="full"), resume=True)
