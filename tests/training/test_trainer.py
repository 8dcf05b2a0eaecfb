"""The trainer end to end on a tiny random Llama: layout, resume (also after SIGKILL), NaN stop, two processes."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.utils import DistributedType
from panacea.training import TrainConfig, TrainingError, train
from panacea.training import trainer as trainer_module
from panacea.training.config import with_absolute_data_paths
from tqdm.auto import tqdm

from panacea import PanaceaModel, get_panacea_model, load_base_model
from panacea._config import config_to_dict, dump_yaml
from panacea.data import PairSource
from tests.helpers import (
    adapter_weights,
    config_dict,
    kill_when_checkpointed,
    losses,
    make_config,
    max_difference,
    train_in_one_and_in_two_processes,
    train_interrupted_then_resumed,
)


def train_until_interrupted(config, monkeypatch, stop_at_step: int) -> None:
    """Train `config` until step `stop_at_step` begins its update (KeyboardInterrupt there): a run killed mid-way."""
    original, calls = trainer_module.GradientBuffers.combine, {"count": 0}

    def interrupt(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == stop_at_step:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(trainer_module.GradientBuffers, "combine", interrupt)
        with pytest.raises(KeyboardInterrupt):
            train(config)


def test_a_run_folder_holds_adapter_checkpoints_config_and_log(workspace, tmp_path):
    result = train(make_config(workspace, tmp_path / "run"))
    run = tmp_path / "run"
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["step-2", "step-4", "step-6"]
    assert (run / "config.yaml").is_file() and len(losses(run)) == 6
    assert result.state.step == 6 and result.state.pairs_seen == {"a": 24, "b": 24}
    base, _ = load_base_model(str(workspace / "model"))
    model = PanaceaModel.from_pretrained(base, run)  # a run folder loads as its adapter/
    assert model.panacea_config.preference_names == ["a", "b"]


def _flushing() -> bool:
    return bool(torch.tensor(1e-40) * 1 == 0)  # a subnormal float32 survives unless the CPU flushes them


def test_training_steps_flush_subnormals_and_restore_the_mode_after(workspace, tmp_path, monkeypatch):
    # A DPO loss near zero fills the logits' gradient with subnormals, which x86 computes ~100× slower;
    # hhc-3d's concise-only LoRA ran a step at 25 tokens/s instead of 194 before train() flushed them.
    original, seen = trainer_module.dpo_loss, []

    def recording(*args, **kwargs):
        seen.append(_flushing())
        return original(*args, **kwargs)

    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU has no flush-to-zero mode")
    monkeypatch.setattr(trainer_module, "dpo_loss", recording)
    train(make_config(workspace, tmp_path / "run", max_steps=2))
    assert seen and all(seen)
    assert not _flushing()  # the process's mode is as it was
    torch.set_flush_denormal(True)
    try:
        train(make_config(workspace, tmp_path / "again", max_steps=2))
        assert _flushing()  # a caller who flushes keeps flushing
    finally:
        torch.set_flush_denormal(False)


def test_training_lowers_every_dimension_loss(workspace, tmp_path):
    run = tmp_path / "run"
    train(make_config(workspace, run, max_steps=30, save_steps=30, preference_sampling="per_step"))
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    for name in ("a", "b"):
        first, last = log[0][f"loss/{name}"], sum(row[f"loss/{name}"] for row in log[-5:]) / 5
        assert first == pytest.approx(math.log(2), abs=1e-4)  # the LoRA-style init starts at the reference
        assert last < first - 0.02, (name, first, last)


def test_fixed_preference_trains_only_the_dimensions_it_weights(workspace, tmp_path):
    run = tmp_path / "run"
    config = make_config(workspace, run, preference_sampling="fixed", fixed_preference={"a": 1.0, "b": 0.0})
    assert config.fixed_preference == [1.0, 0.0] and config.trained_dimensions == [True, False]
    result = train(config)
    assert result.state.pairs_seen == {"a": 24, "b": 0}
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert all("loss/a" in row and "loss/b" not in row for row in log)
    # k = 2: column 2 of every B belongs to λ_a and column 3 to λ_b, which is 0, so B's column 3 never moves from 0
    weights = adapter_weights(run)
    lora_b = [tensor for name, tensor in weights.items() if name.endswith("lora_B")]
    assert lora_b and all(bool((tensor[:, 3] == 0).all()) for tensor in lora_b)
    assert any(bool((tensor[:, 2] != 0).any()) for tensor in lora_b)


def test_diagonal_lr_ratio_moves_sigma_and_s_at_their_own_rate(workspace, tmp_path):
    # B = 0 at step 0 gives σ and s no gradient; step 1 moves A and B alike in both runs, and at step 2 σ and s
    # get the same gradients in both, so Adam moves them by amounts in the ratio of their learning rates.
    same = adapter_weights(
        train(make_config(workspace, tmp_path / "same", max_steps=2, diagonal_lr_ratio=1.0)).output_dir
    )
    config = make_config(workspace, tmp_path / "faster", max_steps=2, diagonal_lr_ratio=100.0)  # 100 × 1e-2
    faster = adapter_weights(train(config).output_dir)
    for name in same:
        if name.endswith(trainer_module.DIAGONAL):
            torch.testing.assert_close(faster[name] - 1, 100 * (same[name] - 1), rtol=1e-4, atol=0)
            assert float((same[name] - 1).abs().max()) > 0
        else:
            assert torch.equal(faster[name], same[name]), name
    config = make_config(workspace, tmp_path / "unused", diagonal_lr_ratio=50.0)
    model = get_panacea_model(load_base_model(str(workspace / "model"))[0], config.adapter_config())
    factors, diagonal = trainer_module.parameter_groups(model, config)
    assert "lr" not in factors and diagonal["lr"] == pytest.approx(0.5)  # 1e-2 × 50
    layers = len(list(model.adapter_layers()))  # every layer: A and B at the base rate, σ and s at their own
    assert len(factors["params"]) == len(diagonal["params"]) == 2 * layers > 0


def test_resume_after_an_interruption_ends_with_the_same_adapter(workspace, tmp_path, monkeypatch):
    train(make_config(workspace, tmp_path / "straight"))
    train_interrupted_then_resumed(make_config(workspace, tmp_path / "resumed"), monkeypatch, stop_at_step=4)
    assert max_difference(adapter_weights(tmp_path / "straight"), adapter_weights(tmp_path / "resumed")) <= 1e-6
    assert losses(tmp_path / "resumed") == pytest.approx(losses(tmp_path / "straight"), abs=1e-6)


def test_resume_with_tchebycheff_running_min_and_dropout(workspace, tmp_path, monkeypatch):
    overrides = dict(
        scalarization="tche",
        preference_sampling="groups",
        preference_groups=2,
        adapter={"svd_rank": 2, "init": "lora", "dropout": 0.1},
    )
    overrides["dimensions"] = [
        {"name": "a", "train": [{"path": str(workspace / "a.jsonl")}], "objective": "sft"},
        {"name": "b", "train": [{"path": str(workspace / "b.jsonl")}], "ideal": "running_min"},
    ]
    train(make_config(workspace, tmp_path / "straight", **overrides))
    train_interrupted_then_resumed(make_config(workspace, tmp_path / "resumed", **overrides), monkeypatch, 5)
    assert max_difference(adapter_weights(tmp_path / "straight"), adapter_weights(tmp_path / "resumed")) <= 1e-6
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "step-6" / "trainer_state.json").read_text())
    assert state["scalarizer"]["running_min"][0] is not None  # the SFT dimension's ideal point was tracked


def test_sigkill_mid_training_then_resume_gives_the_same_adapter(workspace, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for run in (straight, killed):
        dump_yaml(config_dict(workspace, run, max_steps=8), tmp_path / f"{run.name}.yaml")
    command = [sys.executable, "-m", "panacea.cli", "train"]
    subprocess.run([*command, str(tmp_path / "straight.yaml")], check=True, capture_output=True)
    kill_when_checkpointed([*command, str(tmp_path / "killed.yaml")], killed / "checkpoints" / "step-4")
    subprocess.run([*command, str(tmp_path / "killed.yaml"), "--resume"], check=True, capture_output=True)
    assert max_difference(adapter_weights(straight), adapter_weights(killed)) <= 1e-6


def test_a_nan_loss_stops_naming_step_and_dimension_and_keeps_the_last_checkpoint(workspace, tmp_path, monkeypatch):
    original = trainer_module.dpo_loss
    calls = {"count": 0}

    def nan_from_step_three(*args, **kwargs):
        calls["count"] += 1  # 4 calls per step: 2 dimensions × 2 micro-batches
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls["count"] > 8 and calls["count"] % 4 == 3 else loss

    monkeypatch.setattr(trainer_module, "dpo_loss", nan_from_step_three)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"step 2: the 'a' loss is nan") as failure:
        train(make_config(workspace, run))
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["step-2"]
    assert (run / "checkpoints" / "step-2" / "trainer_state.json").is_file()
    # The error closed the progress bar (its traceback, alive in `failure`, still references the loop's frame).
    assert failure.value.__traceback__ is not None
    assert not [bar for bar in tqdm._instances if bar.desc == "train"]


def test_a_new_run_refuses_a_folder_that_holds_one(workspace, tmp_path):
    train(make_config(workspace, tmp_path / "run", max_steps=1))
    with pytest.raises(ValueError, match="already holds a run; pass --resume"):
        train(make_config(workspace, tmp_path / "run", max_steps=1))


def test_resume_refuses_a_changed_config(workspace, tmp_path):
    train(make_config(workspace, tmp_path / "run", max_steps=2))
    with pytest.raises(ValueError, match=r"config differs .* \['learning_rate'\]"):
        train(make_config(workspace, tmp_path / "run", max_steps=2, learning_rate=1e-3), resume=True)


def test_a_moved_run_folder_resumes_where_it_lies_and_records_its_new_place(workspace, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(make_config(workspace, straight))
    train_until_interrupted(make_config(workspace, tmp_path / "run"), monkeypatch, stop_at_step=4)
    shutil.move(tmp_path / "run", tmp_path / "moved")
    assert train(make_config(workspace, tmp_path / "moved"), resume=True).state.step == 6
    assert max_difference(adapter_weights(straight), adapter_weights(tmp_path / "moved")) <= 1e-6
    assert yaml.safe_load((tmp_path / "moved" / "config.yaml").read_text())["output_dir"] == str(tmp_path / "moved")


def test_resume_refuses_training_data_rebuilt_in_place(workspace, tmp_path):
    """The config names its data by path; a file rewritten under the same path (or a changed split) is other data. A
    run records what it trained on (data.json) and --resume compares contents, naming the dimension."""
    data = tmp_path / "a.jsonl"
    shutil.copy(workspace / "a.jsonl", data)
    config = make_config(workspace, tmp_path / "run", max_steps=2)
    config.dimensions[0].train = [PairSource(str(data))]
    train(config)
    recorded = json.loads((tmp_path / "run" / "data.json").read_text())
    assert sorted(recorded["data"]) == ["a: training pairs", "b: training pairs"]
    assert recorded["data"]["a: training pairs"]["count"] == len(data.read_text().splitlines())
    assert recorded == trainer_module.training_data(config)
    assert train(config, resume=True).state.step == 2  # unchanged data resumes
    records = [json.loads(line) for line in data.read_text().splitlines()]
    records[3]["chosen"] += " again"
    data.write_text("".join(json.dumps(record) + "\n" for record in records))
    with pytest.raises(
        ValueError, match=r"contents changed: a: training pairs: (\d+) items, sha256 \w+ then, \1 items"
    ):
        train(config, resume=True)


def test_a_folder_holding_only_the_data_record_of_a_start_that_stopped_takes_a_new_run(workspace, tmp_path):
    """A start stopped between writing data.json and config.yaml leaves data.json alone: not a stranger's folder."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "data.json").write_text("{}")
    assert train(make_config(workspace, run, max_steps=1)).state.step == 1
    assert json.loads((run / "data.json").read_text())["format"] == 1


def test_resume_accepts_a_run_trained_before_data_was_recorded(workspace, tmp_path):
    run = tmp_path / "run"
    train(make_config(workspace, run, max_steps=2))
    (run / "data.json").unlink()  # as written by an older panacea
    assert train(make_config(workspace, run, max_steps=2), resume=True).state.step == 2
    assert not (run / "data.json").exists()  # the data it trained on is unknown, so nothing is recorded now


def test_resume_accepts_a_run_saved_before_a_field_existed_if_it_holds_its_default(workspace, tmp_path):
    run = tmp_path / "run"
    train(make_config(workspace, run, max_steps=2))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["diagonal_lr_ratio"], saved["aggregator_kwargs"]  # as written by an older panacea
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert train(make_config(workspace, run, max_steps=2), resume=True).state.step == 2
    with pytest.raises(ValueError, match=r"config differs .* \['diagonal_lr_ratio'\]"):
        train(make_config(workspace, run, max_steps=2, diagonal_lr_ratio=3.0), resume=True)


def test_resume_accepts_a_run_whose_dimensions_lack_a_field_at_its_default(workspace, tmp_path):
    run = tmp_path / "run"
    train(make_config(workspace, run, max_steps=2))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    for dimension in saved["dimensions"]:
        del dimension["reward"]  # as written before objective 'rl' added `reward`
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert train(make_config(workspace, run, max_steps=2), resume=True).state.step == 2
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["dimensions"][0]["beta"]  # a missing field whose value now differs from its default is a change
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    changed = make_config(workspace, run, max_steps=2)
    changed.dimensions[0].beta = 0.3
    with pytest.raises(ValueError, match=r"config differs .* \['dimensions'\]"):
        train(changed, resume=True)


def test_resume_accepts_a_run_whose_adapter_section_lacks_a_field_at_its_default(workspace, tmp_path):
    run = tmp_path / "run"
    train(make_config(workspace, run, max_steps=2, adapter={"svd_rank": 2, "preference_rank": 1}))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["adapter"]["preference_rank"]  # as written before preference_rank existed
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    config = make_config(workspace, run, max_steps=2, adapter={"svd_rank": 2, "preference_rank": 1})
    assert train(config, resume=True).state.step == 2
    with pytest.raises(ValueError, match=r"config differs .* \['adapter'\]"):
        train(make_config(workspace, run, max_steps=2, adapter={"svd_rank": 2, "preference_rank": 2}), resume=True)


def test_a_dimension_without_data_fails_at_start_up(workspace, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    config = make_config(
        workspace,
        tmp_path / "run",
        dimensions=[
            {"name": "a", "train": [{"path": str(workspace / "a.jsonl")}]},
            {"name": "b", "train": [{"path": str(empty)}]},
        ],
    )
    with pytest.raises(ValueError, match="empty.jsonl"):
        train(config)
    assert not (tmp_path / "run").exists()  # nothing left behind: no config.yaml that would refuse the rerun


def test_the_rerun_after_a_failed_start_just_works(workspace, tmp_path):
    """A start that failed on bad data left config.yaml, so the fixed rerun was refused ('already holds a run')."""
    data = tmp_path / "b.jsonl"
    data.write_text("not json\n")
    dimensions = [
        {"name": "a", "train": [{"path": str(workspace / "a.jsonl")}]},
        {"name": "b", "train": [{"path": str(data)}]},
    ]
    with pytest.raises(ValueError, match="not valid JSON"):
        train(make_config(workspace, tmp_path / "run", max_steps=1, dimensions=dimensions))
    data.write_text((workspace / "b.jsonl").read_text())  # the user fixes the file
    train(make_config(workspace, tmp_path / "run", max_steps=1, dimensions=dimensions))
    assert (tmp_path / "run" / "adapter").is_dir()


def test_a_start_that_fails_after_recording_the_run_removes_its_config_and_data_records(
    workspace, tmp_path, monkeypatch
):
    """A model that does not load fails after config.yaml and data.json are written: both go, so the rerun works."""

    def broken(*args, **kwargs):
        raise OSError("model weights missing")

    with monkeypatch.context() as patched:
        patched.setattr(trainer_module, "load_base_model", broken)
        with pytest.raises(OSError, match="model weights missing"):
            train(make_config(workspace, tmp_path / "run", max_steps=1))
    assert not (tmp_path / "run").exists()
    assert train(make_config(workspace, tmp_path / "run", max_steps=1)).state.step == 1


def test_a_new_run_refuses_a_folder_of_other_files_and_leaves_them_alone(workspace, tmp_path):
    """It trained into an unrelated folder and truncated the log.jsonl found there (bug)."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "log.jsonl").write_text('{"my": "notes"}\n')
    with pytest.raises(ValueError, match=r"is not empty \(log.jsonl\) and holds no panacea run"):
        train(make_config(workspace, folder, max_steps=1))
    assert (folder / "log.jsonl").read_text() == '{"my": "notes"}\n' and sorted(p.name for p in folder.iterdir()) == [
        "log.jsonl"
    ]
    with pytest.raises(ValueError, match=r"--resume: .*mine holds no panacea run to continue \(no config.yaml"):
        train(make_config(workspace, folder, max_steps=1), resume=True)  # it said "a new run writes …" (a review)
    assert sorted(p.name for p in folder.iterdir()) == ["log.jsonl"]


@pytest.mark.parametrize(
    "overrides", [{}, {"aggregator": "cagrad", "preference_sampling": "per_step"}], ids=["ls", "cagrad"]
)
def test_two_processes_follow_the_one_process_trajectory(workspace, tmp_path, overrides):
    """Two processes (torchrun, gloo, CPU) at the same global batch give the same losses.

    With an aggregator, each process all-reduces the per-dimension buffers before the Gram matrix is formed,
    so both compute the one-process coefficients.
    """
    one, two = (
        config_dict(workspace, tmp_path / name, max_steps=4, save_steps=4, **overrides) for name in ("one", "two")
    )
    train_in_one_and_in_two_processes(one, two, tmp_path)
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), abs=1e-5)
    assert max_difference(adapter_weights(tmp_path / "one"), adapter_weights(tmp_path / "two")) <= 1e-5


def test_gradient_checkpointing_follows_the_same_trajectory(workspace, tmp_path, monkeypatch):
    """The Panacea model's own checkpointing re-runs each layer under its forward's per-sample λ."""
    train(make_config(workspace, tmp_path / "plain", max_steps=3, save_steps=3))
    enabled, enable = [], PanaceaModel.gradient_checkpointing_enable

    def recording(model, *args, **kwargs):  # the run below must really checkpoint, or equal losses prove nothing
        enable(model, *args, **kwargs)
        enabled.append(model.base_model.is_activation_checkpointing)

    monkeypatch.setattr(PanaceaModel, "gradient_checkpointing_enable", recording)
    train(make_config(workspace, tmp_path / "checkpointed", max_steps=3, save_steps=3, gradient_checkpointing=True))
    assert enabled == [True]
    assert losses(tmp_path / "checkpointed") == pytest.approx(losses(tmp_path / "plain"), abs=1e-6)
    assert max_difference(adapter_weights(tmp_path / "plain"), adapter_weights(tmp_path / "checkpointed")) <= 1e-6


@pytest.mark.parametrize(
    ("launch", "named"),
    [
        (DistributedType.DEEPSPEED, r"with DeepSpeed \(DEEPSPEED\), which shards the model"),
        (DistributedType.MULTI_XPU, r"as MULTI_XPU \(on XPU devices\)"),
    ],
    ids=["deepspeed", "xpu"],
)
def test_an_unsupported_launch_is_refused_at_start_up_naming_it(workspace, tmp_path, monkeypatch, launch, named):
    """Every refused launch blamed 'FSDP/DeepSpeed/XLA options', a plain data-parallel one on XPUs too."""

    class Launched(trainer_module.Accelerator):
        distributed_type = property(lambda self: launch)

    monkeypatch.setattr(trainer_module, "Accelerator", Launched)
    with pytest.raises(ValueError, match=named) as error:
        train(make_config(workspace, tmp_path / "run"))
    assert "data parallelism on CPUs (MULTI_CPU) or CUDA GPUs (MULTI_GPU)" in str(error.value)
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_rpo_alpha_adds_the_chosen_responses_mean_token_nll_to_every_dpo_pair(workspace, tmp_path):
    """One step over all 16 pairs of each dimension from the LoRA-style init (the policy is the reference): every
    pair's DPO loss is ln 2, so the logged loss is ln 2 + α × the mean of the chosen responses' mean token NLL."""
    from panacea.training.logprobs import collate_pairs, response_log_probs

    from panacea.data import load_dimension

    alpha, run = 0.5, tmp_path / "run"
    config = make_config(workspace, run, max_steps=1, save_steps=1, batch_size=16, micro_batch_size=4, rpo_alpha=alpha)
    train(config)
    (logged,) = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    base, tokenizer = load_base_model(config.model, device="cpu")
    for dimension in config.dimensions:
        pairs, _ = load_dimension(
            dimension.train, dimension.name, config.dimension_names, tokenizer, config.max_length,
            config.max_prompt_length,
        )  # fmt: skip
        batch = collate_pairs(pairs, tokenizer.pad_token_id, with_rejected=False)
        with torch.no_grad():
            nll = -response_log_probs(base, batch) / batch.response_tokens
        expected = math.log(2) + alpha * float(nll.mean())
        assert logged[f"loss/{dimension.name}"] == pytest.approx(expected, abs=1e-4)
        assert alpha * float(nll.mean()) > 0.5  # the term is there to be seen


@pytest.mark.parametrize("isolate", [False, True])
def test_isolate_dimensions_keeps_each_dimensions_loss_off_the_other_dimensions_directions(
    workspace, tmp_path, monkeypatch, isolate
):
    """Per-unit gradients at step 1 (B = 0 at step 0 leaves A without one): under isolate_dimensions, dimension a's
    unit has no gradient on λ_b's column of B or row of A (k = 2: column 2 is λ_a's, 3 is λ_b's) and b's none on
    λ_a's; without it, λ_a λ_b > 0 moves both."""
    seen, original = [], trainer_module.GradientBuffers.combine

    def capture(self, *args, **kwargs):
        seen.append([[view.clone() for view in unit] for unit in self._views[:-1]])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.GradientBuffers, "combine", capture)
    train(make_config(workspace, tmp_path / "run", max_steps=2, isolate_dimensions=isolate))
    units = seen[1]  # step 1; one λ-group: unit i is dimension i
    rank = 4
    for unit, other in ((0, 3), (1, 2)):
        b = [g for g in units[unit] if g.ndim == 2 and g.shape[1] == rank and g.shape[0] != rank]
        a = [g for g in units[unit] if g.ndim == 2 and g.shape[0] == rank and g.shape[1] != rank]
        assert b and a
        off_b = sum(float(g[:, other].abs().sum()) for g in b)
        off_a = sum(float(g[other].abs().sum()) for g in a)
        own_b = sum(float(g[:, 5 - other].abs().sum()) for g in b)
        assert own_b > 0
        assert (off_b == 0 and off_a == 0) if isolate else (off_b > 0 and off_a > 0)


def test_isolate_dimensions_is_refused_where_there_are_no_directions_to_split(workspace, tmp_path):
    with pytest.raises(ValueError, match="isolate_dimensions splits a Panacea adapter's directions by dimension"):
        make_config(workspace, tmp_path / "soups", method="soups", isolate_dimensions=True)
    with pytest.raises(ValueError, match="isolate_dimensions cannot be combined with aggregator 'mgda'"):
        make_config(
            workspace, tmp_path / "mgda", aggregator="mgda", preference_sampling="per_step", isolate_dimensions=True
        )


# --- resuming past damaged checkpoints ----------------------------------------------------------------------

DAMAGE = {  # a file of a checkpoint: what spoils it (None: deleting it), and what the resume line says of it
    "adapter/adapter_model.safetensors": (b"\x10\x00", "is truncated or not a safetensors file"),
    "optimizer.json": (b'{"param_groups": [', "is not a valid JSON object"),
    "trainer_state.json": (None, "is missing"),
}


def spoil(checkpoint, name: str) -> None:
    content, _ = DAMAGE[name]
    if content is None:
        (checkpoint / name).unlink()
    else:
        (checkpoint / name).write_bytes(content)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_falls_back_past_a_damaged_newest_checkpoint_and_names_it(
    workspace, tmp_path, monkeypatch, capsys, damage
):
    """A damaged newest checkpoint was refused ('delete it'), or skipped without a word when it had no state file."""
    straight, run = tmp_path / "straight", tmp_path / "run"
    train(make_config(workspace, straight))
    train_until_interrupted(make_config(workspace, run), monkeypatch, stop_at_step=5)  # step-2 and step-4 saved
    spoil(run / "checkpoints" / "step-4", damage)
    capsys.readouterr()
    assert train(make_config(workspace, run), resume=True).state.step == 6
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resuming")]
    skipped = re.escape(f"skipped step-4, {damage} {DAMAGE[damage][1]}")
    assert re.fullmatch(rf"resuming from \S+step-2 \(step 2\); {skipped}.*", line)
    assert max_difference(adapter_weights(straight), adapter_weights(run)) <= 1e-6  # exactly as from step 2
    assert losses(run) == pytest.approx(losses(straight), abs=1e-6)


def test_resume_refuses_to_restart_silently_when_no_checkpoint_can_be_restored(workspace, tmp_path, monkeypatch):
    """With its only checkpoint damaged, --resume started again from step 0 without a word."""
    run = tmp_path / "run"
    train_until_interrupted(make_config(workspace, run), monkeypatch, stop_at_step=3)  # step-2 saved
    spoil(run / "checkpoints" / "step-2", "trainer_state.json")
    log = (run / "log.jsonl").read_text()
    refused = r"no checkpoint in \S+checkpoints can be restored \(step-2: trainer_state.json is missing"
    with pytest.raises(ValueError, match=refused) as error:
        train(make_config(workspace, run), resume=True)
    assert f"delete {run / 'checkpoints'} to resume this run from step 0" in str(error.value)
    assert (run / "log.jsonl").read_text() == log and (run / "checkpoints" / "step-2").is_dir()  # nothing touched
    shutil.rmtree(run / "checkpoints")  # the user's call: start again
    assert train(make_config(workspace, run), resume=True).state.step == 6


# --- data paths ---------------------------------------------------------------------------------------------


def relative_dimensions(eval_pairs: int | None = None) -> list[dict]:
    """The workspace's dimensions by file name, as a config in the workspace would give them."""
    return [
        {"name": name, "train": [{"path": f"{name}.jsonl"}]}
        | ({"eval": [{"path": f"{name}.jsonl", "max_pairs": eval_pairs}]} if eval_pairs else {})
        for name in ("a", "b")
    ]


def test_a_run_records_absolute_data_paths_so_it_resumes_and_evaluates_from_anywhere(workspace, tmp_path, monkeypatch):
    """config.yaml kept the paths relative to where `panacea train` ran: eval and --resume failed elsewhere."""
    from panacea.eval.scorers import load_pair_sets
    from panacea.eval.sweep import load_run

    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    monkeypatch.chdir(workspace)
    train_until_interrupted(make_config(workspace, run, dimensions=relative_dimensions(4)), monkeypatch, 3)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    saved = TrainConfig.from_yaml(run / "config.yaml")
    files = [str(workspace.resolve() / f"{name}.jsonl") for name in ("a", "b")]
    assert [(d.train[0].path, d.eval[0].path) for d in saved.dimensions] == list(zip(files, files, strict=True))
    assert train(saved, resume=True).state.step == 6
    loaded = load_run(run, device="cpu")
    pair_sets = load_pair_sets(loaded.config, loaded.tokenizer)
    assert [(pair_set.dimension, len(pair_set.pairs)) for pair_set in pair_sets] == [("a", 4), ("b", 4)]


def test_resume_counts_an_older_runs_relative_data_paths_as_the_same_files(workspace, tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.chdir(workspace)
    train(make_config(workspace, run, max_steps=2))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    for dimension in saved["dimensions"]:  # as an older panacea wrote them: relative to where it ran
        dimension["train"][0]["path"] = os.path.basename(dimension["train"][0]["path"])
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert train(make_config(workspace, run, max_steps=2), resume=True).state.step == 2
    stored = yaml.safe_load((run / "config.yaml").read_text())["dimensions"]
    assert [d["train"][0]["path"] for d in stored] == [str(workspace.resolve() / f"{n}.jsonl") for n in ("a", "b")]
    shutil.copy(workspace / "a.jsonl", tmp_path / "a.jsonl")  # the same content under another name is other data
    dimensions = [{"name": "a", "train": [{"path": str(tmp_path / "a.jsonl")}]}, relative_dimensions()[1]]
    with pytest.raises(ValueError, match=r"config differs .* \['dimensions'\]"):
        train(make_config(workspace, run, max_steps=2, dimensions=dimensions), resume=True)


def test_a_run_resumes_after_its_checkout_was_moved_and_records_where_its_data_lies_now(
    workspace, tmp_path, monkeypatch
):
    """config.yaml names the data by absolute path: after the project folder holding data and run was renamed, the
    same config and command (relative paths, from the project folder) differed in ['dimensions'] and --resume
    refused the run. The moved data's contents are still checked (data.json)."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    for name in ("a", "b"):
        shutil.copy(workspace / f"{name}.jsonl", project / "data" / f"{name}.jsonl")
    dimensions = [
        {"name": n, "train": [{"path": f"data/{n}.jsonl"}], "eval": [{"path": f"data/{n}.jsonl"}]} for n in "ab"
    ]
    monkeypatch.chdir(project)
    train_until_interrupted(make_config(workspace, Path("runs/run"), dimensions=dimensions), monkeypatch, 3)
    moved = tmp_path / "renamed"
    shutil.move(project, moved)
    monkeypatch.chdir(moved)
    config = make_config(workspace, Path("runs/run"), dimensions=dimensions)
    assert trainer_module.config_changes(config, Path("runs/run/config.yaml")) == []
    assert train(config, resume=True).state.step == 6
    stored = yaml.safe_load((moved / "runs/run/config.yaml").read_text())["dimensions"]
    files = [str(moved.resolve() / "data" / f"{n}.jsonl") for n in "ab"]
    assert [(d["train"][0]["path"], d["eval"][0]["path"]) for d in stored] == list(zip(files, files, strict=True))
    shutil.move(moved, project)  # back: the finished run trains no step and records its data's place again
    monkeypatch.chdir(project)
    weights = (project / "runs/run/adapter/adapter_model.safetensors").read_bytes()
    assert train(make_config(workspace, Path("runs/run"), dimensions=dimensions), resume=True).state.step == 6
    assert (project / "runs/run/adapter/adapter_model.safetensors").read_bytes() == weights
    stored = yaml.safe_load((project / "runs/run/config.yaml").read_text())["dimensions"]
    assert stored[0]["train"][0]["path"] == str(project.resolve() / "data" / "a.jsonl")
    # one training file rebuilt: other data under the same paths, refused by content
    records = [json.loads(line) for line in (workspace / "a.jsonl").read_text().splitlines()]
    records[3]["chosen"] += " again"
    (project / "data" / "a.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    with pytest.raises(ValueError, match=r"contents changed: a: training pairs"):
        train(make_config(workspace, Path("runs/run"), dimensions=dimensions), resume=True)


def test_a_data_source_field_added_after_a_run_was_saved_counts_as_unchanged_at_its_default(workspace, tmp_path):
    """`config_changes` (what --resume and `panacea train --check` compare) filled the defaults of fields added later
    at the top level and per dimension, not per data source: a saved run without a source's newer field (e.g.
    `columns`) differed in ['dimensions'] and could be neither resumed nor reused."""
    config = make_config(workspace, tmp_path / "run", max_steps=2)
    config.dimensions[0].eval = [PairSource(path=str(workspace / "a.jsonl"), max_pairs=3)]
    saved = with_absolute_data_paths(config_to_dict(config))
    for dimension in saved["dimensions"]:
        for source in dimension["train"] + dimension["eval"]:
            del source["columns"], source["seed"]  # as a run saved before these fields existed holds them
    path = tmp_path / "config.yaml"
    dump_yaml(saved, path)
    assert trainer_module.config_changes(config, path) == []
    saved["dimensions"][0]["eval"][0]["max_pairs"] = 4  # another held-out size is another config
    dump_yaml(saved, path)
    assert trainer_module.config_changes(config, path) == ["dimensions"]


# --- regularisation and file modes --------------------------------------------------------------------------


def test_orthogonality_weight_adds_adaloras_penalty_beside_the_aggregators_update(workspace, tmp_path):
    """adapter.orthogonality_weight was accepted and never used. The penalty joins the combined update once per step:
    at step 1 (the same weights) MGDA weighs the same dimension gradients, and only the update differs."""
    overrides = dict(max_steps=4, save_steps=4, aggregator="mgda", preference_sampling="per_step")
    train(make_config(workspace, tmp_path / "plain", **overrides))
    adapter = {"svd_rank": 2, "init": "lora", "orthogonality_weight": 0.1}
    train(make_config(workspace, tmp_path / "regularised", adapter=adapter, **overrides))
    plain, regularised = (
        [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        for name in ("plain", "regularised")
    )
    penalties = [row["orthogonality"] for row in regularised]
    assert len(penalties) == 4 and all(later < earlier for earlier, later in pairwise(penalties)), penalties
    assert not any("orthogonality" in row for row in plain)
    for key in ("loss/a", "loss/b", "coefficient/a", "coefficient/b"):
        assert regularised[0][key] == plain[0][key], key
    assert regularised[0]["grad_norm"] > 10 * plain[0]["grad_norm"]


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=oct)
def test_every_file_of_a_run_has_the_mode_the_umask_gives(workspace, tmp_path, umask):
    """adapter_model.safetensors came out 0600 (safetensors writes private files) beside 0644 files."""
    previous = os.umask(umask)
    try:
        train(make_config(workspace, tmp_path / "run", max_steps=2))
    finally:
        os.umask(previous)
    entries = [tmp_path / "run", *(tmp_path / "run").rglob("*")]
    modes = {str(path.relative_to(tmp_path)): path.stat().st_mode & 0o777 for path in entries}
    expected = {name: (0o777 if (tmp_path / name).is_dir() else 0o666) & ~umask for name in modes}
    assert modes == expected and "run/adapter/adapter_model.safetensors" in modes
