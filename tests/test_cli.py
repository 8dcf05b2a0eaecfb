"""The `panacea` command line on a tiny saved model (the embedded model is exercised by `make demo`)."""

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from panacea.eval.steering import range_ratios
from peft import PeftModel

import panacea
from panacea import PanaceaConfig, PanaceaModel, get_panacea_model, load_base_model
from panacea._config import dump_yaml
from panacea.cli import main
from tests.helpers import config_dict, input_ids, make_workspace


@pytest.fixture
def saved_adapter(tmp_path, tiny_model_dir):
    """An unnamed adapter on the saved tiny Llama, in tmp_path/run/adapter (s = 8: λ changes the output)."""
    base, _ = load_base_model(tiny_model_dir)
    torch.manual_seed(0)
    config = PanaceaConfig(svd_rank=2, num_preferences=2, init="orthogonal", init_preference_scale=8.0)
    get_panacea_model(base, config).save_pretrained(tmp_path / "run" / "adapter")
    return tmp_path / "run" / "adapter"


@pytest.fixture
def training_config(tmp_path):
    """A tiny-Llama training config with held-out pairs for both dimensions, as a YAML file."""
    workspace = make_workspace(tmp_path / "workspace")
    config = config_dict(workspace, tmp_path / "trained", max_steps=2, save_steps=2)
    for dimension in config["dimensions"]:
        dimension["eval"] = [{"path": dimension["train"][0]["path"], "max_pairs": 3}]
    config["eval_grid"] = 3
    path = tmp_path / "train.yaml"
    dump_yaml(config, path)
    return path


HEAVY = ("torch", "transformers", "peft", "accelerate")


def test_help_and_argument_errors_load_no_heavy_library():
    """`panacea --help` spent 6 s (12–17 s on a busy machine) importing torch, transformers and peft first."""
    script = (
        "import sys\n"
        "from panacea.cli import _build_parser\n"
        "_build_parser().parse_args(['eval', 'runs/x', '--scorers', 'pairs,generations'])\n"
        f"print(sorted(name for name in {HEAVY!r} if name in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    done = subprocess.run([sys.executable, "-m", "panacea.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "{demo,train,generate,eval,compare,export,serve}" in done.stdout


def test_the_package_names_load_on_first_use():
    assert sorted(panacea._EXPORTS) == sorted(panacea.__all__) and set(panacea.__all__) <= set(dir(panacea))
    assert all(getattr(panacea, name) is not None for name in panacea.__all__)
    assert panacea.PanaceaModel is PanaceaModel
    with pytest.raises(AttributeError, match="module 'panacea' has no attribute 'nothing'"):
        panacea.nothing  # noqa: B018


def test_train_writes_a_run_folder(training_config, tmp_path, capsys):
    assert main(["train", str(training_config), "--set", "max_steps=1"]) == 0
    assert "trained 1 steps" in capsys.readouterr().out
    assert (tmp_path / "trained" / "adapter" / "adapter_config.json").is_file()
    assert main(["train", str(training_config), "--set", "max_steps=1"]) == 2  # the folder holds a run now
    assert "already holds a run; pass --resume" in capsys.readouterr().err


def test_train_check_says_what_training_would_do_and_writes_nothing(training_config, tmp_path, capsys):
    """`panacea train --check` (what benchmarks/fronts.sh asks before it reuses a finished run): a new folder passes
    and is not created; the run there passes with --resume when trained with this config, and is refused, naming the
    fields, when trained with another; nothing is written either way."""
    run = tmp_path / "trained"
    assert main(["train", str(training_config), "--check"]) == 0
    assert "holds no run yet" in capsys.readouterr().out and not run.exists()
    one_step = ["train", str(training_config), "--set", "max_steps=1"]
    assert main(one_step) == 0
    capsys.readouterr()
    files = {path: path.read_bytes() for path in sorted(run.rglob("*")) if path.is_file()}
    assert main([*one_step, "--resume", "--check"]) == 0
    assert "was trained with this config" in capsys.readouterr().out
    assert main([*one_step, "--set", "learning_rate=0.5", "--resume", "--check"]) == 2
    assert "the config differs from" in (error := capsys.readouterr().err) and "in ['learning_rate']" in error
    assert main([*one_step, "--check"]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in sorted(run.rglob("*")) if path.is_file()} == files


def test_train_check_reads_the_data_and_compares_a_runs_by_content(training_config, tmp_path, capsys):
    """--check on a new run reads every training file (a bad row, a duplicate id is named now, not at start-up); on a
    finished run it refuses one whose data file was rewritten under the same path."""
    data = tmp_path / "workspace" / "a.jsonl"
    lines = data.read_text().splitlines()
    data.write_text("\n".join([*lines, '{"id": "x", "prompt": 3}']) + "\n")
    assert main(["train", str(training_config), "--check"]) == 2
    assert "a.jsonl:" in capsys.readouterr().err
    twice = ["train", str(training_config), "--set", f"dimensions.0.train=[{{path: {data}}}, {{path: {data}}}]"]
    data.write_text("\n".join(lines) + "\n")
    assert main([*twice, "--check"]) == 2
    assert "duplicate id in dimension 'a'" in capsys.readouterr().err
    data.write_text("\n".join(lines) + "\n")
    assert main(["train", str(training_config), "--check"]) == 0
    assert f"a valid config (a: training pairs {len(lines)}; b: training pairs " in capsys.readouterr().out
    one_step = ["train", str(training_config), "--set", "max_steps=1"]
    assert main(one_step) == 0
    assert main([*one_step, "--resume", "--check"]) == 0
    assert "was trained with this config and data" in capsys.readouterr().out
    data.write_text("\n".join(lines[1:]) + "\n")  # one pair fewer, same path
    assert main([*one_step, "--resume", "--check"]) == 2
    assert f"contents changed: a: training pairs: {len(lines)} items" in capsys.readouterr().err


def test_train_config_with_unknown_key_is_named(tmp_path, capsys):
    path = tmp_path / "train.yaml"
    path.write_text("learning_rat: 1e-4\n")
    assert main(["train", str(path)]) == 2
    error = capsys.readouterr().err
    assert "train.yaml: unknown TrainConfig key(s) ['learning_rat']" in error and error.count("\n") == 1


def test_demo_trains_scores_the_grid_generates_and_exports(training_config, tmp_path, capsys):
    assert main(["demo", "--config", str(training_config), "--prompt", "w5 w6 w7"]) == 0
    output = capsys.readouterr().out
    assert "| λ (a, b) |" in output and "| (0.5, 0.5) |" in output and "Spearman ρ" in output
    assert "λ = a=1.00, b=0.00:" in output and "λ = a=0.00, b=1.00:" in output
    assert "reloaded with peft: max |Δ logit| = 0.00e+00" in output
    document = json.loads((tmp_path / "trained" / "eval" / "results.json").read_text())
    assert document["grid"] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    assert set(document["scorers"]["pairs"]["points"][0]["sets"]) == {"a/a", "b/b"}
    assert "hypervolume" in output and f"the front {tmp_path / 'trained' / 'eval' / 'front.png'}" in output
    for plot in ("pairs.png", "front.png"):
        assert (tmp_path / "trained" / "eval" / plot).stat().st_size > 0
    # the steering yardstick: the soups members (one single-objective LoRA per dimension), R_i beside Spearman's ρ
    assert "range ratio R" in output and "| a/a |" in output
    steering = document["steering"]
    assert set(steering["single_objective"]) == {"a", "b"} and set(steering["range_ratio"]) == {"a/a", "b/b"}
    soups = tmp_path / "trained" / "rewarded-soups"
    assert steering["single_objective_models"] == str(soups / "soups")
    ab = json.loads((soups / "eval" / "ab" / "results.json").read_text())["scorers"]["pairs"]["points"]
    assert steering["single_objective"] == {"a": ab[0]["sets"], "b": ab[-1]["sets"]}  # the ab front's vertices
    panacea_scores = [point["sets"] for point in document["scorers"]["pairs"]["points"]]
    grid = torch.tensor(document["grid"])
    expected = range_ratios(grid, panacea_scores, ["a", "b"], steering["single_objective"])
    for name, ratios in steering["range_ratio"].items():  # NaN where the single-objective models tie
        assert ratios == pytest.approx(expected[name], nan_ok=True)
    assert not (tmp_path / "trained" / "single-objective").exists()  # no second set of single-objective runs
    # the rewarded-soups baseline at the same budget, evaluated in both modes and compared
    assert "Panacea vs rewarded soups" in output and "| rewarded-soups (soups, ab) |" in output
    comparison = json.loads((tmp_path / "trained" / "compare" / "compare.json").read_text())
    assert [row["label"] for row in comparison["rows"]] == ["trained (panacea)", "rewarded-soups (soups, ab)"]
    assert "Δ hypervolume vs rewarded-soups (soups, ab) [95 %]" in output  # each row's verdict against soups
    assert set(comparison["rows"][0]["versus"]) == {"rewarded-soups (soups, ab)"}
    # what each vertex (and the base model) does with 24 HarmBench and 24 XSTest-safe requests, with intervals
    assert "what each vertex does with held-out requests" in output
    assert set(document["refusal"]) == {"base model", "λ = a=1.00, b=0.00", "λ = a=0.00, b=1.00"}
    for rates in document["refusal"].values():
        assert set(rates) == {"refusal_harmbench", "refusal_xstest_safe", "loops"}
        for rate in rates.values():
            low, high = rate["interval"]
            assert 0 <= low <= rate["value"] <= high <= 1
    assert "| refusal, harmbench (n=24) | refusal, xstest_safe (n=24) | loops, all |" in output
    assert main(["demo", "--config", str(training_config), "--prompt", "w5"]) == 0  # a finished run is reused
    assert "trained 2 steps" in capsys.readouterr().out


def test_a_demo_run_of_another_config_is_refused_with_what_to_do(training_config, tmp_path, capsys):
    """A runs/demo left by an older demo.yaml failed in --resume's check, whose advice (`--set output_dir=…`) a
    `make demo` user cannot follow (found by an independent review). Nothing is trained or written then."""
    from panacea.training import TrainConfig, train

    train(TrainConfig.from_yaml(training_config))  # the run the demo would reuse, from this config
    before = sorted(path.name for path in (tmp_path / "trained").iterdir())
    assert main(["demo", "--config", str(training_config), "--set", "learning_rate=0.02"]) == 2
    message = capsys.readouterr().err
    run = tmp_path / "trained"
    assert f"{run} holds a demo run trained with another config (it differs in learning_rate)" in message
    assert f"Delete it (`rm -rf {tmp_path / 'trained'}`, or `make clean`)" in message
    assert sorted(path.name for path in (tmp_path / "trained").iterdir()) == before


def test_the_demos_baseline_takes_its_own_tuned_settings_from_a_soups_config_beside_the_demos(
    training_config, monkeypatch, capsys
):
    """The baseline was the demo's config as soups: Panacea's learning rate and β, whatever the validation study
    chose for soups. `soups-NAME.yaml` beside the config gives its own, at the same data and budget."""
    from panacea.training import TrainConfig

    from panacea.demo import soups_config

    config = TrainConfig.from_yaml(training_config)
    derived = soups_config(training_config, [], config)
    assert (derived.method, derived.soups_budget, derived.learning_rate) == ("soups", "split", config.learning_rate)
    assert derived.output_dir == str(Path(config.output_dir) / "rewarded-soups")
    own = yaml.safe_load(training_config.read_text()) | {"learning_rate": 1.5e-3, "method": "soups"}
    for dimension in own["dimensions"]:
        dimension["beta"] = 0.3
    (training_config.parent / f"soups-{training_config.name}").write_text(yaml.safe_dump(own))
    tuned = soups_config(training_config, ["max_steps=4"], TrainConfig.from_yaml(training_config, ["max_steps=4"]))
    assert (tuned.learning_rate, tuned.dimensions[0].beta, tuned.max_steps) == (1.5e-3, 0.3, 4)
    assert "note:" not in capsys.readouterr().out  # max_steps is the budget both share: nothing of the baseline's own
    overrides = ["dimensions.0.beta=0.2"]
    overridden = soups_config(training_config, overrides, TrainConfig.from_yaml(training_config, overrides))
    assert overridden.dimensions[0].beta == 0.2
    assert "note: --set dimensions.0.beta=0.2 applies to the rewarded-soups baseline too, over" in (
        capsys.readouterr().out
    )
    assert tuned.output_dir == derived.output_dir and tuned.soups_budget == "split"
    data = Path(config.dimensions[0].train[0].path)
    monkeypatch.chdir(data.parent)
    own["dimensions"][0]["train"][0]["path"] = f"./{data.name}"  # the same file, named from where the demo runs
    (training_config.parent / f"soups-{training_config.name}").write_text(yaml.safe_dump(own))
    assert soups_config(training_config, [], config).learning_rate == 1.5e-3
    own["max_steps"] = 8  # another budget is not the same-budget baseline
    (training_config.parent / f"soups-{training_config.name}").write_text(yaml.safe_dump(own))
    with pytest.raises(ValueError, match=r"soups-train\.yaml: the rewarded-soups baseline must .* \['max_steps'\]"):
        soups_config(training_config, [], config)


def test_generate_and_export_from_a_saved_adapter(saved_adapter, tmp_path, tiny_model_dir, capsys):
    adapter = str(saved_adapter)
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


def test_bad_preference_gives_one_clear_error(saved_adapter, tmp_path, capsys):
    adapter = str(saved_adapter)
    assert main(["export", adapter, "--preference", "0.5,0.6", str(tmp_path / "lora")]) == 2
    error = capsys.readouterr().err
    assert "panacea export: error: preference weights must sum to 1" in error
    assert "divide each weight by their sum" in error and "p.sum" not in error  # a hint a CLI user can follow
    assert not (tmp_path / "lora").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", adapter, "--preference", "half,half", "hi"])
    assert exit_info.value.code == 2
    assert "expected comma-separated numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", adapter, "--preference", "helpful=0.5,0.5", "hi"])
    assert exit_info.value.code == 2
    assert (
        "give every weight by name (helpful=0.8,harmless=0.2) or none (0.8,0.2), not a mix" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["generate", adapter, "--preference", "helpful=0.5,helpful=0.5", "hi"])
    assert "got ['helpful'] more than once" in capsys.readouterr().err
    assert main(["generate", adapter, "--preference", "helpful=0.5,harmless=0.5", "hi"]) == 2
    assert "the adapter has no preference names" in capsys.readouterr().err  # the demo adapter names none


def test_missing_adapter_folder_names_both_paths_tried(tmp_path, capsys):
    missing = tmp_path / "nope"
    tried = f"neither {missing / 'adapter_config.json'} nor {missing / 'adapter' / 'adapter_config.json'} exists"
    for command in (
        ["generate", str(missing), "--preference", "1,0", "hi"],
        ["export", str(missing), "--preference", "1,0", str(tmp_path / "out")],
    ):
        assert main(command) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"panacea {command[0]}: error: no Panacea adapter at {missing}: {tried}")
        assert error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_unreadable_inputs_give_one_line_errors(saved_adapter, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("output_dir: [unclosed\n")
    assert main(["train", str(tmp_path / "bad.yaml")]) == 2
    assert "panacea train: error:" in capsys.readouterr().err
    adapter = str(saved_adapter)
    assert main(["generate", adapter, "--preference", "1,0", "--model", str(tmp_path / "no-such-model"), "hi"]) == 2
    assert "panacea generate: error:" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("x")
    assert main(["export", adapter, "--preference", "1,0", str(tmp_path / "a-file")]) == 2
    assert "a-file exists and is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--limit", "--max-prompts", "--max-new-tokens", "--concise-max-new-tokens"])
def test_eval_refuses_a_count_below_one_before_loading_anything(flag, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "no-run"), flag, "0"]) == 2
    error = capsys.readouterr().err
    assert f"{flag} must be a positive number" in error and error.count("\n") == 1


def test_adapter_without_a_recorded_base_model_asks_for_model(tmp_path, capsys):
    from tests.conftest import panacea_llama

    panacea_llama().save_pretrained(tmp_path / "adapter")  # built from a config: no name or path
    assert main(["generate", str(tmp_path / "adapter"), "--preference", "1,0", "hi"]) == 2
    assert "does not record which base model" in capsys.readouterr().err


@pytest.fixture
def named_run(tmp_path, tiny_model_dir):
    """A training run folder laid out as RUN/adapter/, RUN/checkpoints/, RUN/config.yaml, with named dimensions."""
    torch.manual_seed(0)
    config = PanaceaConfig(
        svd_rank=2,
        num_preferences=2,
        preference_names=["helpful", "harmless"],
        init="orthogonal",
        init_preference_scale=8.0,
    )
    model = get_panacea_model(load_base_model(tiny_model_dir)[0], config)
    run = tmp_path / "run"
    model.save_pretrained(run / "adapter")
    (run / "checkpoints").mkdir()
    (run / "config.yaml").write_text("adapter: {}\n")
    return run


def test_generate_and_export_by_name_from_a_run_folder(named_run, tmp_path, tiny_model_dir, capsys):
    by_name = ["--preference", "harmless=0.75,helpful=0.25", "--max-new-tokens", "4", "w8 w9"]
    assert main(["generate", str(named_run), *by_name]) == 0
    answer = capsys.readouterr().out
    assert answer.strip()
    assert (
        main(["generate", str(named_run / "adapter"), "--preference", "0.25,0.75", "--max-new-tokens", "4", "w8 w9"])
        == 0
    )
    assert capsys.readouterr().out == answer  # the run folder, its adapter/ and a vector all say the same

    assert main(["export", str(named_run), "--preference", "helpful=0.25,harmless=0.75", str(tmp_path / "lora")]) == 0
    assert "harmless=0.75" in capsys.readouterr().out
    assert "Preference: helpful=0.25, harmless=0.75" in (tmp_path / "lora" / "README.md").read_text()
    exported = PeftModel.from_pretrained(load_base_model(tiny_model_dir)[0], tmp_path / "lora").eval()
    panacea_model = PanaceaModel.from_pretrained(load_base_model(tiny_model_dir)[0], named_run / "adapter")
    ids = input_ids()
    with torch.no_grad():
        assert torch.equal(exported(ids).logits, panacea_model(ids, preference=[0.25, 0.75]).logits)


def test_unknown_preference_name_lists_the_adapter_names(named_run, tmp_path, capsys):
    assert main(["export", str(named_run), "--preference", "helpful=0.5,honest=0.5", str(tmp_path / "lora")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        "panacea export: error: preference {'helpful': 0.5, 'honest': 0.5} has unknown name(s) ['honest']"
    )
    assert "the preference names are ['helpful', 'harmless'] (in order)" in error
    assert not (tmp_path / "lora").exists()


def test_eval_prints_the_table_and_front_metrics_and_writes_the_plot(training_config, tmp_path, capsys):
    assert main(["train", str(training_config)]) == 0
    run = tmp_path / "trained"
    assert main(["eval", str(run), "--grid", "3"]) == 0
    output = capsys.readouterr().out
    assert "| (0.5, 0.5) |" in output and "hypervolume" in output and "ρ = " in output
    assert f"the plot {run / 'eval' / 'front.png'}" in output and (run / "eval" / "front.png").is_file()


def test_eval_bad_input_gives_one_line_errors(training_config, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nowhere")]) == 2
    assert "no run folder at" in capsys.readouterr().err
    assert main(["train", str(training_config)]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "trained"), "--grid", "2"]) == 2
    error = capsys.readouterr().err
    assert "--grid 2 gives no interior point for 2 dimensions" in error and error.count("\n") == 1
    assert main(["eval", str(tmp_path / "trained"), "--limit", "0"]) == 2
    assert "--limit must be a positive number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", str(tmp_path / "trained"), "--scorers", "pairs,votes"])
    assert "unknown scorer(s) ['votes']" in capsys.readouterr().err


def test_counts_and_grids_are_refused_before_anything_loads(tmp_path, capsys):
    """--grid 0 fell back to the config's grid, --resamples 0 failed after the whole sweep, and generate's
    --max-new-tokens 0 in transformers after the model loaded (found by an independent review)."""
    for argv in (
        ["eval", str(tmp_path / "run"), "--grid", "0"],
        ["eval", str(tmp_path / "run"), "--grid", "1"],
        ["eval", str(tmp_path / "run"), "--resamples", "0"],
        ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--resamples", "-1"],
        ["generate", str(tmp_path / "run"), "--preference", "1,0", "--max-new-tokens", "0", "hi"],
    ):
        with pytest.raises(SystemExit) as done:
            main(argv)
        error = capsys.readouterr().err
        assert done.value.code == 2 and ("a whole number of at least 2" in error or "positive whole number" in error)


def test_config_files_that_cannot_be_read_are_named(tmp_path, capsys):
    """Raw OS errors ("[Errno 21] Is a directory: …") named no config; now what is wrong with it."""
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert f"{tmp_path / 'nope.yaml'}: no such config file." in capsys.readouterr().err
    assert main(["train", str(tmp_path)]) == 2
    assert f"{tmp_path}: a folder, not a config file" in capsys.readouterr().err
    (tmp_path / "latin1.yaml").write_bytes("learning_rate: 1e-3 # caf\xe9\n".encode("latin-1"))
    assert main(["train", str(tmp_path / "latin1.yaml")]) == 2
    assert "latin1.yaml: not UTF-8 text" in capsys.readouterr().err


def test_train_check_refuses_what_training_would_fail_on(training_config, tmp_path, capsys):
    """--check approved an output_dir that is a file and a model path that does not exist (a review)."""
    (tmp_path / "a-file").write_text("x")
    assert main(["train", str(training_config), "--check", "--set", f"output_dir={tmp_path / 'a-file'}"]) == 2
    assert "a-file is a file, not a folder; choose another output_dir" in capsys.readouterr().err
    assert main(["train", str(training_config), "--check", "--set", f"model={tmp_path / 'no-model'}"]) == 2
    assert f"no model folder at {tmp_path / 'no-model'}" in capsys.readouterr().err


def test_compare_refuses_an_out_that_is_a_file_before_reading_runs(tmp_path, capsys):
    """It failed only after the comparison, with "[Errno 17] File exists", naming no --out (a review)."""
    (tmp_path / "a-file").write_text("x")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "a-file")]) == 2
    assert f"--out {tmp_path / 'a-file'} is a file" in capsys.readouterr().err


def test_export_refuses_to_write_over_the_adapter_it_exports(saved_adapter, capsys):
    """`export RUN --out RUN/adapter --overwrite` replaced the Panacea adapter with its own plain LoRA, and
    `export RUN/adapter --out RUN --overwrite` wrote a LoRA's adapter_config.json at the run's top, which every later
    load of the run then read instead of its adapter (two reviews)."""
    run = saved_adapter.parent
    (run / "config.yaml").write_text("seed: 0\n")  # a training run's
    for source in (run, saved_adapter):
        for target, what in ((saved_adapter, "a Panacea adapter"), (run, "a training run")):
            argv = ["export", str(source), "--preference", "0.5,0.5", "--out", str(target), "--overwrite"]
            assert main(argv) == 2
            assert f"holds {what}, which an export never replaces" in capsys.readouterr().err
    assert not (run / "README.md").exists() and not (run / "adapter_model.safetensors").exists()
    for overwrite in ([], ["--overwrite"]):  # without it, no advice to pass it
        assert main(["export", str(run), "--preference", "0.5,0.5", "--out", str(run), *overwrite]) == 2
        assert "which an export never replaces (not even with --overwrite" in capsys.readouterr().err
    assert (saved_adapter / "adapter_config.json").is_file() and "peft_type" not in (
        saved_adapter / "adapter_config.json"
    ).read_text()


def test_version_prints_the_installed_distributions_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"panacea {version('panacea-align')}"


def test_a_misspelt_key_gets_did_you_mean(training_config, capsys):
    assert main(["train", str(training_config), "--set", "learning_rat=1e-3"]) == 2
    assert "did you mean 'learning_rat' → 'learning_rate'?" in capsys.readouterr().err


def test_a_negative_weight_parses_and_is_refused_before_the_model_loads(saved_adapter, capsys, monkeypatch):
    """`--preference -0.2,1.2` was read as an option by argparse; now λ's own error, and no model is loaded."""
    import panacea.base_model

    def refuse(*args, **kwargs):
        raise AssertionError("the base model was loaded before λ was checked")

    monkeypatch.setattr(panacea.base_model, "load_base_model", refuse)
    adapter = str(saved_adapter)
    assert main(["generate", adapter, "--preference", "-0.2,1.2", "hi"]) == 2
    error = capsys.readouterr().err
    assert "panacea generate: error:" in error and "negative" in error.lower()
    assert main(["export", adapter, "--preference", "0.5,0.6", "out"]) == 2  # a bad sum: refused as early
    assert "must sum to 1" in capsys.readouterr().err


def test_export_never_replaces_a_folder_that_holds_something_unless_asked(saved_adapter, tmp_path, capsys):
    """It silently replaced a trained adapter (`export RUN … RUN/adapter`) and a README.md in the folder (bug)."""
    adapter = str(saved_adapter)
    before = {file.name: file.read_bytes() for file in saved_adapter.iterdir() if file.is_file()}
    assert main(["export", adapter, "--preference", "0.5,0.5", adapter]) == 2
    assert "holds a Panacea adapter, which an export never replaces" in capsys.readouterr().err
    assert {file.name: file.read_bytes() for file in saved_adapter.iterdir() if file.is_file()} == before
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.md").write_text("mine")
    assert main(["export", adapter, "--preference", "0.5,0.5", str(notes)]) == 2
    assert "already holds 1 file(s) or folder(s) (README.md)" in capsys.readouterr().err
    assert (notes / "README.md").read_text() == "mine"
    assert main(["export", adapter, "--preference", "0.5,0.5", str(tmp_path / "lora")]) == 0
    assert main(["export", adapter, "--preference", "0.5,0.5", str(tmp_path / "lora")]) == 2  # the second time
    assert main(["export", adapter, "--preference", "0.4,0.6", str(tmp_path / "lora"), "--overwrite"]) == 0


def test_export_grid_and_vertices_write_indexed_sets_of_peft_loras(named_run, tmp_path, tiny_model_dir, capsys):
    assert main(["export", str(named_run), "--grid", "3", "--out", str(tmp_path / "grid")]) == 0
    assert f"wrote 3 peft LoRAs of rank 4 to {tmp_path / 'grid'}" in capsys.readouterr().out
    index = json.loads((tmp_path / "grid" / "index.json").read_text())
    assert [(entry["folder"], entry["preference"]) for entry in index["adapters"]] == [
        ("helpful-1.00_harmless-0.00", [1.0, 0.0]),
        ("helpful-0.50_harmless-0.50", [0.5, 0.5]),
        ("helpful-0.00_harmless-1.00", [0.0, 1.0]),
    ]
    middle = tmp_path / "grid" / "helpful-0.50_harmless-0.50"
    exported = PeftModel.from_pretrained(load_base_model(tiny_model_dir)[0], middle).eval()
    panacea_model = PanaceaModel.from_pretrained(load_base_model(tiny_model_dir)[0], named_run)
    ids = input_ids()
    with torch.no_grad():
        assert torch.equal(exported(ids).logits, panacea_model(ids, preference=[0.5, 0.5]).logits)

    assert main(["export", str(named_run), "--vertices", str(tmp_path / "vertices")]) == 0  # OUT works here too
    assert "add_weighted_adapter(..., combination_type='cat')" in capsys.readouterr().out
    index = json.loads((tmp_path / "vertices" / "index.json").read_text())
    assert index["kind"] == "vertices" and len(index["adapters"]) == 2


def test_export_takes_exactly_one_of_preference_grid_vertices_and_one_folder(saved_adapter, tmp_path, capsys):
    adapter, out = str(saved_adapter), str(tmp_path / "out")
    for extra, message in (
        (["--preference", "0.5,0.5", "--grid", "3"], "argument --grid: not allowed with argument --preference"),
        (["--grid", "3", "--vertices"], "not allowed with argument --grid"),
        ([], "one of the arguments --preference --grid --vertices is required"),
        (["--grid", "1"], "at least 2 (the two vertices), got '1'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["export", adapter, *extra, "--out", out])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err, extra
    assert main(["export", adapter, "--grid", "3"]) == 2
    assert "give the folder to write once, as OUT or as --out DIR; got neither" in capsys.readouterr().err
    assert main(["export", adapter, "--vertices", out, "--out", out]) == 2
    assert "got both OUT and --out" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_set_exports_never_replace_a_folder_that_holds_something_unless_asked(
    saved_adapter, tmp_path, capsys, monkeypatch
):
    import panacea.base_model

    adapter, out = str(saved_adapter), str(tmp_path / "out")
    assert main(["export", adapter, "--grid", "3", "--out", out]) == 0
    original = panacea.base_model.load_base_model

    def refuse(*args, **kwargs):
        raise AssertionError("the base model was loaded before the folder was checked")

    monkeypatch.setattr(panacea.base_model, "load_base_model", refuse)
    for choice in (["--grid", "3"], ["--vertices"], ["--preference", "1,0"]):
        assert main(["export", adapter, *choice, "--out", out]) == 2
        assert "already holds an exported set of LoRAs (index.json and 4 more)" in capsys.readouterr().err
    monkeypatch.setattr(panacea.base_model, "load_base_model", original)
    assert main(["export", adapter, "--grid", "2", "--out", out, "--overwrite"]) == 0
    assert len(json.loads((tmp_path / "out" / "index.json").read_text())["adapters"]) == 2


def test_every_option_shows_its_default_in_help():
    """`--dtype`, `--device`, `--max-new-tokens` and `compare --scorer` said nothing of their defaults."""
    import argparse

    from panacea.cli import _build_parser

    (commands,) = [action for action in _build_parser()._actions if isinstance(action, argparse._SubParsersAction)]
    for name, parser in commands.choices.items():
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.required or action.help == argparse.SUPPRESS:
                continue  # arguments, flags and required options have no default to show
            text = action.help or ""
            assert "(default: " in text or "; default: " in text, f"panacea {name} {action.option_strings[0]}: {text!r}"
        assert "default: None" not in parser.format_help(), name  # None is said in words: what it stands for


def exit_status(argv: list[str]) -> int:
    """main(argv)'s exit status; a KeyboardInterrupt it lets through fails the test instead of stopping the session."""
    try:
        return main(argv)
    except KeyboardInterrupt as escaped:
        pytest.fail(f"main let {escaped!r} through")


def last_line(stderr: str) -> str:
    """The last line of `stderr`, checked to be a whole line of its own (progress bars draw their lines above)."""
    *_, last, end = stderr.split("\n")
    assert end == "" and "\r" not in last, stderr
    return last


def resume_command(message: str) -> list[str]:
    """The arguments of the `panacea train … --resume` command an interrupt message quotes."""
    command = shlex.split(message.split("`")[1])
    assert command[:2] == ["panacea", "train"] and command[-1] == "--resume", message
    return command[1:]


def test_ctrl_c_in_train_says_where_the_run_stands_and_how_to_resume(training_config, tmp_path, capsys, monkeypatch):
    """Ctrl-C printed a traceback of about 114 lines through torch; now one line, exit status 130."""
    from panacea.training import trainer

    original, calls = trainer.GradientBuffers.combine, []

    def interrupt_at_step_3(self, *args, **kwargs):  # after the step-2 checkpoint
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer.GradientBuffers, "combine", interrupt_at_step_3)
    output_dir = tmp_path / "my run"  # a space: the quoted command must stay copy-pasteable
    arguments = ["train", str(training_config), "--set", "max_steps=6", "--set", f"output_dir={output_dir}"]
    assert exit_status(arguments) == 130
    expected = shlex.join(["panacea", *arguments, "--resume"])
    message = last_line(capsys.readouterr().err)
    assert message == (
        "panacea train: interrupted; nothing half-written, the last checkpoint is step 2 of 6; "
        f"resume with `{expected}`"
    )
    assert sorted(path.name for path in (output_dir / "checkpoints").iterdir()) == ["step-2"]
    monkeypatch.setattr(trainer.GradientBuffers, "combine", original)
    assert main(resume_command(message)) == 0
    assert "trained 6 steps" in capsys.readouterr().out


def test_ctrl_c_before_the_first_checkpoint_and_in_a_soups_run(training_config, tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("panacea.training.train", interrupt)
    assert exit_status(["train", str(training_config)]) == 130
    assert capsys.readouterr().err == (
        "panacea train: interrupted; nothing half-written, no checkpoint yet (the first comes at step 2); "
        f"resume with `panacea train {training_config} --resume`\n"
    )
    monkeypatch.setattr("panacea.training.soups.train_soups", interrupt)
    assert exit_status(["train", str(training_config), "--set", "method=soups"]) == 130
    member = tmp_path / "trained" / "soups" / "a"  # the first member: 1 of the 2 steps, split between 2 members
    assert capsys.readouterr().err == (
        f"panacea train: interrupted; nothing half-written, no checkpoint of {member} yet (the first comes at step "
        f"1); resume with `panacea train {training_config} --set method=soups --resume`\n"
    )


def test_ctrl_c_in_eval_says_how_many_points_are_cached(training_config, tmp_path, capsys, monkeypatch):
    from panacea.eval.scorers import PairsScorer

    assert main(["train", str(training_config)]) == 0
    original, calls = PairsScorer.score, []

    def interrupt_the_second_call(self, model, preferences):  # 4 λs per call: 4 of the 5 points are scored
        calls.append(len(preferences))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, model, preferences)

    monkeypatch.setattr(PairsScorer, "score", interrupt_the_second_call)
    run = tmp_path / "trained"
    capsys.readouterr()
    assert exit_status(["eval", str(run), "--grid", "5"]) == 130
    (cache,) = (run / "eval" / "cache").iterdir()
    assert last_line(capsys.readouterr().err) == (
        f"panacea eval: interrupted; the 4 of 5 pairs grid points scored so far are cached in {cache}; "
        "run the same command again to continue"
    )
    assert main(["eval", str(run), "--grid", "5"]) == 0 and calls == [4, 1, 1]  # the rerun scores the last point


def test_ctrl_c_elsewhere_is_one_line_too(training_config, saved_adapter, tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("panacea.eval.sweep.evaluate_path", interrupt)
    assert exit_status(["eval", str(tmp_path)]) == 130
    assert capsys.readouterr().err == (
        "panacea eval: interrupted; every grid point scored so far is cached; run the same command again to continue\n"
    )
    monkeypatch.setattr("panacea.demo.run_demo", interrupt)
    assert exit_status(["demo", "--config", str(training_config)]) == 130
    assert capsys.readouterr().err == (
        "panacea demo: interrupted; nothing half-written; run the same command again to continue\n"
    )
    monkeypatch.setattr(PanaceaModel, "export_lora", interrupt)
    assert exit_status(["export", str(saved_adapter), "--preference", "0.5,0.5", str(tmp_path / "lora")]) == 130
    assert capsys.readouterr().err == "panacea export: interrupted\n"


def test_sigint_stops_train_with_one_line_that_resumes_it(tmp_path):
    """A real Ctrl-C (SIGINT) to `panacea train`: status 130, the message last, and its command resumes the run."""
    workspace = make_workspace(tmp_path / "workspace")
    config = tmp_path / "train.yaml"
    dump_yaml(config_dict(workspace, tmp_path / "run", max_steps=40, save_steps=2), config)
    # `python -m panacea.cli`, with Python's own Ctrl-C handler even where this process was started with SIGINT
    # ignored (nohup, some CI runners), which its children inherit
    command = [
        sys.executable,
        "-c",
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from panacea.cli import main; sys.exit(main())",
    ]
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as handle:
        process = subprocess.Popen([*command, "train", str(config)], stdout=subprocess.DEVNULL, stderr=handle)
        deadline = time.monotonic() + 300
        while not (tmp_path / "run" / "checkpoints" / "step-2" / "trainer_state.json").exists():
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before the checkpoint"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130
    assert not (tmp_path / "run" / "adapter").exists(), "the run finished before the interrupt"
    text = stderr.read_text()
    assert "Traceback" not in text and text.count("interrupted") == 1
    last = last_line(text)  # the bar ended its own line first
    assert last.startswith("panacea train: interrupted; nothing half-written, the last checkpoint is step "), text
    assert last.endswith(f"resume with `panacea train {config} --resume`"), text
    resumed = subprocess.run([*command, *resume_command(last)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "trained 40 steps" in resumed.stdout and (tmp_path / "run" / "adapter").is_dir()
