"""`PanaceaConfig`: the hyper-parameters of the preference-conditioned SVD-LoRA adapter."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from panacea._config import dataclass_from_dict

InitScheme = Literal["gaussian", "orthogonal", "svd", "lora"]
INIT_SCHEMES: tuple[str, ...] = get_args(InitScheme)  # the one list of names; help and errors derive from it


@dataclass
class PanaceaConfig:
    """Configuration of a Panacea adapter (docs/algorithms.md, "The SVD-LoRA adapter").

    Every targeted linear layer W0 gets `W0 + scaling · B diag([σ, s·λ]) A` with A: (k+m, in),
    B: (out, k+m), σ: (k,) and one scalar s per layer. With `preference_rank` r > 1 each λ_i scales
    r directions (ours): d = [σ, s·λ_1 (r times), …, s·λ_m (r times)] and the rank is k + m·r.
    """

    svd_rank: int = field(default=8, metadata={"help": "k, the number of free learned singular values."})
    num_preferences: int = field(default=2, metadata={"help": "m, the number of objectives (length of λ)."})
    preference_rank: int = field(
        default=1,
        metadata={
            "help": "r, the singular directions each preference weight scales in every layer: 1 in Panacea; "
            "r > 1 (ours) gives each dimension a rank-r subspace of its own. The adapter's rank is k + m·r."
        },
    )
    preference_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "One name per dimension of λ, in order, e.g. ['helpful', 'harmless']; then a preference can "
            "also be given by name, {'helpful': 0.8, 'harmless': 0.2}. None: vectors only."
        },
    )
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
        default=None, metadata={"help": "scaling = alpha / rank (rank = k + m·r); None means alpha = rank (scaling 1)."}
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input, as peft's lora_dropout."})
    init: InitScheme = field(
        default="gaussian",
        metadata={
            "help": "How A and B start: 'gaussian' N(0, init_std²) (docs/algorithms.md); 'orthogonal' random "
            "orthonormal rows of A and columns of B; 'svd' the top k+m·r singular vectors of W0; 'lora' A "
            "Kaiming-uniform exactly as peft's lora_A, B = 0, σ = s = 1 (trains at once, as a peft LoRA). "
            "With their default σ and s, all start exactly at the base model."
        },
    )
    init_std: float = field(default=0.02, metadata={"help": "Standard deviation of the 'gaussian' init."})
    init_singular_value: float | None = field(
        default=None,
        metadata={
            "help": "Initial σ_1 … σ_k in every layer. None: the init scheme's default. 1 for 'lora': B = 0 makes "
            "ΔW = B diag(d) A zero, yet ∂L/∂B ≠ 0 because A and d are non-zero. 0 for the others, whose B ≠ 0: "
            "d = 0 makes ΔW zero, but then ΔW is a product of three small factors and barely moves at first."
        },
    )
    init_preference_scale: float | None = field(
        default=None,
        metadata={
            "help": "Initial s in every layer. None: the init scheme's default, 1 for 'lora' and 0 for the "
            "others (see init_singular_value for why)."
        },
    )
    orthogonality_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight w of AdaLoRA's regulariser: the trainer adds w × Σ_layers ‖AAᵀ − I‖² + ‖BᵀB − I‖² to the "
            "loss once per step (0 disables it)."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, (tuple, set)):
            self.target_modules = sorted(self.target_modules)
        if isinstance(self.exclude_modules, (tuple, set)):
            self.exclude_modules = sorted(self.exclude_modules)
        if isinstance(self.preference_names, tuple):
            self.preference_names = list(self.preference_names)
        _require(_is_int(self.svd_rank) and self.svd_rank >= 0, "svd_rank", self.svd_rank, "an integer >= 0")
        _require(
            _is_int(self.preference_rank) and self.preference_rank >= 1,
            "preference_rank",
            self.preference_rank,
            "an integer >= 1",
        )
        _require(
            _is_int(self.num_preferences) and self.num_preferences >= 1,
            "num_preferences",
            self.num_preferences,
            "an integer >= 1 (one per objective)",
        )
        self._check_preference_names()
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
        for name in ("init_singular_value", "init_preference_scale"):
            value = getattr(self, name)
            _require(
                value is None or _is_number(value), name, value, "None (the init scheme's default) or a finite number"
            )
        singular_value, preference_scale = self.initial_diagonal()
        if self.init == "lora" and preference_scale == 0 and (singular_value == 0 or self.svd_rank == 0):
            # B = 0 and d = 0: every adapter gradient is zero at step 0, and so at every step after.
            raise ValueError(
                "PanaceaConfig: init='lora' starts from B = 0, so it needs a non-zero init_singular_value (with "
                "svd_rank > 0) or init_preference_scale, or nothing ever trains; got init_singular_value="
                f"{self.init_singular_value!r}, init_preference_scale={self.init_preference_scale!r}, "
                f"svd_rank={self.svd_rank}. Leave them None for the defaults σ = s = 1."
            )
        _require(
            _is_number(self.orthogonality_weight) and self.orthogonality_weight >= 0,
            "orthogonality_weight",
            self.orthogonality_weight,
            "a number >= 0",
        )

    def _check_preference_names(self) -> None:
        names = self.preference_names
        if names is None:
            return
        expected = f"None or a list of {self.num_preferences} distinct names, one per dimension of λ"
        _require(isinstance(names, list) and len(names) == self.num_preferences, "preference_names", names, expected)
        for name in names:
            # ',' and '=' would make `--preference helpful=0.8,harmless=0.2` ambiguous on the command line.
            _require(
                isinstance(name, str) and name == name.strip() and name and not set(name) & {",", "="},
                "preference_names",
                names,
                f"{expected}: non-empty strings without ',', '=' or surrounding spaces (bad: {name!r})",
            )
        duplicates = sorted({name for name in names if names.count(name) > 1})
        _require(not duplicates, "preference_names", names, f"{expected} (repeated: {duplicates})")

    def initial_diagonal(self) -> tuple[float, float]:
        """(σ, s) at initialisation: init_singular_value and init_preference_scale, else the scheme's defaults.

        'lora' starts from B = 0, so ΔW = 0 whatever d is, and a non-zero d is what gives B a gradient at step 0
        (∂L/∂B ∝ d ⊙ A x): default 1. The other schemes have B ≠ 0 and need d = 0 to start at the base model.
        """
        default = 1.0 if self.init == "lora" else 0.0
        return (
            default if self.init_singular_value is None else float(self.init_singular_value),
            default if self.init_preference_scale is None else float(self.init_preference_scale),
        )

    @property
    def rank(self) -> int:
        """k + m·r, the rank of the adapter (and of an exported LoRA)."""
        return self.svd_rank + self.num_preferences * self.preference_rank

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
