"""The trainer on CUDA (bf16 autocast, a bf16 base, gradient checkpointing, resume); skipped without a GPU.

CI has no GPU: these run where one is lent (`pytest tests/training/test_cuda.py` on the device machine).
"""

from __future__ import annotations

import json

import pytest
import torch
from panacea.training import train
from panacea.training.reference import compute_log_probs

from panacea import load_base_model
from panacea.data import PairSource, load_dimension
from tests.helpers import adapter_weights, losses, make_config, max_difference, train_interrupted_then_resumed

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_bf16_autocast_run_trains_on_the_gpu_and_resumes(workspace, tmp_path, monkeypatch):
    settings = dict(device="cuda", mixed_precision="bf16", max_steps=6, save_steps=2)
    result = train(make_config(workspace, tmp_path / "straight", **settings))
    assert all(
        parameter.device.type == "cuda" and parameter.dtype == torch.float32
        for parameter in result.model.parameters()
        if parameter.requires_grad
    )
    assert all(torch.isfinite(torch.tensor(losses(tmp_path / "straight"))))

    train_interrupted_then_resumed(make_config(workspace, tmp_path / "resumed", **settings), monkeypatch, 4)
    # index_add and matmul reductions on CUDA are not bitwise deterministic: allow float noise.
    assert max_difference(adapter_weights(tmp_path / "straight"), adapter_weights(tmp_path / "resumed")) <= 1e-4


def test_a_bf16_base_with_gradient_checkpointing_trains(workspace, tmp_path):
    config = make_config(
        workspace,
        tmp_path / "run",
        device="cuda",
        dtype="bfloat16",
        mixed_precision="bf16",
        gradient_checkpointing=True,
        max_steps=8,
        save_steps=8,
        learning_rate=2e-2,
        preference_sampling="per_step",
    )
    result = train(config)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor([row["loss"] for row in log])))
    assert result.model.base_model.dtype == torch.bfloat16
    assert {parameter.dtype for parameter in result.model.parameters() if parameter.requires_grad} == {torch.float32}


def test_log_probs_on_the_gpu_match_the_cpu(workspace, tmp_path):
    cpu_model, tokenizer = load_base_model(str(workspace / "model"))
    gpu_model, _ = load_base_model(str(workspace / "model"), device="cuda")
    from panacea import PanaceaConfig, get_panacea_model

    pairs, _ = load_dimension([PairSource(path=str(workspace / "a.jsonl"))], "a", ["a", "b"], tokenizer, 24, 8)
    results = []
    for model in (cpu_model, gpu_model):
        torch.manual_seed(0)
        panacea = get_panacea_model(model, PanaceaConfig(svd_rank=2, init="lora"))
        results.append(
            compute_log_probs(
                panacea, pairs, pad_token_id=tokenizer.pad_token_id, batch_size=4, preference=torch.tensor([0.3, 0.7])
            )
        )
    assert torch.allclose(results[0], results[1], atol=1e-3, rtol=1e-4)
