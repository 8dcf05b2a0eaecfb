"""The SVD-LoRA linear layer with the preference as extra singular values (docs/algorithms.md).

    y = W0 x + scaling · B (d ⊙ (A · dropout(x))),   d = concat(σ, s · λ)

The layer owns A, B, σ and s. It does not own λ: every layer of a model reads the same
`PreferenceState`, so switching the preference writes one tensor and touches no layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformers.pytorch_utils import Conv1D

from .config import PanaceaConfig

SUPPORTED_LAYERS = (nn.Linear, Conv1D)


class PreferenceState:
    """The preference shared by all Panacea layers of one model, and the model-wide adapter switches."""

    __slots__ = ("preference", "disabled", "merged_preference", "isolated_dimension")

    def __init__(self) -> None:
        self.preference: torch.Tensor | None = None  # (m,) or (batch, m)
        self.disabled = False  # True inside `disable_adapter()`: layers return W0 x only
        self.merged_preference: torch.Tensor | None = None  # λ folded into W0 by `merge`, else None
        # Inside `isolated_dimension(i)`: only dimension i's columns of A and B (and the shared σ, s and k columns)
        # take gradients from what is computed; the other dimensions' columns act, detached. None: all train.
        self.isolated_dimension: int | None = None

    @property
    def bypass(self) -> bool:
        """Whether layers skip the adapter path (adapter disabled, or already merged into W0)."""
        return self.disabled or self.merged_preference is not None

    def require_preference(self) -> torch.Tensor:
        if self.preference is None:
            raise RuntimeError(
                "No preference is set: call model.set_preference(λ), use `with model.preference(λ):`, "
                "or pass preference=λ to forward/generate."
            )
        return self.preference


class PanaceaLinear(nn.Module):
    """Wraps a frozen `nn.Linear` (or transformers `Conv1D`) with the Panacea SVD-LoRA update."""

    def __init__(
        self, base_layer: nn.Module, config: PanaceaConfig, state: PreferenceState, *, initialize: bool = True
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)  # Conv1D stores its weight as (in, out)
        shapes = self.parameter_shapes(base_layer, config)
        self.out_features, self.in_features = shapes["lora_B"][0], shapes["lora_A"][1]
        self.svd_rank, self.num_preferences = config.svd_rank, config.num_preferences
        self.preference_rank = config.preference_rank
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.preference_state = state
        self._merged_factors: tuple[torch.Tensor, torch.Tensor] | None = None  # (A, B·diag(d)) while merged

        factory = {"device": base_layer.weight.device, "dtype": _adapter_dtype(base_layer.weight.dtype)}
        self.lora_A = nn.Parameter(torch.empty(shapes["lora_A"], **factory))
        self.lora_B = nn.Parameter(torch.empty(shapes["lora_B"], **factory))
        self.singular_values = nn.Parameter(torch.empty(shapes["singular_values"], **factory))
        self.preference_scale = nn.Parameter(torch.empty(shapes["preference_scale"], **factory))
        if initialize:  # skipped when weights are about to be loaded (the 'svd' init costs an SVD per layer)
            self.reset_parameters(config)

    @staticmethod
    def parameter_shapes(base_layer: nn.Module, config: PanaceaConfig) -> dict[str, tuple[int, ...]]:
        """Shapes of A (k+m·r, in), B (out, k+m·r), σ (k,) and s () for an adapter on `base_layer`."""
        if not isinstance(base_layer, SUPPORTED_LAYERS):
            raise TypeError(
                f"Panacea adapts nn.Linear and transformers Conv1D layers, got {type(base_layer).__name__}; "
                "leave it out of target_modules."
            )
        out_features, in_features = _out_in_weight(base_layer).shape
        return {
            "lora_A": (config.rank, in_features),
            "lora_B": (out_features, config.rank),
            "singular_values": (config.svd_rank,),
            "preference_scale": (),
        }

    @torch.no_grad()
    def reset_parameters(self, config: PanaceaConfig) -> None:
        """Initialise A and B by `config.init`, and σ and s by `config.initial_diagonal()`."""
        if config.init == "lora":  # exactly peft's LoraLayer.reset_lora_parameters(init_lora_weights=True)
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)
        elif config.init == "gaussian":
            nn.init.normal_(self.lora_A, std=config.init_std)
            nn.init.normal_(self.lora_B, std=config.init_std)
        elif config.init == "orthogonal":
            nn.init.orthogonal_(self.lora_A)
            nn.init.orthogonal_(self.lora_B)
        elif config.init == "svd":
            rank = config.rank
            if rank > min(self.in_features, self.out_features):
                raise ValueError(
                    f"init='svd' needs k + m·r = {rank} <= min(in, out) = {min(self.in_features, self.out_features)}; "
                    "use a smaller svd_rank or init='orthogonal'."
                )
            left, _, right = torch.linalg.svd(
                _out_in_weight(self.base_layer).to(self.lora_A.dtype), full_matrices=False
            )
            self.lora_B.copy_(left[:, :rank])
            self.lora_A.copy_(right[:rank])
        else:
            raise ValueError(f"unknown init {config.init!r}")
        singular_value, preference_scale = config.initial_diagonal()
        self.singular_values.fill_(singular_value)
        self.preference_scale.fill_(preference_scale)

    def diagonal(self, preference: torch.Tensor) -> torch.Tensor:
        """scaling · [σ, s·λ]: shape (k+m·r,) for λ of shape (m,), (batch, k+m·r) for λ of shape (batch, m).

        With r = preference_rank > 1, every λ_i is repeated r times: dimension i scales columns k+i·r … k+i·r+r−1.
        """
        preference = preference.to(self.lora_A)
        if self.preference_rank > 1:
            preference = preference.repeat_interleave(self.preference_rank, dim=-1)
        singular_values = self.singular_values.expand(*preference.shape[:-1], self.svd_rank)
        return torch.cat([singular_values, self.preference_scale * preference], dim=-1) * self.scaling

    def scaled_lora_B(self, preference: torch.Tensor) -> torch.Tensor:
        """B·diag(d): (out, r) for λ of shape (m,), (batch, out, r) for λ of shape (batch, m).

        At a fixed λ this is the exported peft `lora_B`; forward, merge and export all use it, so they agree bit
        for bit.
        """
        return self.lora_B * self.diagonal_rows(preference)

    def diagonal_rows(self, preference: torch.Tensor) -> torch.Tensor:
        """d laid out to scale B's columns: (r,) for λ of shape (m,), (batch, 1, r) for λ of shape (batch, m)."""
        diagonal = self.diagonal(preference)
        return rearrange(diagonal, "batch r -> batch 1 r") if diagonal.ndim == 2 else diagonal

    def _factors(self, isolated: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B); with dimension `isolated`, every other dimension's rows of A and columns of B detached (same
        values, no gradient), so that a loss computed now trains only dimension `isolated`'s directions and the
        shared σ, s and k columns (`isolate_dimensions`, docs/algorithms.md)."""
        if isolated is None or not torch.is_grad_enabled():
            return self.lora_A, self.lora_B
        trains = torch.ones(self.lora_A.shape[0], dtype=torch.bool, device=self.lora_A.device)
        own = self.svd_rank + isolated * self.preference_rank
        trains[self.svd_rank :] = False
        trains[own : own + self.preference_rank] = True
        lora_a = torch.where(rearrange(trains, "r -> r 1"), self.lora_A, self.lora_A.detach())
        return lora_a, torch.where(trains, self.lora_B, self.lora_B.detach())

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """x: (batch, ..., in) -> (batch, ..., out)."""
        result = self.base_layer(x, *args, **kwargs)
        state = self.preference_state
        if state.bypass:
            return result
        lora_a, lora_b = self._factors(state.isolated_dimension)
        scaled_b = lora_b * self.diagonal_rows(state.require_preference())
        hidden = F.linear(self.dropout(x.to(lora_a.dtype)), lora_a)  # (batch, ..., r)
        if scaled_b.ndim == 2:  # one preference for the batch: exactly a peft LoRA with lora_B = B·diag(d)
            update = F.linear(hidden, scaled_b)
        else:  # one preference per sample
            if scaled_b.shape[0] != x.shape[0]:
                raise ValueError(
                    f"per-sample preference has {scaled_b.shape[0]} rows but the input batch has {x.shape[0]} "
                    "samples; pass one row per sample, or a single preference of shape (m,)."
                )
            update = torch.einsum("b...r,bor->b...o", hidden, scaled_b)
        # Add in the wider dtype and round once, as peft does: a bf16 base gets the same logits as the export.
        return (result + update).to(result.dtype)

    @torch.no_grad()
    def merge(self, preference: torch.Tensor) -> None:
        """W0 ← W0 + scaling · B diag(d) A for one preference of shape (m,)."""
        self._merged_factors = (self.lora_A.clone(), self.scaled_lora_B(preference))
        weight = self.base_layer.weight
        weight += self._delta(*self._merged_factors).to(weight.dtype)

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract exactly what `merge` added, even if A, B, σ or s changed since (float round-off remains)."""
        if self._merged_factors is None:
            raise RuntimeError("this layer is not merged; nothing to unmerge.")
        weight = self.base_layer.weight
        weight -= self._delta(*self._merged_factors).to(weight)
        self._merged_factors = None

    def _delta(self, lora_a: torch.Tensor, scaled_b: torch.Tensor) -> torch.Tensor:
        """B·diag(d)·A laid out like the base weight ((in, out) for Conv1D)."""
        delta = scaled_b @ lora_a
        return delta.T if self.fan_in_fan_out else delta

    def orthogonality_penalty(self) -> torch.Tensor:
        """‖AAᵀ − I‖²_F + ‖BᵀB − I‖²_F, the AdaLoRA regulariser (a scalar tensor)."""
        eye = torch.eye(self.lora_A.shape[0], device=self.lora_A.device, dtype=self.lora_A.dtype)
        return (self.lora_A @ self.lora_A.T - eye).square().sum() + (self.lora_B.T @ self.lora_B - eye).square().sum()

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, svd_rank={self.svd_rank}, "
            f"num_preferences={self.num_preferences}, preference_rank={self.preference_rank}, scaling={self.scaling:g}"
        )


def _adapter_dtype(base_dtype: torch.dtype) -> torch.dtype:
    """Adapter weights stay in float32 when the base is half precision, as peft does by default."""
    return torch.float32 if base_dtype in (torch.float16, torch.bfloat16) else base_dtype


def _out_in_weight(base_layer: nn.Module) -> torch.Tensor:
    """The base weight as (out, in), whatever the layer's storage layout (Conv1D keeps (in, out))."""
    weight = base_layer.weight
    return weight.T if isinstance(base_layer, Conv1D) else weight
