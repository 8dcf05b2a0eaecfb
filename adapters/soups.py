"""Rewarded soups (Ramé et al. 2023, arXiv 2306.04488; code alexrame/rewardedsoups): m plain LoRAs, mixed at λ.

`PlainLoraModel` is one member while it trains: a standard peft LoRA with the rank and modules of the
Panacea adapter, behind the interface the Panacea trainer drives (it accepts `preference=` and ignores it).
`SoupModel` serves a λ by interpolating the m trained LoRAs (docs/algorithms.md §7), per layer:

    ab    (the authors' recipe):  A_λ = Σ λ_i A_i,        B_λ = s Σ λ_i B_i             ΔW = s (Σ λ_i B_i)(Σ λ_i A_i)
    delta (the exact ΔW mix):     A_λ = [A_1; …; A_m],  B_λ = [λ_1 s B_1 … λ_m s B_m]   ΔW = Σ λ_i s B_i A_i

`delta` equals peft's `add_weighted_adapter(..., combination_type="cat")`. Both write one extra peft LoRA
slot of scaling 1 in place, so a new λ costs one pass over the layers (`ab`: both factors; `delta`: B only,
A_cat is constant); `switch_seconds` records the wall time of every switch.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from panacea._io import atomic_directory, read_json
from panacea.preferences import PreferenceLike, validate_preference

from .config import PanaceaConfig
from .model import _shortest_target_modules, find_target_modules
from .serialization import CONFIG_NAME, WEIGHTS_NAME, check_export_target, check_fingerprint, previous_export

SoupMode = Literal["ab", "delta"]
MODES: tuple[str, ...] = get_args(SoupMode)  # the one list of modes
MANIFEST_NAME = "manifest.json"  # RUN/manifest.json of a soups run
MANIFEST_FORMAT = 1
MIX_ADAPTER = "default"  # the mixed slot; peft saves any other adapter name into a subfolder
_LORA_KEY = re.compile(r"base_model\.model\.(.+)\.lora_([AB])\.weight")  # peft's on-disk key of a linear LoRA


# --------------------------------------------------------------------------------------------------
# The mix, one layer at a time (pure functions)


def mix_lora_A(A: Tensor, preference: Tensor, mode: SoupMode) -> Tensor:
    """A_λ of one layer from the members' A (m, R, in): ab Σ λ_i A_i (R, in); delta [A_1; …; A_m] (m·R, in)."""
    if mode == "ab":
        return torch.einsum("m,mri->ri", preference.to(A), A)
    return A.reshape(-1, A.shape[-1])


def mix_lora_B(B: Tensor, preference: Tensor, scaling: float, mode: SoupMode) -> Tensor:
    """B_λ of one layer from the members' B (m, out, R), for a slot of scaling 1.

    ab: s Σ λ_i B_i (out, R); delta: [λ_1 s B_1 … λ_m s B_m] (out, m·R), blocks in member order.
    """
    weights = scaling * preference.to(B)
    if mode == "ab":
        return torch.einsum("m,mor->or", weights, B)
    return (weights[:, None, None] * B).permute(1, 0, 2).reshape(B.shape[1], -1)


def soup_delta(A: Tensor, B: Tensor, preference: Tensor, scaling: float, mode: SoupMode) -> Tensor:
    """ΔW (out, in) of one layer at λ (m,): ab s (Σ λ_i B_i)(Σ λ_i A_i); delta Σ λ_i s B_i A_i."""
    return mix_lora_B(B, preference, scaling, mode) @ mix_lora_A(A, preference, mode)


# --------------------------------------------------------------------------------------------------
# A peft model behind PanaceaModel's interface


class _PeftWrapper(nn.Module):
    """What the trainer and the evaluation use of a PanaceaModel, for a peft model underneath."""

    def __init__(self, peft_model: PeftModel) -> None:
        super().__init__()
        self.peft_model = peft_model

    @property
    def base_model(self) -> nn.Module:
        """The Hugging Face model (with the LoRA layers in it), as `PanaceaModel.base_model`."""
        return self.peft_model.get_base_model()

    def get_base_model(self) -> nn.Module:
        """peft's name for `base_model`."""
        return self.peft_model.get_base_model()

    @property
    def device(self) -> torch.device:
        return self.base_model.device

    @contextmanager
    def disable_adapter(self) -> Iterator[_PeftWrapper]:
        """`with model.disable_adapter():` run the frozen base model (e.g. as the DPO reference)."""
        with self.peft_model.disable_adapter():
            yield self

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs: Any) -> None:
        """Checkpoint the base model's layers, non-reentrant (the frozen embeddings give no input gradient)."""
        checkpoint_kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        enable = getattr(self.base_model, "activation_checkpointing_enable", None)  # transformers >= 5.x name
        if enable is not None:
            enable(activation_checkpointing_kwargs=checkpoint_kwargs, **kwargs)
        else:
            self.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs, **kwargs)

    def __getattr__(self, name: str) -> Any:
        """Fall back to the Hugging Face model (`config`, `generation_config`, `get_output_embeddings`, ...)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "peft_model":  # not initialised yet: avoid infinite recursion
                raise
            return getattr(self.peft_model.get_base_model(), name)


def lora_config_for(model: nn.Module, config: PanaceaConfig) -> LoraConfig:
    """The plain LoRA matching a Panacea adapter on `model`: rank k + m·r, the same modules, alpha and dropout.

    lora_alpha = the adapter's alpha (default: the rank), so the LoRA's scaling is the adapter's (1 by default).
    """
    targets = find_target_modules(model, config)
    rank = config.rank
    return LoraConfig(
        r=rank,
        lora_alpha=rank if config.alpha is None else config.alpha,
        lora_dropout=config.dropout,
        target_modules=_shortest_target_modules(model, targets),
        fan_in_fan_out=any(isinstance(model.get_submodule(name), Conv1D) for name in targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


class PlainLoraModel(_PeftWrapper):
    """One rewarded-soups member: a standard peft LoRA that the Panacea trainer can train and checkpoint.

    Create with `get_lora_model`. It saves as a plain peft folder (`PeftModel.from_pretrained` loads it).
    """

    def forward(self, *args: Any, preference: PreferenceLike | None = None, **kwargs: Any) -> Any:
        """The peft model's forward. `preference` is accepted and ignored: a plain LoRA has no λ input."""
        return self.peft_model(*args, **kwargs)

    def generate(self, *args: Any, preference: PreferenceLike | None = None, **kwargs: Any) -> Any:
        """The peft model's `generate`; `preference` is ignored, as in `forward`."""
        return self.peft_model.generate(*args, **kwargs)

    def adapter_state_dict(self) -> dict[str, Tensor]:
        """{peft's on-disk key ('base_model.model.<module>.lora_A.weight'): the live parameter}."""
        adapter = f".{self.peft_model.active_adapter}."
        return {
            name.replace(adapter, "."): parameter
            for name, parameter in self.peft_model.named_parameters()
            if "lora_" in name
        }

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write a plain peft LoRA folder atomically (adapter_config.json, adapter_model.safetensors, README.md)."""
        with atomic_directory(directory) as staging:
            self.peft_model.save_pretrained(staging, save_embedding_layers=False)  # 'auto' may ask the Hub


def get_lora_model(model: nn.Module, config: PanaceaConfig, *, seed: int) -> PlainLoraModel:
    """A fresh peft LoRA (`lora_config_for`) injected into `model`, whose weights are frozen.

    peft's init: A Kaiming-uniform, B = 0, so training starts at the base model. The global RNG is seeded
    with `seed` right before the LoRA is created, so every member of a soup starts from the same A
    (Ramé et al. need one shared initialisation).
    """
    lora_config = lora_config_for(model, config)
    torch.manual_seed(seed)
    return PlainLoraModel(get_peft_model(model, lora_config))


# --------------------------------------------------------------------------------------------------
# The soup


class SoupModel(_PeftWrapper):
    """The m LoRAs of a rewarded-soups run, served at one λ at a time in mode 'ab' or 'delta'.

    Load with `SoupModel.from_run(base_model, run_dir, mode)`. `forward` / `generate` take `preference=`
    like PanaceaModel's, but a soup is one set of weights: a (batch, m) preference must repeat one λ.
    """

    def __init__(
        self,
        peft_model: PeftModel,
        members: dict[str, tuple[Tensor, Tensor]],
        scaling: float,
        mode: SoupMode,
        dimensions: Sequence[str],
    ) -> None:
        """`members`: {module name: (A (m, R, in), B (m, out, R))}; `scaling` s of the members; the slot's is 1."""
        super().__init__(peft_model)
        self.mode, self.scaling, self.dimensions = mode, scaling, list(dimensions)
        self.switch_seconds: list[float] = []  # wall time of every rebuild of the mixed LoRA
        base = peft_model.get_base_model()
        self._mix_layers = [base.get_submodule(name) for name in members]  # peft LoRA layers (a list: not submodules)
        self._members = _MemberWeights(list(members.values()))
        self._preference: Tensor | None = None
        self._disabled = False
        if mode == "delta":  # A_cat does not depend on λ: write it once
            with torch.no_grad():
                for layer, (A, _) in zip(self._mix_layers, self._members.stacks(), strict=True):
                    layer.lora_A[MIX_ADAPTER].weight.copy_(mix_lora_A(A, torch.empty(0), mode))

    @classmethod
    def from_run(
        cls,
        model: nn.Module,
        run_dir: str | os.PathLike,
        mode: SoupMode = "ab",
        *,
        dimensions: Sequence[str] | None = None,
    ) -> SoupModel:
        """Load the LoRAs of a finished soups run onto `model` (its base model), in eval mode.

        peft injects the mixed slot into `model` in place (after every check has passed). `dimensions`,
        when given, must be the run's dimensions in order (e.g. the evaluation config's).
        """
        if mode not in MODES:
            raise ValueError(f"soup mode must be one of {MODES}, got {mode!r}.")
        run_dir = Path(run_dir)
        manifest = read_soups_manifest(run_dir)
        names = manifest["dimensions"]
        if dimensions is not None and list(dimensions) != names:
            raise ValueError(f"{run_dir}: the soups run has dimensions {names}, the caller expects {list(dimensions)}.")
        check_fingerprint(manifest["base_model"], model, run_dir)
        members = [_read_member(run_dir / manifest["runs"][name]["adapter"], name) for name in names]
        lora_config, scaling = _common_config(members, run_dir)
        stacks = _stack_members([factors for _, factors in members], model, run_dir)
        rank = lora_config.r * (1 if mode == "ab" else len(names))
        slot = replace(lora_config, r=rank, lora_alpha=rank, lora_dropout=0.0, inference_mode=True, use_rslora=False)
        with torch.random.fork_rng(devices=[]):  # peft initialises the slot; leave the caller's RNG alone
            peft_model = get_peft_model(model, slot)
        soup = cls(peft_model, stacks, scaling, mode, names)
        return soup.to(model.device).eval()

    # ----------------------------------------------------------------------------------------------
    # Preference

    def set_preference(self, preference: PreferenceLike) -> None:
        """Serve λ (m,) from now on. Rebuilds the mixed LoRA only when λ changes, and times the rebuild."""
        preference = self._one_preference(preference)
        if self._preference is not None and torch.equal(preference, self._preference):
            return
        started = time.perf_counter()
        with torch.no_grad():
            for layer, (A, B) in zip(self._mix_layers, self._members.stacks(), strict=True):
                if self.mode == "ab":
                    layer.lora_A[MIX_ADAPTER].weight.copy_(mix_lora_A(A, preference, self.mode))
                layer.lora_B[MIX_ADAPTER].weight.copy_(mix_lora_B(B, preference, self.scaling, self.mode))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the copies are asynchronous; time them, not their launch
        self.switch_seconds.append(time.perf_counter() - started)
        self._preference = preference

    @property
    def active_preference(self) -> Tensor | None:
        """The λ the mixed LoRA holds, or None before the first."""
        return self._preference

    @property
    def num_preferences(self) -> int:
        """m, the number of weights in λ: one per member LoRA (as in `PanaceaModel`)."""
        return len(self.dimensions)

    @property
    def preference_names(self) -> list[str]:
        """The members' dimension names, in λ's order: λ may be given as {name: weight} by them."""
        return list(self.dimensions)

    @property
    def last_switch_seconds(self) -> float | None:
        return self.switch_seconds[-1] if self.switch_seconds else None

    def _one_preference(self, preference: PreferenceLike) -> Tensor:
        """λ as a float32 (m,) tensor; a (batch, m) preference must repeat one λ."""
        tensor = validate_preference(preference, self.num_preferences, self.preference_names)
        if tensor.ndim == 2:
            distinct = torch.unique(tensor, dim=0)
            if len(distinct) > 1:
                raise ValueError(
                    f"a rewarded soup serves one λ per call (its mixed LoRA is one set of weights), but the "
                    f"preference of shape {tuple(tensor.shape)} holds {len(distinct)} different rows; call once per λ."
                )
            tensor = tensor[0]
        return tensor.float().cpu()

    # ----------------------------------------------------------------------------------------------
    # Running the model

    def forward(self, *args: Any, preference: PreferenceLike | None = None, **kwargs: Any) -> Any:
        """The peft model's forward at `preference` (which stays set after the call: a switch is a rebuild)."""
        self._prepare(preference)
        return self.peft_model(*args, **kwargs)

    def generate(self, *args: Any, preference: PreferenceLike | None = None, **kwargs: Any) -> Any:
        """The peft model's `generate` at `preference`, as `forward`."""
        self._prepare(preference)
        return self.peft_model.generate(*args, **kwargs)

    def _prepare(self, preference: PreferenceLike | None) -> None:
        if preference is not None:
            self.set_preference(preference)
        elif self._preference is None and not self._disabled:
            raise ValueError("the soup has no preference yet: pass preference= or call set_preference(λ) first.")

    @contextmanager
    def disable_adapter(self) -> Iterator[SoupModel]:
        """`with soup.disable_adapter():` run the frozen base model (the DPO reference)."""
        saved, self._disabled = self._disabled, True
        try:
            with self.peft_model.disable_adapter():
                yield self
        finally:
            self._disabled = saved

    @torch.no_grad()
    def export_lora(self, preference: PreferenceLike, directory: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the mix at λ as a plain peft LoRA (rank R for 'ab', m·R for 'delta'; lora_alpha = rank).

        A `directory` that holds anything is refused unless `overwrite` (a run or adapter always), as
        PanaceaModel.export_lora."""
        check_export_target(directory, overwrite)
        self.set_preference(preference)
        weights = ", ".join(f"{name}={float(w):g}" for name, w in zip(self.dimensions, self._preference, strict=True))
        with atomic_directory(directory, replaces=previous_export(directory)) as staging:  # an earlier export, whole
            self.peft_model.save_pretrained(staging, save_embedding_layers=False)  # 'auto' may ask the Hub
            (staging / "README.md").write_text(
                f"# A rewarded-soups mix as a plain peft LoRA\n\nExported by panacea: the LoRAs of {self.dimensions} "
                f"interpolated in mode '{self.mode}' (docs/algorithms.md, Rewarded soups) at {weights}.\n"
                "Load it with `peft.PeftModel.from_pretrained(base, this_folder)`.\n"
            )


class _MemberWeights(nn.Module):
    """The members' stacked factors per layer, A (m, R, in) and B (m, out, R): buffers, so `.to()` moves them."""

    def __init__(self, stacks: list[tuple[Tensor, Tensor]]) -> None:
        super().__init__()
        self.count = len(stacks)
        for index, (A, B) in enumerate(stacks):
            self.register_buffer(f"A{index}", A, persistent=False)
            self.register_buffer(f"B{index}", B, persistent=False)

    def stacks(self) -> Iterator[tuple[Tensor, Tensor]]:
        return ((getattr(self, f"A{index}"), getattr(self, f"B{index}")) for index in range(self.count))


# --------------------------------------------------------------------------------------------------
# Reading a run


def read_soups_manifest(run_dir: str | os.PathLike) -> dict[str, Any]:
    """RUN/manifest.json of a finished soups run, checked: method, format, and one finished run per dimension."""
    path = Path(run_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a rewarded-soups run (train one with "
            "`panacea train CONFIG --set method=soups`), or its first member has not finished yet."
        )
    manifest = read_json(path)
    if manifest.get("method") != "soups" or manifest.get("format_version") != MANIFEST_FORMAT:
        raise ValueError(
            f"{path}: not a soups manifest of format {MANIFEST_FORMAT} (method {manifest.get('method')!r}, "
            f"format_version {manifest.get('format_version')!r})."
        )
    names, runs = manifest.get("dimensions"), manifest.get("runs")
    if not isinstance(names, list) or not names or not isinstance(runs, dict) or set(runs) - set(names):
        raise ValueError(
            f"{path}: the manifest's dimensions {names!r} do not match its runs "
            f"{sorted(runs) if isinstance(runs, dict) else runs!r}; the file is damaged or from another run."
        )
    missing = [name for name in names if name not in runs]
    if missing or not manifest.get("complete"):
        raise ValueError(
            f"{path}: the soups run is unfinished (no LoRA yet for {missing}); resume it with "
            "`panacea train CONFIG --set method=soups --resume`."
        )
    return manifest


def _read_member(folder: Path, dimension: str) -> tuple[LoraConfig, dict[str, tuple[Tensor, Tensor]]]:
    """(LoraConfig, {module name: (lora_A (R, in), lora_B (out, R))}) of one member's plain peft folder."""
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"{folder}: the LoRA of dimension {dimension!r} is missing ({CONFIG_NAME} and {WEIGHTS_NAME} expected); "
            f"resume the soups run to train it again, after deleting {folder.parent} if it holds a broken run."
        )
    try:
        config = PeftConfig.from_pretrained(str(folder))
        state_dict = load_file(folder / WEIGHTS_NAME)
    except (SafetensorError, OSError, TypeError, ValueError) as error:
        raise ValueError(f"{folder}: not a readable peft LoRA ({error}).") from None
    if not isinstance(config, LoraConfig) or config.use_dora or config.rank_pattern or config.alpha_pattern:
        raise ValueError(f"{folder}: a soup mixes plain LoRAs of one rank; this is a {type(config).__name__}.")
    factors: dict[str, dict[str, Tensor]] = {}
    for key, tensor in state_dict.items():
        match = _LORA_KEY.fullmatch(key)
        if match is None:
            raise ValueError(f"{folder / WEIGHTS_NAME}: unexpected key {key!r}; a soup mixes LoRAs of linear layers.")
        factors.setdefault(match[1], {})[match[2]] = tensor
    incomplete = sorted(name for name, pair in factors.items() if len(pair) != 2)
    if incomplete or not factors:
        raise ValueError(f"{folder / WEIGHTS_NAME}: lora_A or lora_B missing for {incomplete or 'every layer'}.")
    return config, {name: (pair["A"], pair["B"]) for name, pair in factors.items()}


def _common_config(members: list[tuple[LoraConfig, dict]], run_dir: Path) -> tuple[LoraConfig, float]:
    """The members' shared LoraConfig and scaling s; one error if they were not trained alike."""
    first, _ = members[0]
    fields = ("r", "lora_alpha", "use_rslora", "target_modules", "fan_in_fan_out")
    for config, factors in members[1:]:
        differ = [name for name in fields if getattr(config, name) != getattr(first, name)]
        if differ or set(factors) != set(members[0][1]):
            raise ValueError(
                f"{run_dir}: the soup's LoRAs were not trained alike (they differ in {differ or ['layers']}); "
                "mixing needs one rank, alpha and set of layers."
            )
    scaling = first.lora_alpha / (first.r**0.5 if first.use_rslora else first.r)
    return first, scaling


def _stack_members(
    members: list[dict[str, tuple[Tensor, Tensor]]], model: nn.Module, run_dir: Path
) -> dict[str, tuple[Tensor, Tensor]]:
    """{module: (A (m, R, in), B (m, out, R))} in float32 on the model's device, checked against `model`'s layers."""
    device = next(model.parameters()).device
    stacks = {}
    for name in sorted(members[0]):
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            layer = None
        if not isinstance(layer, (nn.Linear, Conv1D)):
            raise ValueError(f"{run_dir}: the LoRAs adapt {name!r}, which is no linear layer of this base model.")
        fan_in, fan_out = layer.weight.shape[::-1] if isinstance(layer, nn.Linear) else layer.weight.shape
        A = torch.stack([member[name][0] for member in members]).to(device, torch.float32)
        B = torch.stack([member[name][1] for member in members]).to(device, torch.float32)
        if A.shape[2] != fan_in or B.shape[1] != fan_out or A.shape[1] != B.shape[2]:
            raise ValueError(
                f"{run_dir}: the LoRA of {name!r} has A {tuple(A.shape[1:])} and B {tuple(B.shape[1:])}, but the "
                f"layer is {fan_out} × {fan_in}; load the run onto the base model it was trained on."
            )
        stacks[name] = (A, B)
    return stacks
