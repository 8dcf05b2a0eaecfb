"""Training on the embedded SmolLM2-135M-Instruct with configs/ci.yaml: loss goes down; SIGKILL + --resume is exact."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from panacea.training import TrainConfig, dpo_loss, train
from panacea.training.aggregators import AGGREGATORS
from panacea.training.reference import compute_log_probs

from panacea.data import load_dimension
from tests.helpers import adapter_weights, kill_when_checkpointed, max_difference

pytestmark = pytest.mark.integration
CI_CONFIG = Path(__file__).parents[2] / "configs" / "ci.yaml"


@pytest.fixture(autouse=True)
def _run_from_the_repository_root(monkeypatch):
    monkeypatch.chdir(CI_CONFIG.parents[1])  # the config's data paths are relative to the repository


@pytest.mark.parametrize("aggregator", ["none", *sorted(AGGREGATORS)])
def test_a_short_run_lowers_every_dimension_training_loss(tmp_path, aggregator):
    config = TrainConfig.from_yaml(
        CI_CONFIG,
        [
            f"output_dir={tmp_path / 'run'}",
            "max_steps=8",
            "batch_size=4",
            "micro_batch_size=2",
            "save_steps=8",
            "dimensions.0.train.0.max_pairs=8",
            "dimensions.1.train.0.max_pairs=8",
            "preference_sampling=per_step",
            f"aggregator={aggregator}",
        ],
    )
    result = train(config)
    model, tokenizer = result.model, result.tokenizer
    for index, dimension in enumerate(config.dimensions):
        pairs, _ = load_dimension(
            dimension.train,
            dimension.name,
            config.dimension_names,
            tokenizer,
            config.max_length,
            config.max_prompt_length,
        )
        kwargs = dict(pad_token_id=tokenizer.pad_token_id, batch_size=8)
        reference = compute_log_probs(model, pairs, reference=True, **kwargs)
        vertex = torch.eye(2)[index]
        policy = compute_log_probs(model, pairs, preference=vertex, **kwargs)
        loss = float(dpo_loss(policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1], dimension.beta).mean())
        assert loss < math.log(2) - 0.01, (dimension.name, loss)


def test_sigkill_then_resume_ends_with_the_uninterrupted_adapter(tmp_path):
    command = [
        sys.executable,
        "-m",
        "panacea.cli",
        "train",
        str(CI_CONFIG),
        "--set",
        "max_steps=4",
        "--set",
        "save_steps=2",
    ]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([*command, "--set", f"output_dir={straight}"], check=True, capture_output=True)
    kill_when_checkpointed([*command, "--set", f"output_dir={killed}"], killed / "checkpoints" / "step-2")
    subprocess.run([*command, "--set", f"output_dir={killed}", "--resume"], check=True, capture_output=True)
    assert max_difference(adapter_weights(straight), adapter_weights(killed)) <= 1e-6
