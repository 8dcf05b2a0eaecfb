"""`PanaceaConfig`: the hyper-parameters of the preference-conditioned SVD-LoRA adapter."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from panacea._config import dataclass_from_dict

INIT_SCHEMES = ("gaussian", "orthogonal", "svd")


@dataclass
class PanaceaConfig:
    """Configuration of a Panacea adapter (ALGORITHMS.md, "SVD-LoRA with the preference as singular values").

    Every targeted linear layer W0 gets `W0 + scaling · B diag([σ, s·λ]) A` with A: (k+m, in),
    B: (out, k+m), σ: (k,) and one scalar s per layer.
    """

    svd_rank: int = field(default=8, metadata={"help": "k, the number of free learned singular values."})
    num_preferences: int = field(default=2, metadata={"help": "m, the number of objectives (length of λ)."})
    target_modules: str | list[str] = field(
        default="all-linear",
        metadata={
            "help": "Modules to adapt, matched as in peft: 'all-linear' (every nn.Linear/Conv1D except the "
            "output head), a list of name suffixes such as ['q_proj', 'v_proj'], or a regex on full names."
        },
    )
    exclude_modules: str | list[str] | None = field(
        default=None, metadata={"help": "Modules never adapted: a list of name suffixes or a regex, as in peft."}
    )
    alpha: float | None = field(
        default=None, metadata={"help": "scaling = alpha / (k + m); None means alpha = k + m (scaling 1)."}
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input, as peft's lora_dropout."})
    init: Literal["gaussian", "orthogonal", "svd"] = field(
        default="gaussian",
        metadata={
            "help": "How A and B start: 'gaussian' N(0, init_std²); 'orthogonal' random orthonormal rows of A "
            "and columns of B; 'svd' the top k+m singular vectors of W0."
        },
    )
    init_std: float = field(default=0.02, metadata={"help": "Standard deviation of the 'gaussian' init."})
    init_preference_scale: float = field(
        default=0.0,
        metadata={"help": "Initial s in every layer; with σ = 0 and s = 0 the model starts at the base model."},
    )
    orthogonality_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of the AdaLoRA regulariser ‖AAᵀ − I‖² + ‖BᵀB − I‖² (0 disables it)."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, (tuple, set)):
            self.target_modules = sorted(self.target_modules)
        if isinstance(self.exclude_modules, (tuple, set)):
            self.exclude_modules = sorted(self.exclude_modules)
        _require(_is_int(self.svd_rank) and self.svd_rank >= 0, "svd_rank", self.svd_rank, "an integer >= 0")
        _require(
            _is_int(self.num_preferences) and self.num_preferences >= 1,
            "num_preferences",
            self.num_preferences,
            "an integer >= 1 (one per objective)",
        )
        _require(
            _is_module_spec(self.target_modules),
            "target_modules",
            self.target_modules,
            "'all-linear', a regex string or a non-empty list of module names",
        )
        _require(
            self.exclude_modules is None or _is_module_spec(self.exclude_modules),
            "exclude_modules",
            self.exclude_modules,
            "None, a regex string or a list of module names",
        )
        _require(
            self.alpha is None or (_is_number(self.alpha) and self.alpha > 0),
            "alpha",
            self.alpha,
            "None or a positive number",
        )
        _require(_is_number(self.dropout) and 0 <= self.dropout < 1, "dropout", self.dropout, "a number in [0, 1)")
        _require(self.init in INIT_SCHEMES, "init", self.init, f"one of {INIT_SCHEMES}")
        _require(_is_number(self.init_std) and self.init_std > 0, "init_std", self.init_std, "a positive number")
        _require(
            _is_number(self.init_preference_scale),
            "init_preference_scale",
            self.init_preference_scale,
            "a finite number",
        )
        _require(
            _is_number(self.orthogonality_weight) and self.orthogonality_weight >= 0,
            "orthogonality_weight",
            self.orthogonality_weight,
            "a number >= 0",
        )

    @property
    def rank(self) -> int:
        """k + m, the rank of the adapter (and of an exported LoRA)."""
        return self.svd_rank + self.num_preferences

    @property
    def scaling(self) -> float:
        return (self.rank if self.alpha is None else self.alpha) / self.rank

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "PanaceaConfig") -> PanaceaConfig:
        """Build a config from a mapping; unknown keys and bad values raise one `ValueError` naming `where`."""
        return dataclass_from_dict(cls, data, where)


def _require(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"PanaceaConfig.{name} must be {expected}, got {value!r}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == value
        and abs(value) != float("inf")
    )


def _is_module_spec(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    return isinstance(value, list) and bool(value) and all(isinstance(name, str) and name for name in value)
