"""The demo until training lands: inject a seeded adapter, generate at two preferences, save and export.

It shows the mechanics end to end on the embedded model: λ switches behaviour online, and one
trade-off leaves as a plain peft LoRA that reproduces the Panacea model's logits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from panacea._config import load_config
from panacea.adapters import PanaceaConfig, get_panacea_model
from panacea.base_model import load_base_model
from panacea.generation import generate_text


@dataclass
class DemoConfig:
    """What `panacea demo` runs; configs/demo.yaml holds the same values."""

    model: str | None = field(default=None, metadata={"help": "HF id or path; None is the embedded SmolLM2."})
    dtype: str = field(default="float32", metadata={"help": "Base-model dtype."})
    device: str = field(default="cpu", metadata={"help": "'cpu', 'cuda' or 'auto'."})
    seed: int = field(default=0, metadata={"help": "Seeds the adapter initialisation."})
    adapter: dict[str, Any] = field(
        default_factory=lambda: {
            "svd_rank": 8,
            "num_preferences": 2,
            "init": "orthogonal",
            "init_preference_scale": 8.0,
        },
        metadata={"help": "PanaceaConfig fields; a non-zero init_preference_scale makes λ matter before training."},
    )
    prompt: str = field(default="Give me one tip for staying focused while studying.", metadata={"help": "User turn."})
    preferences: list[list[float]] = field(
        default_factory=lambda: [[0.9, 0.1], [0.1, 0.9]],
        metadata={"help": "Preferences to generate at; the first is also exported."},
    )
    max_new_tokens: int = field(default=48, metadata={"help": "Tokens generated per preference."})
    output_dir: str = field(default="runs/demo", metadata={"help": "Where the adapter and the export are written."})

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> DemoConfig:
        return load_config(cls, path)


def run_demo(config: DemoConfig) -> None:
    torch.manual_seed(config.seed)
    base_model, tokenizer = load_base_model(config.model, dtype=config.dtype, device=config.device)
    adapter_config = PanaceaConfig.from_dict(config.adapter, where="demo config ['adapter']")
    model = get_panacea_model(base_model, adapter_config).eval()
    print(
        f"base model: {base_model.config.name_or_path}; adapted layers: {len(list(model.adapter_layers()))}, "
        f"k={adapter_config.svd_rank}, m={adapter_config.num_preferences}"
    )
    model.print_trainable_parameters()
    print(f"\nprompt: {config.prompt}")
    for preference in config.preferences:
        answer = generate_text(model, tokenizer, config.prompt, preference, config.max_new_tokens)
        print(f"\nλ = {_label(preference)}:\n  {answer}")

    output_dir = Path(config.output_dir)
    model.save_pretrained(output_dir / "adapter")
    export_preference = config.preferences[0]
    export_dir = output_dir / ("lora-" + "-".join(f"{weight:.2f}" for weight in export_preference))
    model.export_lora(export_preference, export_dir)
    print(f"\nsaved the Panacea adapter to {output_dir / 'adapter'}")
    print(f"exported λ = {_label(export_preference)} as a plain peft LoRA (r={adapter_config.rank}) to {export_dir}")

    # Check the export the way a user without panacea would load it.
    inputs = tokenizer(config.prompt, return_tensors="pt").to(model.device)
    with torch.no_grad():
        expected = model(**inputs, preference=export_preference).logits
        fresh_base, _ = load_base_model(config.model, dtype=config.dtype, device=config.device)
        exported = PeftModel.from_pretrained(fresh_base, export_dir).eval()
        actual = exported(**inputs).logits
    difference = (actual - expected).abs().max().item()
    print(f"reloaded with peft.PeftModel.from_pretrained: max |Δ logit| vs Panacea = {difference:.2e}")


def _label(preference: list[float]) -> str:
    return "(" + ", ".join(f"{weight:.2f}" for weight in preference) + ")"
