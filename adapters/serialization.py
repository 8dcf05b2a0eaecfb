"""Files on disk: the Panacea adapter format, the base-model fingerprint, and export to a plain peft LoRA.

A Panacea adapter folder holds `adapter_config.json` and `adapter_model.safetensors` (no pickle);
an exported LoRA folder holds the same two file names in peft's own format, plus a README.md.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from panacea._io import atomic_directory, read_json, write_json
from panacea._names import CONFIG_NAME, RUN_ADAPTER_DIR

from .config import PanaceaConfig

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "adapter_model.safetensors"
README_NAME = "README.md"
PREFERENCE_METADATA_KEY = (
    "panacea_preference"  # in an export's safetensors metadata: json of {name: weight} or [weights]
)
FORMAT_VERSION = 1
FINGERPRINT_FIELDS = ("architecture", "model_type", "hidden_size", "num_hidden_layers", "vocab_size")
_TOP_LEVEL_KEYS = {"format_version", "adapter", "base_model"}


def base_model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """What an adapter needs to recognise its base model: architecture, sizes and name/path."""
    config = model.config.get_text_config()
    return {
        "architecture": type(model).__name__,
        "model_type": getattr(config, "model_type", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "num_hidden_layers": getattr(config, "num_hidden_layers", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "name_or_path": getattr(model.config, "name_or_path", None),
    }


def check_fingerprint(saved: dict[str, Any], model: nn.Module, where: str | os.PathLike) -> None:
    """Raise one `ValueError` listing every structural difference between `saved` and `model`."""
    given = base_model_fingerprint(model)
    mismatches = [
        f"{key}: adapter {saved.get(key)!r}, model {given[key]!r}"
        for key in FINGERPRINT_FIELDS
        if saved.get(key) != given[key]
    ]
    if mismatches:
        raise ValueError(
            f"{where} was saved for a different base model ({'; '.join(mismatches)}). Load it onto the base "
            f"model it was trained on, {saved.get('name_or_path')!r} (e.g. panacea.load_base_model(that name))."
        )
    if saved.get("name_or_path") != given["name_or_path"]:
        logger.warning(
            "%s was saved for base model %r; loading onto %r, which has the same architecture and sizes.",
            where,
            saved.get("name_or_path"),
            given["name_or_path"],
        )


def save_adapter(
    directory: str | os.PathLike,
    config: PanaceaConfig,
    state_dict: dict[str, torch.Tensor],
    fingerprint: dict[str, Any],
) -> None:
    """Write the adapter folder atomically: both files appear complete, or nothing changes."""
    with atomic_directory(directory) as staging:
        save_file(_to_cpu(state_dict), staging / WEIGHTS_NAME, metadata={"format": "pt"})
        write_json(
            staging / CONFIG_NAME,
            {
                "format_version": FORMAT_VERSION,
                "adapter": config.to_dict(),
                "base_model": fingerprint,
            },
        )


def adapter_folder(path: str | os.PathLike) -> Path:
    """`path` itself, or `path/adapter` when `path` is a training run folder (which keeps its adapter there)."""
    path = Path(path)
    if not (path / CONFIG_NAME).is_file() and (path / RUN_ADAPTER_DIR / CONFIG_NAME).is_file():
        return path / RUN_ADAPTER_DIR
    return path


def load_adapter(directory: str | os.PathLike) -> tuple[PanaceaConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read (config, state_dict, base-model fingerprint) from an adapter folder or a run folder holding `adapter/`.

    One clear error per problem.
    """
    directory = adapter_folder(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"Panacea adapter folder {directory} does not exist.")
    config_path = directory / CONFIG_NAME
    data = read_json(config_path)
    unknown = sorted(set(data) - _TOP_LEVEL_KEYS)
    if unknown or "adapter" not in data:
        raise ValueError(
            f"{config_path}: not a Panacea adapter config (unknown keys {unknown}, expected {sorted(_TOP_LEVEL_KEYS)})."
            + (
                " It looks like a peft config: load it with peft.PeftModel.from_pretrained."
                if "peft_type" in data
                else ""
            )
        )
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{config_path}: format_version {data.get('format_version')!r} is not supported (expected "
            f"{FORMAT_VERSION}); it was written by another version of panacea."
        )
    config = PanaceaConfig.from_dict(data["adapter"], where=f"{config_path} ['adapter']")
    weights_path = directory / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} not found; the adapter folder is incomplete, save it again.")
    try:
        state_dict = load_file(weights_path)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{weights_path} is corrupt or not a safetensors file ({error}); save it again.") from None
    return config, state_dict, _read_fingerprint(data.get("base_model"), config_path)


def _read_fingerprint(fingerprint: Any, config_path: Path) -> dict[str, Any]:
    expected = {*FINGERPRINT_FIELDS, "name_or_path"}
    if not isinstance(fingerprint, dict) or set(fingerprint) != expected:
        found = sorted(fingerprint) if isinstance(fingerprint, dict) else type(fingerprint).__name__
        raise ValueError(
            f"{config_path}: 'base_model' must be the base-model fingerprint with keys {sorted(expected)}, "
            f"found {found}; the file is damaged, save the adapter again."
        )
    return fingerprint


def check_export_target(directory: str | os.PathLike, overwrite: bool) -> None:
    """Refuse to export into a folder that holds anything, unless `overwrite`: an export replaces the folder's files,
    and a Panacea adapter or training run there would be lost (the rerun of `generate` then fails far from here)."""
    path = Path(directory)
    if overwrite or not path.exists():
        return
    if not path.is_dir():
        return  # atomic_directory names it: "exists and is not a directory"
    contents = sorted(entry.name for entry in path.iterdir())
    if not contents:
        return
    if (path / RUN_ADAPTER_DIR / CONFIG_NAME).is_file() or (path / "config.yaml").is_file():
        what = "a training run"
    elif (path / CONFIG_NAME).is_file() and "adapter" in _read_json_or_empty(path / CONFIG_NAME):
        what = "a Panacea adapter"
    else:
        what = f"{len(contents)} file(s) or folder(s) ({', '.join(contents[:3])}{', …' if len(contents) > 3 else ''})"
    raise FileExistsError(
        f"{path} already holds {what}; export into a new or empty folder, or pass --overwrite "
        "(overwrite=True) to replace what is there."
    )


def _read_json_or_empty(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_peft_lora(
    directory: str | os.PathLike,
    lora_weights: dict[str, tuple[torch.Tensor, torch.Tensor]],
    target_modules: list[str] | str,
    rank: int,
    dropout: float,
    fan_in_fan_out: bool,
    base_model_name_or_path: str | None,
    preference: dict[str, float] | list[float],
    overwrite: bool = False,
) -> None:
    """Write a plain peft LoRA adapter with lora_alpha = r (scaling 1) from {module name: (lora_A, lora_B)}.

    A `directory` that holds anything is refused unless `overwrite` (check_export_target).

    `preference` is the λ it was exported at, {name: weight} or the list of weights: it goes into the
    safetensors metadata under 'panacea_preference' (as JSON) and into the folder's README.md.
    """
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        lora_dropout=dropout,
        target_modules=target_modules,
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model_name_or_path,
    )
    # peft's on-disk keys: PeftModelForCausalLM prefix + module path, without the adapter name.
    state_dict = {}
    for name, (lora_a, lora_b) in lora_weights.items():
        state_dict[f"base_model.model.{name}.lora_A.weight"] = lora_a
        state_dict[f"base_model.model.{name}.lora_B.weight"] = lora_b
    check_export_target(directory, overwrite)
    metadata = {"format": "pt", PREFERENCE_METADATA_KEY: json.dumps(preference)}
    with atomic_directory(directory) as staging:
        save_file(_to_cpu(state_dict), staging / WEIGHTS_NAME, metadata=metadata)
        config.save_pretrained(staging)
        (staging / README_NAME).write_text(_export_readme(Path(directory), base_model_name_or_path, preference, rank))


def _export_readme(
    directory: Path, base_model_name_or_path: str | None, preference: dict[str, float] | list[float], rank: int
) -> str:
    """A short model card for an exported trade-off: what it is, and how to load it with peft."""
    if isinstance(preference, dict):
        trade_off = ", ".join(f"{name}={weight:g}" for name, weight in preference.items())
    else:
        trade_off = "λ = (" + ", ".join(f"{weight:g}" for weight in preference) + ") (unnamed dimensions, in order)"
    if not base_model_name_or_path:
        import_base = "from transformers import AutoModelForCausalLM"
        load_base = 'base = AutoModelForCausalLM.from_pretrained("...")  # the base model it was exported from'
    elif base_model_name_or_path.startswith("embedded:"):  # only panacea resolves its embedded model's name
        import_base = "import panacea"
        load_base = f"base, _ = panacea.load_base_model({base_model_name_or_path!r})"
    else:
        import_base = "from transformers import AutoModelForCausalLM"
        load_base = f"base = AutoModelForCausalLM.from_pretrained({base_model_name_or_path!r})"
    return f"""# A Panacea trade-off as a plain peft LoRA

Exported by panacea from a Panacea SVD-LoRA adapter (Zhong et al., arXiv 2402.02030) at one fixed preference.

- Base model: `{base_model_name_or_path or "(not recorded)"}`
- Preference: {trade_off}
- LoRA rank: r = {rank} (lora_alpha = {rank}, scaling 1)

The safetensors metadata holds the preference as JSON under `{PREFERENCE_METADATA_KEY}`.

## Load it

```python
{import_base}
from peft import PeftModel

{load_base}
model = PeftModel.from_pretrained(base, {str(directory)!r})
```
"""


def _to_cpu(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: tensor.detach().to("cpu").contiguous() for key, tensor in state_dict.items()}
