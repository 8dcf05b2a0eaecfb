"""`PanaceaModel`: injects Panacea layers into a Hugging Face causal LM and owns the shared preference.

Switching the preference writes one tensor that every layer reads; merging, saving and exporting
are the only operations that visit the layers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import SimpleNamespace
from typing import Any

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn

from panacea.preferences import PreferenceLike, preference_as_json, simplex_grid, validate_preference

from .config import PanaceaConfig
from .layer import SUPPORTED_LAYERS, PanaceaLinear, PreferenceState
from .serialization import (
    ExportedPreference,
    LoraWeights,
    base_model_fingerprint,
    check_fingerprint,
    load_adapter,
    save_adapter,
    save_peft_lora,
    save_peft_lora_set,
)


def find_target_modules(model: nn.Module, config: PanaceaConfig) -> list[str]:
    """Names of the modules `config` selects, with peft's matching rules ('all-linear' skips the output head)."""
    if any(isinstance(module, PanaceaLinear) for module in model.modules()):
        raise ValueError("the model already has Panacea layers; wrap the original base model only once.")
    output_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear_names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, SUPPORTED_LAYERS) and module is not output_head
    ]
    matcher = config
    if config.target_modules == "all-linear":
        matcher = SimpleNamespace(target_modules=linear_names, exclude_modules=config.exclude_modules)
    targets = [name for name, _ in model.named_modules() if name and check_target_module_exists(matcher, name)]
    if not targets:
        suffixes = sorted({name.rsplit(".", 1)[-1] for name in linear_names})
        raise ValueError(
            f"target_modules={config.target_modules!r} matched no module of {type(model).__name__}; "
            f"its linear layers are named {suffixes}."
        )
    for name in targets:
        module = model.get_submodule(name)
        if not isinstance(module, SUPPORTED_LAYERS):
            raise ValueError(
                f"target_modules={config.target_modules!r} selects {name!r}, a {type(module).__name__}; "
                "Panacea adapts nn.Linear and Conv1D layers only, so name those instead."
            )
    return targets


class PanaceaModel(nn.Module):
    """A causal LM whose linear layers follow a preference λ on the simplex, set at any time without retraining.

    Create with `get_panacea_model(model, config)` or `PanaceaModel.from_pretrained(model, directory)`.
    Attributes it does not define (`config`, `device`, `generation_config`, ...) come from the base model.
    """

    def __init__(self, model: nn.Module, config: PanaceaConfig, *, initialize: bool = True) -> None:
        """Wrap `model` in place; `initialize=False` leaves the adapter weights uninitialised for loading."""
        super().__init__()
        targets = find_target_modules(model, config)
        self.base_model = model
        self.panacea_config = config
        self._preference_state = PreferenceState()
        model.requires_grad_(False)
        for name in targets:
            parent_name, _, child_name = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            layer = PanaceaLinear(getattr(parent, child_name), config, self._preference_state, initialize=initialize)
            setattr(parent, child_name, layer)
        self._first_layer_name = targets[0]

    # ----------------------------------------------------------------------------------------------
    # Preference

    def set_preference(self, preference: PreferenceLike) -> None:
        """Use λ from now on: shape (m,) for the whole batch or (batch, m) per sample. O(1): one tensor write.

        With `preference_names` in the config, λ may also be {name: weight} or a list of such mappings.
        """
        self._preference_state.preference = self._placed(self._validated(preference))

    @property
    def active_preference(self) -> torch.Tensor | None:
        """The preference the layers currently read, or None before the first `set_preference`."""
        return self._preference_state.preference

    @property
    def num_preferences(self) -> int:
        """m, the number of weights in λ (as in `SoupModel` and the server's `/v1/models`)."""
        return self.panacea_config.num_preferences

    @property
    def preference_names(self) -> list[str] | None:
        """The dimension names λ may be given by as {name: weight}, in λ's order; None when the config has none."""
        names = self.panacea_config.preference_names
        return None if names is None else list(names)

    @contextmanager
    def preference(self, preference: PreferenceLike) -> Iterator[PanaceaModel]:
        """`with model.preference(λ):` run with λ, then restore the previous preference."""
        preference = self._placed(self._validated(preference))
        state = self._preference_state
        with self._temporary_state(preference, state.disabled, state.isolated_dimension):
            yield self

    @contextmanager
    def disable_adapter(self) -> Iterator[PanaceaModel]:
        """`with model.disable_adapter():` run the frozen base model (e.g. as the DPO reference)."""
        if self._preference_state.merged_preference is not None:
            raise RuntimeError("the adapter is merged into the base weights; call unmerge() before disable_adapter().")
        state = self._preference_state
        with self._temporary_state(state.preference, True, state.isolated_dimension):
            yield self

    @contextmanager
    def isolated_dimension(self, dimension: int) -> Iterator[PanaceaModel]:
        """`with model.isolated_dimension(i):` losses computed inside train only dimension i's directions (its rows
        of A and columns of B in every layer) and the shared σ, s and k columns; the other dimensions' directions
        still act on the forward pass, detached. The outputs are unchanged. Training's `isolate_dimensions`. Like
        `preference()`, the block restores on exit the preference that was set when it began."""
        if not 0 <= dimension < self.num_preferences:
            raise ValueError(f"isolated_dimension({dimension}): the adapter has {self.num_preferences} dimensions.")
        state = self._preference_state
        with self._temporary_state(state.preference, state.disabled, dimension):
            yield self

    @contextmanager
    def _temporary_state(
        self, preference: torch.Tensor | None, disabled: bool, isolated_dimension: int | None
    ) -> Iterator[None]:
        """Set what the layers read, and put back what was there on the way out, even on error."""
        state = self._preference_state
        saved = state.preference, state.disabled, state.isolated_dimension
        state.preference, state.disabled, state.isolated_dimension = preference, disabled, isolated_dimension
        try:
            yield
        finally:
            state.preference, state.disabled, state.isolated_dimension = saved

    def _validated(self, preference: PreferenceLike) -> torch.Tensor:
        if self._preference_state.merged_preference is not None:
            raise RuntimeError("the adapter is merged for a fixed preference; call unmerge() before setting another.")
        return self._as_tensor(preference)

    def _as_tensor(self, preference: PreferenceLike) -> torch.Tensor:
        """Every preference the model accepts passes here: vectors, or mappings by the config's names."""
        return validate_preference(preference, self.num_preferences, names=self.preference_names)

    def _placed(self, preference: torch.Tensor) -> torch.Tensor:
        """`preference` on the adapter's device and in its dtype, so no layer has to move it."""
        anchor = self.base_model.get_submodule(self._first_layer_name).lora_A
        return preference.to(device=anchor.device, dtype=anchor.dtype)

    # ----------------------------------------------------------------------------------------------
    # Running the model

    def forward(self, *args: Any, preference: PreferenceLike | None = None, **kwargs: Any) -> Any:
        """The base model's forward; `preference=` sets λ for this call only."""
        if preference is None:
            return self.base_model(*args, **kwargs)
        with self.preference(preference):
            return self.base_model(*args, **kwargs)

    def generate(self, *args: Any, preference: PreferenceLike | None = None, **kwargs: Any) -> Any:
        """The base model's `generate`; `preference=` sets λ for this call only.

        A per-sample preference (batch, m), given here or set before, is repeated for each beam or
        returned sequence, the way `generate` expands its inputs.
        """
        state = self._preference_state
        if preference is not None:
            preference = self._placed(self._validated(preference))
        elif state.preference is None or state.preference.ndim == 1 or state.bypass:
            return self.base_model.generate(*args, **kwargs)  # the layers read the current state as it is
        else:
            preference = state.preference  # validated when it was set
        if preference.ndim == 2:
            preference = preference.repeat_interleave(self._generation_expand_size(kwargs), dim=0)
        with self._temporary_state(preference, state.disabled, state.isolated_dimension):
            return self.base_model.generate(*args, **kwargs)

    def _generation_expand_size(self, kwargs: dict[str, Any]) -> int:
        """How many rows `generate` makes of each input: num_beams for beam search, else num_return_sequences."""
        generation_config = kwargs.get("generation_config") or self.base_model.generation_config
        num_beams = kwargs.get("num_beams", generation_config.num_beams) or 1
        num_return_sequences = kwargs.get("num_return_sequences", generation_config.num_return_sequences) or 1
        return num_beams if num_beams > 1 else num_return_sequences

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs: Any) -> None:
        """Checkpoint the base model's layers; their re-run in backward sees the preference of the forward.

        Without this, a layer re-run after `forward(preference=...)` or a `preference(...)` block has
        ended would read whatever preference is current then. Non-reentrant checkpointing only: its
        `context_fn` restores the forward's preference and adapter switch for the re-run.
        """
        checkpoint_kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        if checkpoint_kwargs["use_reentrant"] or "context_fn" in checkpoint_kwargs:
            raise ValueError(
                "Panacea needs non-reentrant checkpointing and sets its own context_fn; drop use_reentrant=True "
                f"and context_fn from gradient_checkpointing_kwargs (got {sorted(checkpoint_kwargs)})."
            )
        checkpoint_kwargs["context_fn"] = self._checkpoint_contexts
        enable = getattr(self.base_model, "activation_checkpointing_enable", None)  # transformers >= 5.x name
        if enable is not None:
            enable(activation_checkpointing_kwargs=checkpoint_kwargs, **kwargs)
        else:
            self.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs, **kwargs)

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, **kwargs: Any
    ) -> None:
        """transformers' newer name for `gradient_checkpointing_enable`."""
        self.gradient_checkpointing_enable(activation_checkpointing_kwargs, **kwargs)

    def _checkpoint_contexts(self) -> tuple[AbstractContextManager, AbstractContextManager]:
        """torch.utils.checkpoint context_fn: nothing around the forward; the forward's state around the re-run."""
        state = self._preference_state
        return nullcontext(), self._temporary_state(state.preference, state.disabled, state.isolated_dimension)

    # ----------------------------------------------------------------------------------------------
    # Layers, merging, regularisation

    def adapter_layers(self) -> Iterator[tuple[str, PanaceaLinear]]:
        """(name, layer) for every Panacea layer, names relative to the base model."""
        for name, module in self.base_model.named_modules():
            if isinstance(module, PanaceaLinear):
                yield name, module

    @torch.no_grad()
    def merge(self, preference: PreferenceLike) -> None:
        """Fold λ into the base weights (W0 += scaling · B diag(d) A) so inference runs at base-model cost."""
        state = self._preference_state
        if state.merged_preference is not None:
            raise RuntimeError("the adapter is already merged; call unmerge() first.")
        if state.disabled:
            raise RuntimeError(
                "merge() inside disable_adapter() would change the base model it promises; leave it first."
            )
        preference = self._single_preference(preference, "merge")
        for _, layer in self.adapter_layers():
            layer.merge(preference)
        state.merged_preference = preference

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo `merge`: subtract the same update (exact up to the base dtype's round-off: ~1e-7 in fp32)."""
        state = self._preference_state
        if state.merged_preference is None:
            raise RuntimeError("the adapter is not merged; nothing to unmerge.")
        for _, layer in self.adapter_layers():
            layer.unmerge()
        state.merged_preference = None

    @torch.no_grad()
    def merge_and_unload(self, preference: PreferenceLike) -> nn.Module:
        """Merge λ into the base weights and return the plain base model with the Panacea layers removed."""
        self.merge(preference)
        return self._remove_layers()

    def unload(self) -> nn.Module:
        """Return the base model as it was, with the Panacea layers removed (unmerging first if merged)."""
        if self._preference_state.merged_preference is not None:
            self.unmerge()
        return self._remove_layers()

    def _remove_layers(self) -> nn.Module:
        for name, layer in list(self.adapter_layers()):
            parent_name, _, child_name = name.rpartition(".")
            setattr(self.base_model.get_submodule(parent_name), child_name, layer.base_layer)
        return self.base_model

    def orthogonality_penalty(self) -> torch.Tensor:
        """Σ over layers of ‖AAᵀ − I‖²_F + ‖BᵀB − I‖²_F (multiply by `orthogonality_weight` in the loss)."""
        return torch.stack([layer.orthogonality_penalty() for _, layer in self.adapter_layers()]).sum()

    def num_parameters(self, only_trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    def print_trainable_parameters(self) -> None:
        trainable, total = self.num_parameters(only_trainable=True), self.num_parameters()
        print(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}")

    # ----------------------------------------------------------------------------------------------
    # Saving, loading, exporting

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """{'<module>.lora_A' | '.lora_B' | '.singular_values' | '.preference_scale': tensor} for every layer."""
        return {
            f"{name}.{key}": parameter
            for name, layer in self.adapter_layers()
            for key, parameter in layer.named_parameters(recurse=False)
        }

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write `adapter_config.json` + `adapter_model.safetensors` atomically, with the base-model fingerprint."""
        save_adapter(directory, self.panacea_config, self.adapter_state_dict(), base_model_fingerprint(self.base_model))

    @classmethod
    def from_pretrained(
        cls, model: nn.Module, directory: str | os.PathLike, *, is_trainable: bool = False
    ) -> PanaceaModel:
        """Load a saved adapter onto `model` (the base model it was trained on); eval mode unless `is_trainable`."""
        config, state_dict, fingerprint = load_adapter(directory)
        check_fingerprint(fingerprint, model, directory)
        _check_weights_fit(model, config, state_dict, directory)  # before the model is touched
        panacea = cls(model, config, initialize=False)
        with torch.no_grad():
            for key, parameter in panacea.adapter_state_dict().items():
                parameter.copy_(state_dict[key])
        if not is_trainable:
            panacea.eval()
            panacea.requires_grad_(False)
        return panacea

    @torch.no_grad()
    def export_lora(self, preference: PreferenceLike, directory: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write a plain peft LoRA (rank k + m·r) that reproduces this model at the fixed preference λ.

        A `directory` that holds anything (another export, your files) is refused unless `overwrite`; a Panacea
        adapter or a training run always (check_export_target).

        lora_A = A, lora_B = scaling · B diag(d), lora_alpha = its rank k + m·r; load it with
        `peft.PeftModel.from_pretrained`.
        The folder also holds a README.md, and the safetensors metadata records λ ({name: weight} when the
        config names the dimensions) under 'panacea_preference'.
        """
        preference = self._single_preference(preference, "export_lora")
        config = self._peft_lora_config()
        save_peft_lora(directory, self._lora_weights(preference), config, self._exported(preference), overwrite)

    @torch.no_grad()
    def export_lora_grid(
        self, num_points: int, directory: str | os.PathLike, *, overwrite: bool = False
    ) -> dict[str, Any]:
        """Write one plain peft LoRA per point of the simplex lattice with `num_points` per edge, for servers that
        hold many LoRAs and pick one per request (vLLM, SGLang); return the index.

        Each point's LoRA is what `export_lora` writes for its λ, in a subfolder named by λ
        ('helpful-0.80_harmless-0.20', or '0.80-0.20' without preference names). `index.json` lists
        {preference, folder} per point, and `serialization.nearest_grid_adapter(index, λ)` names the LoRA to
        serve a request at λ with. Refused in a folder that holds anything unless `overwrite` (check_export_target).
        """
        return self._export_lora_set(num_points, directory, kind="grid", overwrite=overwrite)

    @torch.no_grad()
    def export_vertex_loras(self, directory: str | os.PathLike, *, overwrite: bool = False) -> dict[str, Any]:
        """Write the m vertex LoRAs, whose λ-weighted merge is this model at any λ on the simplex; return the index.

        ΔW(λ) = scaling · B diag(σ, s·λ ⊗ 1_r) A is affine in λ, not linear: σ does not scale with λ. On the
        simplex Σ_i λ_i = 1, so σ = Σ_i λ_i σ and ΔW(λ) = Σ_i λ_i ΔW(e_i): LoRA i is the export at the vertex
        λ = e_i (the σ block and block i; the other blocks' columns of lora_B are zero) and all share lora_A = A.
        Hence both
        - peft's `add_weighted_adapter(vertices, weights=λ, combination_type="cat")`: lora_A = [λ_1 A; …; λ_m A],
          lora_B = [B_1 … B_m], so ΔW = Σ_i λ_i B_i A, and
        - a merge that takes the λ-weighted sum of each tensor (LoRAX's `linear`): Σ_i λ_i A = A and
          Σ_i λ_i B_i = scaling · B diag(σ, s·λ ⊗ 1_r),
        give ΔW(λ) exactly (up to float round-off). peft's `combination_type="linear"` weights each factor by
        √λ_i, giving (Σ_i √λ_i)·(Σ_i √λ_i B_i) A: not this model. Subfolders are named as in `export_lora_grid`
        (the vertices are its 2-point grid).
        """
        return self._export_lora_set(2, directory, kind="vertices", overwrite=overwrite)  # the 2-point grid: e_1 … e_m

    def _export_lora_set(
        self, num_points: int, directory: str | os.PathLike, *, kind: str, overwrite: bool
    ) -> dict[str, Any]:
        """One LoRA per point of the simplex lattice with `num_points` per edge, written as a set (index, README)."""
        config = self._peft_lora_config()  # before anything is written: refuses a mix of Linear and Conv1D
        grid = simplex_grid(self.num_preferences, num_points)  # (points, m)
        loras = ((self._exported(preference), self._lora_weights(preference)) for preference in grid)
        return save_peft_lora_set(
            directory,
            loras,  # a generator: one LoRA's weights in memory at a time
            config,
            kind=kind,
            num_points=num_points,
            preference_names=self.panacea_config.preference_names,
            overwrite=overwrite,
        )

    def _lora_weights(self, preference: torch.Tensor) -> LoraWeights:
        """{module name: (lora_A = A, lora_B = scaling · B diag(d))}: the plain LoRA equal to this model at λ (m,)."""
        return {name: (layer.lora_A, layer.scaled_lora_B(preference)) for name, layer in self.adapter_layers()}

    def _peft_lora_config(self) -> LoraConfig:
        """The peft config of every export: rank k + m·r, lora_alpha = rank (scaling 1: it is in lora_B), the same
        modules, dropout and layout as this adapter."""
        layers = dict(self.adapter_layers())
        layouts = {layer.fan_in_fan_out for layer in layers.values()}
        if len(layouts) > 1:
            raise ValueError("cannot export one peft LoRA for a mix of nn.Linear and Conv1D layers.")
        rank = self.panacea_config.rank
        return LoraConfig(
            r=rank,
            lora_alpha=rank,
            lora_dropout=self.panacea_config.dropout,
            target_modules=_shortest_target_modules(self.base_model, list(layers)),
            fan_in_fan_out=layouts.pop(),
            bias="none",
            task_type="CAUSAL_LM",
            base_model_name_or_path=getattr(self.base_model.config, "name_or_path", None),
        )

    def _exported(self, preference: torch.Tensor) -> ExportedPreference:
        """λ (m,) as an export records it: {name: weight} when the config names the dimensions, else the weights."""
        return preference_as_json(preference, self.preference_names)

    def _single_preference(self, preference: PreferenceLike, operation: str) -> torch.Tensor:
        preference = self._as_tensor(preference)
        if preference.ndim != 1:
            raise ValueError(f"{operation} needs one preference of shape (m,), got shape {tuple(preference.shape)}.")
        return preference

    def _apply(self, fn, *args: Any, **kwargs: Any) -> PanaceaModel:
        """Move or cast the shared preference with the model (`.to()`, `.cuda()`, `.double()`), as a buffer would."""
        super()._apply(fn, *args, **kwargs)
        state = self._preference_state
        if state.preference is not None:  # follow the adapter (not `fn`: to_empty() would wipe the values)
            state.preference = self._placed(state.preference)
        return self

    def __getattr__(self, name: str) -> Any:
        """Fall back to the base model for attributes the wrapper does not define, as peft does."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":  # not initialised yet: avoid infinite recursion
                raise
            return getattr(self.base_model, name)


def _check_weights_fit(
    model: nn.Module, config: PanaceaConfig, state_dict: dict[str, torch.Tensor], where: str | os.PathLike
) -> None:
    """One clear error if the saved weights are not exactly those an adapter on `model` has."""
    expected = {
        f"{name}.{key}": shape
        for name in find_target_modules(model, config)
        for key, shape in PanaceaLinear.parameter_shapes(model.get_submodule(name), config).items()
    }
    missing, unexpected = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{where}: the adapter's weights do not fit this base model ({len(missing)} missing, e.g. "
            f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}). Load it onto the base model "
            "it was saved from."
        )
    for key, shape in expected.items():
        if tuple(state_dict[key].shape) != shape:
            raise ValueError(
                f"{where}: weight {key!r} has shape {tuple(state_dict[key].shape)}, the model expects {shape}; "
                "load it onto the base model it was saved from."
            )


def get_panacea_model(model: nn.Module, config: PanaceaConfig) -> PanaceaModel:
    """Inject a freshly initialised Panacea adapter into every module `config` targets; the base is frozen."""
    return PanaceaModel(model, config)


def _shortest_target_modules(model: nn.Module, names: list[str]) -> list[str]:
    """The layers' last name parts (e.g. ['q_proj', 'v_proj']) when they select exactly `names`, else the full names."""
    suffixes = sorted({name.rsplit(".", 1)[-1] for name in names})
    selected = [
        name
        for name, _ in model.named_modules()
        if name and any(name == suffix or name.endswith(f".{suffix}") for suffix in suffixes)
    ]
    return suffixes if sorted(selected) == sorted(names) else sorted(names)
