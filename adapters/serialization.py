"""Files on disk: the Panacea adapter format, the base-model fingerprint, and export to plain peft LoRAs.

A Panacea adapter folder holds `adapter_config.json` and `adapter_model.safetensors` (no pickle);
an exported LoRA folder holds the same two file names in peft's own format, plus a README.md. A set of
exported LoRAs (a grid of trade-offs, or the m vertices) is a folder with one such LoRA per subfolder, an
`index.json` that says which λ each subfolder holds, and a README.md.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from peft import LoraConfig
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from panacea._io import atomic_directory, read_json, write_json
from panacea._names import CONFIG_NAME, RUN_ADAPTER_DIR
from panacea.preferences import PreferenceLike, validate_preference

from .config import PanaceaConfig

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "adapter_model.safetensors"
README_NAME = "README.md"
PREFERENCE_METADATA_KEY = (
    "panacea_preference"  # in an export's safetensors metadata: json of {name: weight} or [weights]
)
FORMAT_VERSION = 1
INDEX_NAME = "index.json"  # a set of exported LoRAs: which subfolder holds which λ
INDEX_FORMAT_VERSION = 1
FINGERPRINT_FIELDS = ("architecture", "model_type", "hidden_size", "num_hidden_layers", "vocab_size")
_TOP_LEVEL_KEYS = {"format_version", "adapter", "base_model"}
_UNSAFE_IN_NAMES = re.compile(r"[^\w.-]")  # what `lora_folder_name` replaces in a dimension's name


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
    and a Panacea adapter or training run there would be lost (the rerun of `generate` then fails far from here).
    A Panacea adapter or a training run is refused even with `overwrite`, which replaces an earlier export (or other
    files) only: written into a run, a LoRA's adapter_config.json at its top made every later load of the run read
    the LoRA instead of its Panacea adapter."""
    path = Path(directory)
    if not path.is_dir():
        return  # absent, or atomic_directory names it: "exists and is not a directory"
    contents = sorted(entry.name for entry in path.iterdir())
    if not contents:
        return
    kept = None  # what an export never replaces
    if (path / RUN_ADAPTER_DIR / CONFIG_NAME).is_file() or (path / "config.yaml").is_file():
        kept = "a training run"
    elif (path / CONFIG_NAME).is_file() and "adapter" in _read_json_or_empty(path / CONFIG_NAME):
        kept = "a Panacea adapter"
    elif path.name == RUN_ADAPTER_DIR and (
        (path.parent / "config.yaml").is_file() or path.parent.parent.name == "checkpoints"
    ):  # a rewarded-soups member's LoRA (RUN/soups/NAME/adapter) or a checkpoint's: a plain peft folder
        kept = "a training run's adapter"
    if kept is not None:
        raise FileExistsError(
            f"{path} holds {kept}, which an export never replaces (not even with --overwrite, which replaces an "
            "earlier export); export into another folder."
        )
    if overwrite:
        return
    if (path / INDEX_NAME).is_file():
        what = f"an exported set of LoRAs ({INDEX_NAME} and {len(contents) - 1} more)"
    else:
        what = f"{len(contents)} file(s) or folder(s) ({', '.join(contents[:3])}{', …' if len(contents) > 3 else ''})"
    raise FileExistsError(
        f"{path} already holds {what}; export into a new or empty folder, or pass --overwrite "
        "(overwrite=True) to replace what is there."
    )


def previous_export(directory: str | os.PathLike) -> list[str]:
    """The entries of an earlier export in `directory`, which a new export there (--overwrite) replaces whole.

    A set: its index, README and the subfolders its index lists; a single LoRA: its weights, config and README.
    Without this, an 11-point grid overwritten by a 3-point one kept 8 stale LoRAs beside the new index, and a set
    written over a single LoRA left that LoRA's weights at the top, where peft would load them. Anything else in
    the folder (a user's notes) is not an export's and stays.
    """
    path = Path(directory)
    if not path.is_dir():
        return []
    names = []
    if (path / INDEX_NAME).is_file():
        adapters = _read_json_or_empty(path / INDEX_NAME).get("adapters")
        for entry in adapters if isinstance(adapters, list) else []:
            folder = entry.get("folder") if isinstance(entry, dict) else None
            if isinstance(folder, str):
                names.append(folder)  # matched against the folder's own entries: nothing outside it is touched
        names += [INDEX_NAME, README_NAME]
    if _read_json_or_empty(path / CONFIG_NAME).get("peft_type") == "LORA":
        names += [WEIGHTS_NAME, CONFIG_NAME, README_NAME]
    return sorted(set(names))


def _read_json_or_empty(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


LoraWeights = dict[str, tuple[torch.Tensor, torch.Tensor]]  # {module name: (lora_A (r, in), lora_B (out, r))}
ExportedPreference = dict[str, float] | list[float]  # λ as `preference_as_json` writes it: {name: weight} or weights


def save_peft_lora(
    directory: str | os.PathLike,
    lora_weights: LoraWeights,
    config: LoraConfig,
    preference: ExportedPreference,
    overwrite: bool = False,
) -> None:
    """Write one plain peft LoRA (`config`, with lora_alpha = r: scaling 1) from {module name: (lora_A, lora_B)}.

    A `directory` that holds anything is refused unless `overwrite`, a run or adapter always (check_export_target).

    `preference` is the λ it was exported at, {name: weight} or the list of weights: it goes into the
    safetensors metadata under 'panacea_preference' (as JSON) and into the folder's README.md.
    """
    check_export_target(directory, overwrite)
    with atomic_directory(directory, replaces=previous_export(directory)) as staging:
        _write_peft_lora(staging, Path(directory), lora_weights, config, preference)


def save_peft_lora_set(
    directory: str | os.PathLike,
    loras: Iterable[tuple[ExportedPreference, LoraWeights]],
    config: LoraConfig,
    *,
    kind: Literal["grid", "vertices"],
    num_points: int,
    preference_names: Sequence[str] | None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write one plain peft LoRA per (λ, weights) into its own subfolder, plus `index.json` and a README.md; return
    the index.

    Subfolders are named by λ (`lora_folder_name`); the index lists {"preference": λ as weights in order,
    "folder": name} per LoRA, in the order given. `loras` is consumed one LoRA at a time, so only one LoRA's
    weights need be in memory. The whole set lands atomically: a failure leaves `directory` as it was.
    """
    check_export_target(directory, overwrite)
    directory = Path(directory)
    decimals = _folder_name_decimals(num_points)
    entries = []
    with atomic_directory(directory, replaces=previous_export(directory)) as staging:
        for preference, lora_weights in loras:
            weights = list(preference.values()) if isinstance(preference, dict) else list(preference)
            folder = lora_folder_name(weights, preference_names, decimals)
            (staging / folder).mkdir()  # FileExistsError if two LoRAs got one name: never write one over another
            _write_peft_lora(staging / folder, directory / folder, lora_weights, config, preference)
            entries.append({"preference": weights, "folder": folder})
        index = {
            "format_version": INDEX_FORMAT_VERSION,
            "kind": kind,
            "num_points": num_points,
            "preference_names": None if preference_names is None else list(preference_names),
            "base_model_name_or_path": config.base_model_name_or_path,
            "rank": config.r,
            "adapters": entries,
        }
        write_json(staging / INDEX_NAME, index)
        (staging / README_NAME).write_text(_lora_set_readme(directory, index))
    return index


def _write_peft_lora(
    folder: Path, final_folder: Path, lora_weights: LoraWeights, config: LoraConfig, preference: ExportedPreference
) -> None:
    """Write one LoRA's three files into the existing `folder` (its README names `final_folder`, where it will land)."""
    # peft's on-disk keys: PeftModelForCausalLM prefix + module path, without the adapter name.
    state_dict = {}
    for name, (lora_a, lora_b) in lora_weights.items():
        state_dict[f"base_model.model.{name}.lora_A.weight"] = lora_a
        state_dict[f"base_model.model.{name}.lora_B.weight"] = lora_b
    metadata = {"format": "pt", PREFERENCE_METADATA_KEY: json.dumps(preference)}
    save_file(_to_cpu(state_dict), folder / WEIGHTS_NAME, metadata=metadata)
    config.save_pretrained(folder)
    readme = _export_readme(final_folder, config.base_model_name_or_path, preference, config.r)
    (folder / README_NAME).write_text(readme)


def lora_folder_name(weights: Sequence[float], names: Sequence[str] | None, decimals: int = 2) -> str:
    """A set member's subfolder, and its LoRA name in a server: 'helpful-0.80_harmless-0.20', or '0.80-0.20'.

    Characters other than letters, digits, '.', '-' and '_' in a dimension name become '_', so the name can go
    unquoted into a shell command, a URL or SGLang's 'base:adapter' model field.
    """
    values = [f"{weight:.{decimals}f}" for weight in weights]
    if names is None:
        return "-".join(values)
    return "_".join(f"{_UNSAFE_IN_NAMES.sub('_', name)}-{value}" for name, value in zip(names, values, strict=True))


def _folder_name_decimals(num_points: int) -> int:
    """Decimals that tell every lattice weight apart: 2 up to 99 steps (step 1/(N−1) > 0.01), one more per 10×.

    Weights a step apart round apart when the step exceeds 10^-decimals, and 1/(N−1) > 10^-len(str(N−1)).
    """
    return max(2, len(str(num_points - 1)))


def nearest_grid_adapter(index: Mapping[str, Any] | str | os.PathLike, preference: PreferenceLike) -> str:
    """The folder (= the served LoRA's name) of the exported grid point nearest to λ.

    Nearest: least Euclidean distance between the weight vectors; an exact tie goes to the point listed first
    in the index (lattice order: larger first weights first). `index` is the export folder, its index.json, or
    that file's contents; λ is a vector or {name: weight}, checked like every λ in panacea.
    """
    if not isinstance(index, Mapping):
        path = Path(index)
        index = read_json(path / INDEX_NAME if path.is_dir() else path)
    entries = index.get("adapters")
    expected = {"preference", "folder"}
    if not entries or not all(isinstance(entry, Mapping) and expected <= entry.keys() for entry in entries):
        raise ValueError(
            f"not a panacea LoRA index: expected 'adapters', a list of {{'preference', 'folder'}}, as `panacea export "
            f"--grid` writes it in {INDEX_NAME}; got keys {sorted(index)}."
        )
    points = torch.tensor([entry["preference"] for entry in entries], dtype=torch.float64)  # (points, m)
    preference = validate_preference(preference, points.shape[1], names=index.get("preference_names"))
    if preference.ndim != 1:
        raise ValueError(f"nearest_grid_adapter takes one preference of shape (m,), got {tuple(preference.shape)}.")
    distances = (points - preference.double()).square().sum(-1)  # (points,)
    return entries[int(distances.argmin())]["folder"]  # argmin: the first of equal minima


def _export_readme(
    directory: Path, base_model_name_or_path: str | None, preference: dict[str, float] | list[float], rank: int
) -> str:
    """A short model card for an exported trade-off: what it is, and how to load it with peft."""
    if isinstance(preference, dict):
        trade_off = ", ".join(f"{name}={weight:g}" for name, weight in preference.items())
    else:
        trade_off = "λ = (" + ", ".join(f"{weight:g}" for weight in preference) + ") (unnamed dimensions, in order)"
    import_base, load_base = _base_model_lines(base_model_name_or_path)
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


def _lora_set_readme(directory: Path, index: dict[str, Any]) -> str:
    """A short model card for a grid or vertex export: what it holds, and how a server or peft uses it."""
    entries, names = index["adapters"], index["preference_names"]
    base_model_name_or_path = index["base_model_name_or_path"]
    num_preferences = len(entries[0]["preference"])
    example = {1: [1.0], 2: [0.8, 0.2]}.get(num_preferences) or [0.5, 0.3, 0.2] + [0.0] * (num_preferences - 3)
    dimensions = ", ".join(names) if names else f"{num_preferences} unnamed, in the adapter's order"
    facts = f"""- Base model: `{base_model_name_or_path or "(not recorded)"}`
- Dimensions: {dimensions} (every λ lists its weights in this order)
- LoRA rank: r = {index["rank"]} (lora_alpha = {index["rank"]}, scaling 1)
- `{INDEX_NAME}`: each LoRA's λ (`preference`) and subfolder (`folder`)"""
    if index["kind"] == "grid":
        return f"""# Panacea trade-offs as a grid of plain peft LoRAs

Exported by panacea from a Panacea SVD-LoRA adapter (Zhong et al., arXiv 2402.02030): one LoRA per point of the
simplex lattice with {index["num_points"]} points per edge, {len(entries)} in all, each in the subfolder named by its λ
and each the Panacea model at that λ.

{facts}

## Serve it

Register every subfolder as a LoRA named after it (vLLM `--lora-modules NAME=PATH`, SGLang `--lora-paths NAME=PATH`)
and send each request to the LoRA nearest its λ: least Euclidean distance between the weight vectors, an exact tie
going to the point listed first in `{INDEX_NAME}`. A λ between grid points is served at its nearest point. In Python:

```python
from panacea.adapters.serialization import nearest_grid_adapter

lora_name = nearest_grid_adapter({str(directory)!r}, {example})   # λ in order, or {{name: weight}}
```
"""
    import_base, load_base = _base_model_lines(base_model_name_or_path)
    adapters = [f"vertex{position}" for position in range(len(entries))]  # peft adapter names: no '.'
    folders = [str(directory / entry["folder"]) for entry in entries]
    loads = "\n".join(
        [
            f'model = PeftModel.from_pretrained(base, {folders[0]!r}, adapter_name="{adapters[0]}")',
            *(
                f'model.load_adapter({folder!r}, adapter_name="{adapter}")'
                for adapter, folder in zip(adapters[1:], folders[1:], strict=True)
            ),
        ]
    )
    return f"""# A Panacea adapter as its vertex LoRAs

Exported by panacea from a Panacea SVD-LoRA adapter (Zhong et al., arXiv 2402.02030): LoRA i is the Panacea model
at the vertex λ = e_i, and all of them share lora_A. On the simplex (λ_i ≥ 0, Σ λ_i = 1) the model at λ is exactly
their λ-weighted sum, ΔW(λ) = Σ_i λ_i ΔW(e_i).

{facts}

## Merge them at λ

```python
{import_base}
from peft import PeftModel

{load_base}
{loads}
preference = {example}  # λ: one weight per dimension, in order, summing to 1
model.add_weighted_adapter({adapters}, weights=preference, adapter_name="mix", combination_type="cat")
model.set_adapter("mix")
```

`combination_type="cat"` is exact, and so is any merge that takes the λ-weighted sum of each tensor (LoRAX's
`linear`), because lora_A is shared. peft's `"linear"` weights each factor by √λ_i and is not exact.
"""


def _base_model_lines(base_model_name_or_path: str | None) -> tuple[str, str]:
    """(import line, line that loads the base model) for a README's example."""
    if not base_model_name_or_path:
        load = 'base = AutoModelForCausalLM.from_pretrained("...")  # the base model it was exported from'
        return "from transformers import AutoModelForCausalLM", load
    if base_model_name_or_path.startswith("embedded:"):  # only panacea resolves its embedded model's name
        return "import panacea", f"base, _ = panacea.load_base_model({base_model_name_or_path!r})"
    return (
        "from transformers import AutoModelForCausalLM",
        f"base = AutoModelForCausalLM.from_pretrained({base_model_name_or_path!r})",
    )


def _to_cpu(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: tensor.detach().to("cpu").contiguous() for key, tensor in state_dict.items()}
