"""Builders shared by several test modules (tests never import each other)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import torch
from panacea.training import TrainConfig
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForSequenceClassification

from panacea._config import dataclass_from_dict, dump_yaml
from tests.conftest import VOCAB_SIZE, tiny_llama, tiny_tokenizer

DIMENSIONS = ("a", "b")


def input_ids(batch=3, length=6, seed=0):
    """Random token ids (batch, length) for the tiny models, seeded."""
    return torch.randint(3, VOCAB_SIZE, (batch, length), generator=torch.Generator().manual_seed(seed))


def make_workspace(root: Path) -> Path:
    """Save a tiny Llama + word-level tokenizer in `root`/model and 16 word-salad pairs per dimension."""
    tiny_llama().save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    rng = random.Random(0)

    def words(count: int) -> str:
        return " ".join(f"w{rng.randrange(4, 64)}" for _ in range(count))

    for dimension in DIMENSIONS:
        with open(root / f"{dimension}.jsonl", "w") as handle:
            for index in range(16):
                record = {
                    "id": f"{dimension}{index}",
                    "prompt": words(5),
                    "chosen": words(rng.randrange(2, 8)),
                    "rejected": words(rng.randrange(2, 8)),
                    "dim": dimension,
                    "source": "test",
                    "split": "train",
                }
                handle.write(json.dumps(record) + "\n")
    return root


def train_tiny_run(root: Path, max_steps: int = 4, eval_pairs: int = 4) -> Path:
    """A tiny run trained in `root`/run, each dimension held out on the first `eval_pairs` of its own pairs."""
    from panacea.training import train

    workspace = make_workspace(root)
    data = config_dict(workspace, root / "run", max_steps=max_steps, save_steps=max_steps)
    for dimension in data["dimensions"]:
        dimension["eval"] = [{"path": dimension["train"][0]["path"], "max_pairs": eval_pairs}]
    train(dataclass_from_dict(TrainConfig, data, where="test"))
    return root / "run"


def load_script(path: Path, monkeypatch):
    """A script (e.g. benchmarks/steering_study.py) as a module, registered first: its dataclasses look themselves
    up in sys.modules."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def config_dict(workspace: Path, output_dir: Path, **overrides) -> dict:
    config = {
        "output_dir": str(output_dir),
        "model": str(workspace / "model"),
        "device": "cpu",
        "adapter": {"svd_rank": 2, "init": "lora"},
        "dimensions": [{"name": name, "train": [{"path": str(workspace / f"{name}.jsonl")}]} for name in DIMENSIONS],
        "max_length": 24,
        "max_prompt_length": 8,
        "max_steps": 6,
        "batch_size": 4,
        "micro_batch_size": 2,
        "learning_rate": 1e-2,
        "save_steps": 2,
        "save_total_limit": None,
        "preference_sampling": "per_sample",
    }
    config.update(overrides)
    return config


def make_config(workspace: Path, output_dir: Path, **overrides) -> TrainConfig:
    return dataclass_from_dict(TrainConfig, config_dict(workspace, output_dir, **overrides), where="test config")


def adapter_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def max_difference(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> float:
    assert left.keys() == right.keys()
    return max(float((left[key] - right[key]).abs().max()) for key in left)


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def train_interrupted_then_resumed(config: TrainConfig, monkeypatch, stop_at_step: int) -> None:
    """Train `config` until step `stop_at_step` begins its update (KeyboardInterrupt there), then resume to the end."""
    from panacea.training import train, trainer

    original, calls = trainer.GradientBuffers.combine, {"count": 0}

    def interrupt(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == stop_at_step:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer.GradientBuffers, "combine", interrupt)
    try:
        train(config)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError(f"the run finished before step {stop_at_step}")
    monkeypatch.setattr(trainer.GradientBuffers, "combine", original)
    train(config, resume=True)


def kill_when_checkpointed(command: list[str], checkpoint: Path, timeout: float = 300) -> None:
    """Run `command`, SIGKILL it as soon as `checkpoint` is complete, and check that it died mid-run."""
    import os
    import signal
    import subprocess
    import time

    process = subprocess.Popen(
        command, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while not (checkpoint / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before the checkpoint"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (checkpoint.parents[1] / "adapter").exists(), "the run finished before it was killed"


def tiny_soup(rank: int = 2, seed: int = 3):
    """A rewarded soup ('ab') of two random LoRAs on q_proj and v_proj of a tiny Llama, without a run folder."""
    from panacea.adapters import SoupModel
    from peft import LoraConfig, get_peft_model

    targets = ("q_proj", "v_proj")
    slot = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), lora_dropout=0.0, task_type="CAUSAL_LM")
    peft_model = get_peft_model(tiny_llama(), slot)
    generator = torch.Generator().manual_seed(seed)
    members = {}  # {module: (A (m, R, in), B (m, out, R))}
    for name, module in peft_model.get_base_model().named_modules():
        if name.endswith(targets):
            layer = module.base_layer
            members[name] = (
                torch.randn(2, rank, layer.in_features, generator=generator) * 0.3,
                torch.randn(2, layer.out_features, rank, generator=generator) * 0.3,
            )
    return SoupModel(peft_model, members, scaling=1.0, mode="ab", dimensions=list(DIMENSIONS)).eval()


def save_tiny_classifier(path: Path) -> Path:
    """A tiny random Llama sequence classifier (one label) and its tokenizer, saved at `path`."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        pad_token_id=0,
        num_labels=1,
    )
    LlamaForSequenceClassification(config).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def alone(model, prompt_ids, preference, max_tokens: int) -> list[int]:
    """Greedy tokens of one unpadded row through transformers' `generate` (an EOS it reaches included)."""
    input_ids = torch.tensor([list(prompt_ids)])
    output = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        preference=torch.as_tensor(preference),
        max_new_tokens=max_tokens,
        do_sample=False,
        pad_token_id=0,
    )
    return output[0, input_ids.shape[1] :].tolist()


# Two CPU processes (gloo), as torchrun starts them. Not `accelerate launch --num_processes 2 --cpu`: accelerate
# (1.16) starts more than one CPU process only through mpirun, and otherwise runs the script in one process alone.
TWO_PROCESSES = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def train_in_one_and_in_two_processes(one: dict, two: dict, folder: Path) -> None:
    """`panacea train` config dict `one` in one process and `two` in two (TWO_PROCESSES), each in a subprocess;
    asserts that the second run's checkpoints hold both processes' RNG states (two processes really ran) at `step`."""
    script = folder / "launch.py"
    script.write_text("import sys\nfrom panacea.cli import main\nsys.exit(main())\n")
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    for name, config, launch in (("one", one, [sys.executable]), ("two", two, TWO_PROCESSES)):
        dump_yaml(config, folder / f"{name}.yaml")
        done = subprocess.run(
            [*launch, str(script), "train", str(folder / f"{name}.yaml")],
            env=environment,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    last = max((Path(two["output_dir"]) / "checkpoints").glob("step-*"), key=lambda path: int(path.name[5:]))
    assert sorted(load_file(last / "rng.safetensors")) == ["cpu.0", "cpu.1"]  # a launch of one process fails here
