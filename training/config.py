"""`TrainConfig`: everything `panacea train` needs, read from YAML with `--set key=value` overrides."""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from panacea.adapters import PanaceaConfig

from panacea._config import load_config
from panacea.base_model import resolve_dtype
from panacea.data import PairSource, PromptSource
from panacea.preferences import validate_preference

from .aggregators import build_aggregator
from .objectives import OBJECTIVES
from .rl import KL_ESTIMATORS, PAMA_GRANULARITIES, TOKEN_AGGREGATIONS, check_reward_spec
from .scalarisation import SCALARIZERS

METHODS = ("panacea", "soups", "lora")
SOUPS_BUDGETS = ("split", "full")
SAMPLING = ("per_step", "per_sample", "groups", "fixed")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
DEVICES = ("cpu", "cuda", "auto")
MIXED_PRECISION = ("no", "bf16")  # fp16 needs loss scaling, which the trainer does not do
ADVANTAGE_COMBINERS = ("none", "pama", "pama_lambda")


@dataclass
class DimensionConfig:
    """One dimension of the trade-off: its name, objective and data (pairs), or its reward (objective 'rl')."""

    name: str = field(metadata={"help": "The dimension's name (e.g. 'helpful'); it names λ's weight and the logs."})
    train: list[PairSource] = field(
        default_factory=list,
        metadata={
            "help": "Training pairs, concatenated in order (required for 'dpo' and 'sft'). An 'rl' dimension trains "
            "on rollouts and does not read them; `panacea eval --scorers generations` fits its judge on the first "
            "file named here (as for any run), else on the first pair file of a reward_model reward."
        },
    )
    eval: list[PairSource] = field(
        default_factory=list, metadata={"help": "Held-out pairs scored after training (one table column per source)."}
    )
    objective: Literal["dpo", "sft", "rl"] = field(
        default="dpo",
        metadata={
            "help": "'dpo' (sigmoid), 'sft', or 'rl' (on-policy, against `reward`, on the prompts of the `rl` "
            "section; every dimension of a run or none)."
        },
    )
    beta: float = field(default=0.1, metadata={"help": "DPO β (TRL's default); also scales the implicit reward."})
    reward: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Objective 'rl' only: the reward source, {type: length | refusal | callable | classifier | "
            "reward_model, ...} (panacea.training.rl.build_reward; docs/algorithms.md §8), built at start-up."
        },
    )
    ideal: float | Literal["auto", "running_min"] = field(
        default="auto",
        metadata={
            "help": "Tchebycheff ideal point ẑ_i: a number, 'running_min' (lowest loss so far − ε), or 'auto' "
            "(0 for DPO, whose loss tends to 0; running_min for SFT and RL, ours). RL takes no number: its level is "
            "minus the normalised mean reward, whose scale moves with the running moments."
        },
    )

    def __post_init__(self) -> None:
        _require(
            isinstance(self.name, str) and self.name.strip() != "", "name", self.name, "a non-empty string", "Dimension"
        )
        _require(self.objective in OBJECTIVES, "objective", self.objective, f"one of {OBJECTIVES}", "Dimension")
        _require(_positive(self.beta), "beta", self.beta, "a positive number", "Dimension")
        _require(
            bool(self.train) or self.objective == "rl",
            "train",
            self.train,
            f"at least one PairSource for objective {self.objective!r} (only 'rl' dimensions train without pairs)",
            "Dimension",
        )
        _require(
            self.ideal in ("auto", "running_min") or (_finite(self.ideal) and self.objective != "rl"),
            "ideal",
            self.ideal,
            "'auto' or 'running_min' for objective 'rl'"
            if self.objective == "rl"
            else "'auto', 'running_min' or a number",
            "Dimension",
        )
        if self.objective != "rl":
            _require(
                self.reward is None,
                "reward",
                self.reward,
                f"None for objective {self.objective!r} (RL only)",
                "Dimension",
            )
            return
        _require(self.reward is not None, "reward", self.reward, "a reward source for objective 'rl'", "Dimension")
        check_reward_spec(self.reward, where=f"DimensionConfig.reward of {self.name!r}")

    @property
    def ideal_rule(self) -> float | str:
        if self.ideal == "auto":
            return 0.0 if self.objective == "dpo" else "running_min"
        return self.ideal


@dataclass
class RLConfig:
    """On-policy RL (every dimension's objective 'rl'): prompts, rollouts, KL, the PPO update (docs/algorithms.md §8).

    One step = one rollout batch: `prompts_per_step` prompts, each answered `rollouts_per_prompt` times at one λ,
    every answer scored by every dimension's reward, then `ppo_epochs` optimizer updates on that batch.
    """

    prompts: list[PromptSource] = field(  # "required" (docs/keys.py): an RL run refuses an empty list
        default_factory=list,
        metadata={
            "help": "Prompt sources, pooled and drawn in seeded epoch-wise shuffles: the distinct prompts of pair "
            "files (e.g. {path: data/helpful.jsonl.gz, split: fit}) or prompt files.",
            "required": True,
        },
    )
    prompts_per_step: int = field(default=8, metadata={"help": "Prompts per step (split into the step's λ-groups)."})
    rollouts_per_prompt: int = field(
        default=4,
        metadata={"help": "K responses per prompt, at the prompt's λ; K ≥ 2 (RLOO's baseline is the other K − 1)."},
    )
    max_new_tokens: int = field(default=128, metadata={"help": "The most tokens a response may have."})
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature in (0, 2]; log-probs are taken at it too (as TRL)."}
    )
    top_p: float = field(default=1.0, metadata={"help": "Nucleus mass in (0, 1]."})
    kl_coef: float = field(
        default=0.05,
        metadata={
            "help": "β of the KL penalty to the reference (adapter off), in reward standard deviations per nat (ours: "
            "applied after each dimension's reward normalisation)."
        },
    )
    kl_estimator: Literal["k1", "k3"] = field(
        default="k1",
        metadata={"help": "Per-token KL estimate in the reward: 'k1' (log ratio; exact gradient) or 'k3'."},
    )
    ppo_epochs: int = field(
        default=1,
        metadata={
            "help": "Optimizer updates per rollout batch (1: REINFORCE-RLOO; >1: PPO's clip acts). The learning-rate "
            "schedule counts max_steps × ppo_epochs updates."
        },
    )
    clip_epsilon: float = field(default=0.2, metadata={"help": "PPO's ε, in [0, 1)."})
    token_aggregation: Literal["sum", "mean"] = field(
        default="sum",
        metadata={
            "help": "Per response: 'sum' of the token terms / max_new_tokens (Dr. GRPO's constant; the REINFORCE "
            "estimator, no per-length bias) or their 'mean' (every response weighs the same)."
        },
    )
    advantage_combiner: Literal["none", "pama", "pama_lambda"] = field(
        default="none",
        metadata={
            "help": "'none': one PPO loss per dimension (LS, Tchebycheff or an aggregator combine them). 'pama': "
            "PAMA (He & Maghsudi 2025, from third-party notes; no λ); 'pama_lambda': PAMA on λ-scaled advantages "
            "(ours). Both need scalarization 'ls' and no aggregator."
        },
    )
    pama_granularity: Literal["token", "batch"] = field(
        default="token",
        metadata={
            "help": "PAMA's Theorem 1 per token, or once per λ-group of the step's rollout batch on its tokens' mean "
            "advantages (the port's reading)."
        },
    )

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "max_new_tokens", "ppo_epochs"):
            _require(_positive_int(getattr(self, name)), name, getattr(self, name), "a positive integer", "RL")
        _require(
            _positive_int(self.rollouts_per_prompt) and self.rollouts_per_prompt >= 2,
            "rollouts_per_prompt",
            self.rollouts_per_prompt,
            "an integer >= 2 (RLOO's baseline for a response is the mean of the prompt's other K − 1)",
            "RL",
        )
        _require(
            _finite(self.temperature) and 0 < self.temperature <= 2,
            "temperature",
            self.temperature,
            "a number in (0, 2] (greedy rollouts of a prompt are all alike, so every advantage would be 0)",
            "RL",
        )
        _require(_finite(self.top_p) and 0 < self.top_p <= 1, "top_p", self.top_p, "a number in (0, 1]", "RL")
        _require(_finite(self.kl_coef) and self.kl_coef >= 0, "kl_coef", self.kl_coef, "a number >= 0", "RL")
        _require(self.kl_estimator in KL_ESTIMATORS, "kl_estimator", self.kl_estimator, f"one of {KL_ESTIMATORS}", "RL")
        _require(
            _finite(self.clip_epsilon) and 0 <= self.clip_epsilon < 1,
            "clip_epsilon",
            self.clip_epsilon,
            "a number in [0, 1)",
            "RL",
        )
        _require(
            self.token_aggregation in TOKEN_AGGREGATIONS,
            "token_aggregation",
            self.token_aggregation,
            f"one of {TOKEN_AGGREGATIONS}",
            "RL",
        )
        _require(
            self.advantage_combiner in ADVANTAGE_COMBINERS,
            "advantage_combiner",
            self.advantage_combiner,
            f"one of {ADVANTAGE_COMBINERS}",
            "RL",
        )
        _require(
            self.pama_granularity in PAMA_GRANULARITIES,
            "pama_granularity",
            self.pama_granularity,
            f"one of {PAMA_GRANULARITIES}",
            "RL",
        )
        _require(
            self.pama_granularity == "token" or self.advantage_combiner != "none",
            "pama_granularity",
            self.pama_granularity,
            "left at 'token' when advantage_combiner is 'none' (only PAMA reads it)",
            "RL",
        )


@dataclass
class TrainConfig:
    """A training run: base model, adapter, dimensions and their data, preference sampling, optimisation."""

    # --- run ---
    output_dir: str = field(default="runs/panacea", metadata={"help": "Run folder: adapter/, checkpoints/, logs."})
    seed: int = field(default=0, metadata={"help": "Seeds the adapter init, data order, λ draws and dropout."})
    method: Literal["panacea", "soups", "lora"] = field(
        default="panacea",
        metadata={
            "help": "'panacea': one preference-conditioned adapter. 'soups': the rewarded-soups baseline (Ramé et al. "
            "2023), one plain peft LoRA per dimension trained on that dimension alone, mixed at λ when evaluated "
            "(`panacea.training.soups.train_soups`; docs/algorithms.md §7). 'lora': one plain peft LoRA of the "
            "adapter's rank, modules, alpha and dropout, trained at `fixed_preference` (a soups member)."
        },
    )
    soups_budget: Literal["split", "full"] = field(
        default="split",
        metadata={
            "help": "Method 'soups' only (ours). 'split': each of the m runs trains max_steps/m steps of "
            "m·batch_size pairs of its dimension, so the m runs together match the Panacea run's optimizer steps, "
            "pairs and tokens. 'full': each run trains max_steps steps of m·batch_size pairs (m× the budget)."
        },
    )
    # --- model ---
    model: str | None = field(
        default=None, metadata={"help": "HF id or local path; None = embedded SmolLM2-135M-Instruct."}
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "Base-model weights dtype: a floating torch dtype name ('float32', 'bfloat16', …)."},
    )
    device: str = field(
        default="auto",
        metadata={"help": "'cpu', 'cuda' or 'auto' (CUDA when available); one GPU of several: CUDA_VISIBLE_DEVICES."},
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = field(  # 'fp16' is typed only to be refused with its reason
        default="no",
        metadata={
            "help": "accelerate autocast: 'bf16' on CUDA; 'no' on CPU (bf16 matmul is slow). 'fp16' is refused: it "
            "needs loss scaling, which the trainer does not do."
        },
    )
    adapter: dict[str, Any] = field(
        default_factory=lambda: {"init": "lora", "svd_rank": 0, "preference_rank": 2},
        metadata={
            "help": "PanaceaConfig fields. num_preferences and preference_names come from `dimensions`. The "
            "default is the steering study's best (docs/steering.md): init 'lora', k = 0, 2 directions per λ_i."
        },
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Zero the base model's dropout, as TRL does, so that the policy starts at the reference."},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for activation memory."})
    # --- data ---
    dimensions: list[DimensionConfig] = field(  # "required" (docs/keys.py): __post_init__ refuses the empty default
        default_factory=list,
        metadata={"help": "The dimensions (at least one), in λ order: λ_i weights dimensions[i].", "required": True},
    )
    max_length: int = field(default=256, metadata={"help": "Prompt + response tokens; responses keep their start."})
    max_prompt_length: int = field(default=128, metadata={"help": "Prompt tokens; prompts keep their end."})
    rpo_alpha: float | None = field(
        default=None,
        metadata={
            "help": "Add α × the chosen response's mean token NLL to every DPO pair's loss (RPO, Pang et al. 2024; "
            "TRL's `rpo_alpha`, which the paper sets to 1): keeps the chosen answers likely as the margin grows. "
            "None: plain DPO."
        },
    )
    rl: RLConfig = field(
        default_factory=RLConfig,
        metadata={"help": "On-policy RL settings, read when every dimension's objective is 'rl' (RLConfig)."},
    )
    # --- preferences ---
    scalarization: Literal["ls", "tche"] = field(
        default="ls", metadata={"help": "'ls' (Σ λ_i L_i) or 'tche' (Tchebycheff, max_i λ_i (L_i − ẑ_i))."}
    )
    preference_sampling: Literal["per_step", "per_sample", "groups", "fixed"] = field(
        default="per_step",
        metadata={
            "help": "'per_step': one λ per step (Panacea); 'per_sample': one λ per pair (LS only, ours); "
            "'groups': `preference_groups` λs per step, each with a slice of every dimension's batch (ours); "
            "'fixed': always `fixed_preference` (a single-objective model at a vertex, for the range ratio)."
        },
    )
    fixed_preference: list[float] | dict[str, float] | None = field(
        default=None,
        metadata={
            "help": "λ of 'fixed' sampling, as a list in `dimensions` order or {name: weight}. Dimensions "
            "with weight 0 are neither forwarded nor given reference log-probs."
        },
    )
    preference_groups: int = field(default=1, metadata={"help": "G, the λ-groups per step ('groups' sampling)."})
    aggregator: str = field(
        default="none",
        metadata={
            "help": "Per-step gradient aggregation: 'none' (the scalarisation alone), 'mgda', 'pcgrad', 'cagrad', "
            "'clipped_cagrad', 'plc' or 'normalized' (docs/aggregators.md). Replaces the scalarisation; needs one λ "
            "per step or per λ-group."
        },
    )
    aggregator_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "The aggregator's settings, e.g. {c: 0.5} for CAGrad or {tau: 2} for PLC."},
    )
    dirichlet_alpha: float = field(default=1.0, metadata={"help": "λ ~ Dirichlet(α·1); 1 is uniform on the simplex."})
    isolate_dimensions: bool = field(
        default=False,
        metadata={
            "help": "Ours: each dimension's loss trains only that dimension's directions (its rows of A and columns "
            "of B), so they carry no other objective's pull; σ, s and the k shared columns still take every loss. "
            "False: Panacea's gradient of Σ λ_i L_i, under which dimension j's directions also move with weight "
            "λ_i λ_j on dimension i's loss (docs/algorithms.md §4). Panacea only; not with an aggregator or RL."
        },
    )
    tchebycheff_epsilon: float = field(default=1e-3, metadata={"help": "ε of the 'running_min' ideal point."})
    # --- optimisation ---
    max_steps: int = field(default=100, metadata={"help": "Optimizer steps."})
    batch_size: int = field(
        default=8, metadata={"help": "Pairs per dimension per optimizer step, all processes (RL: unused; see rl)."}
    )
    micro_batch_size: int = field(
        default=4,
        metadata={
            "help": "Pairs per dimension per forward on one process; the rest is accumulation (RL: rollouts per "
            "forward)."
        },
    )
    learning_rate: float = field(
        default=2e-3, metadata={"help": "AdamW learning rate (peak); 2e-3 constant is the steering study's best."}
    )
    diagonal_lr_ratio: float = field(
        default=10.0,
        metadata={
            "help": "σ and s (the adapter's singular values) learn at learning_rate × this ratio, as peft's LoRA+ "
            "`loraplus_lr_ratio` does for B. s is one scalar per layer that sets how far λ reaches (ours; 10 is "
            "the steering study's best, docs/steering.md)."
        },
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata={"help": "AdamW (β1, β2)."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW ε."})
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = field(
        default="constant_with_warmup",
        metadata={
            "help": "Learning-rate schedule (transformers.get_scheduler): constant, constant_with_warmup, linear or "
            "cosine, the last three after warmup_steps of linear warm-up; constant has none."
        },
    )
    warmup_steps: int = field(
        default=0, metadata={"help": "Linear warm-up steps (RL: rollout steps, each of rl.ppo_epochs updates)."}
    )
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Clip the update's norm; None: no clipping."})
    # --- output ---
    logging_steps: int = field(default=1, metadata={"help": "Log every N steps (log.jsonl, TensorBoard if present)."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps (and at the end)."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep the newest N checkpoints; None: all."})
    # --- evaluation after training ---
    eval_grid: int = field(default=11, metadata={"help": "Points per simplex edge of the λ grid (11: step 0.1)."})
    eval_batch_size: int = field(
        default=8,
        metadata={"help": "Pairs per forward when scoring held-out pairs, and in the reference log-prob pass."},
    )

    def __post_init__(self) -> None:
        names = [dimension.name for dimension in self.dimensions]
        _require(bool(names), "dimensions", names, "at least one dimension")
        _require(len(set(names)) == len(names), "dimensions", names, "unique dimension names")
        for name in ("max_steps", "batch_size", "micro_batch_size", "logging_steps", "save_steps"):
            _require(_positive_int(getattr(self, name)), name, getattr(self, name), "a positive integer")
        least = len(names) + 1  # a grid with an interior point, which `panacea eval` needs (m = 1: 2)
        _require(
            _positive_int(self.eval_grid) and self.eval_grid >= least,
            "eval_grid",
            self.eval_grid,
            f"an integer >= {least} for {len(names)} dimension(s) (points per edge; fewer leave no interior point)",
        )
        _require(_nonnegative_int(self.seed), "seed", self.seed, "an integer >= 0")
        _require(
            self.device in DEVICES or self.device == "cuda:0",  # cuda:0 is what 'cuda' trains on (runs saved it)
            "device",
            self.device,
            f"one of {DEVICES} (one GPU of several: CUDA_VISIBLE_DEVICES; several: `accelerate launch`)",
        )
        _require(
            _floating_dtype(self.dtype),
            "dtype",
            self.dtype,
            "the name (a string) of a floating torch dtype, such as 'float32' or 'bfloat16'",
        )
        _require(_positive_int(self.eval_batch_size), "eval_batch_size", self.eval_batch_size, "a positive integer")
        _require(_positive_int(self.preference_groups), "preference_groups", self.preference_groups, "an integer >= 1")
        _require(
            self.save_total_limit is None or _positive_int(self.save_total_limit),
            "save_total_limit",
            self.save_total_limit,
            "None or a positive integer",
        )
        _require(_nonnegative_int(self.warmup_steps), "warmup_steps", self.warmup_steps, "an integer >= 0")
        _require(
            _positive_int(self.max_prompt_length) and _positive_int(self.max_length),
            "max_length",
            (self.max_prompt_length, self.max_length),
            "positive integers with max_prompt_length < max_length",
        )
        _require(self.max_prompt_length < self.max_length, "max_prompt_length", self.max_prompt_length, "< max_length")
        _require(
            self.scalarization in SCALARIZERS, "scalarization", self.scalarization, f"one of {sorted(SCALARIZERS)}"
        )
        _require(self.preference_sampling in SAMPLING, "preference_sampling", self.preference_sampling, str(SAMPLING))
        _require(
            self.mixed_precision in MIXED_PRECISION,
            "mixed_precision",
            self.mixed_precision,
            "'no' or 'bf16' (fp16 gradients underflow without loss scaling, which the trainer does not do; use 'bf16' "
            "on CUDA)",
        )
        _require(self.lr_scheduler in SCHEDULERS, "lr_scheduler", self.lr_scheduler, str(SCHEDULERS))
        _require(
            self.lr_scheduler != "constant" or self.warmup_steps == 0,
            "warmup_steps",
            self.warmup_steps,
            "0 with lr_scheduler 'constant', which has no warm-up (transformers ignores it); use "
            "'constant_with_warmup'",
        )
        _require(_positive(self.learning_rate), "learning_rate", self.learning_rate, "a positive number")
        _require(_positive(self.diagonal_lr_ratio), "diagonal_lr_ratio", self.diagonal_lr_ratio, "a positive number")
        _require(_finite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        _require(
            isinstance(self.adam_betas, list)
            and len(self.adam_betas) == 2
            and all(0 <= b < 1 for b in self.adam_betas),
            "adam_betas",
            self.adam_betas,
            "two numbers in [0, 1)",
        )
        _require(_positive(self.adam_epsilon), "adam_epsilon", self.adam_epsilon, "a positive number")
        _require(
            self.max_grad_norm is None or _positive(self.max_grad_norm),
            "max_grad_norm",
            self.max_grad_norm,
            "None or a positive number",
        )
        _require(
            self.rpo_alpha is None or (_finite(self.rpo_alpha) and self.rpo_alpha >= 0),
            "rpo_alpha",
            self.rpo_alpha,
            "None or a number >= 0",
        )
        _require(_positive(self.dirichlet_alpha), "dirichlet_alpha", self.dirichlet_alpha, "a positive number")
        _require(_positive(self.tchebycheff_epsilon), "tchebycheff_epsilon", self.tchebycheff_epsilon, "> 0")
        if not self.is_rl:  # pair batches; RL's rollout batches are checked in _check_rl
            _require(
                self.batch_size % self.micro_batch_size == 0,
                "batch_size",
                self.batch_size,
                f"a multiple of micro_batch_size ({self.micro_batch_size})",
            )
            _require(
                self.batch_size % self.num_groups == 0
                and (self.batch_size // self.num_groups) % self.micro_batch_size == 0,
                "preference_groups",
                self.preference_groups,
                f"a divisor of batch_size ({self.batch_size}) whose groups hold whole micro-batches of "
                f"{self.micro_batch_size} pairs (each forward carries one group's λ)",
            )
        if self.scalarization == "tche" and self.preference_sampling == "per_sample":
            raise ValueError(
                "TrainConfig: Tchebycheff is not defined per sample (a sample has only its own dimension's loss); "
                "use preference_sampling 'per_step' (Panacea) or 'groups' with preference_groups > 1."
            )
        if self.aggregator != "none":
            if self.scalarization != "ls":
                raise ValueError(
                    f"TrainConfig: aggregator {self.aggregator!r} replaces the scalarisation, so it cannot be "
                    f"combined with scalarization {self.scalarization!r}; leave scalarization 'ls'."
                )
            if self.preference_sampling not in ("per_step", "groups"):
                why = {
                    "per_sample": "per-sample λ gives every pair its own",
                    "fixed": "'fixed' sampling leaves zero-weight dimensions without a gradient",
                }[self.preference_sampling]
                raise ValueError(
                    f"TrainConfig: aggregator {self.aggregator!r} combines one gradient per dimension under one λ, "
                    f"but {why}; use preference_sampling 'per_step' or 'groups'."
                )
            try:
                build_aggregator(self.aggregator, self.aggregator_kwargs, self.seed)
            except ValueError as error:
                raise ValueError(f"TrainConfig.aggregator: {error}") from None
        elif self.aggregator_kwargs:
            raise ValueError(
                f"TrainConfig.aggregator_kwargs is {self.aggregator_kwargs!r}, but aggregator is 'none'; "
                "choose an aggregator or drop the kwargs."
            )
        if self.preference_sampling != "groups" and self.preference_groups != 1:
            raise ValueError(
                f"TrainConfig.preference_groups is {self.preference_groups}, but only 'groups' sampling uses it; "
                "set preference_sampling: groups, or preference_groups: 1."
            )
        if (self.preference_sampling == "fixed") != (self.fixed_preference is not None):
            raise ValueError(
                "TrainConfig: preference_sampling 'fixed' and fixed_preference go together; got "
                f"preference_sampling {self.preference_sampling!r} with fixed_preference {self.fixed_preference!r}."
            )
        if self.fixed_preference is not None:
            try:
                fixed = validate_preference(self.fixed_preference, len(names), names)
            except ValueError as error:
                raise ValueError(f"TrainConfig.fixed_preference: {error}") from None
            if fixed.ndim != 1:
                raise ValueError(f"TrainConfig.fixed_preference must be one λ, got shape {tuple(fixed.shape)}.")
            self.fixed_preference = fixed.tolist()
        self._check_method()
        self._check_rl()
        adapter = self.adapter_config()  # refuse a bad adapter section now, before any model or data loads
        if self.method != "panacea" and adapter.orthogonality_weight > 0:
            raise ValueError(
                f"TrainConfig.adapter.orthogonality_weight regularises a Panacea adapter's A and B, but method "
                f"{self.method!r} trains plain peft LoRAs, which it does not regularise; set it to 0."
            )

    def _check_method(self) -> None:
        """Method 'soups' needs max_steps divisible by m under the split budget; 'lora' needs a fixed λ."""
        _require(self.method in METHODS, "method", self.method, f"one of {METHODS}")
        _require(self.soups_budget in SOUPS_BUDGETS, "soups_budget", self.soups_budget, f"one of {SOUPS_BUDGETS}")
        m = len(self.dimensions)
        if self.method != "soups" and self.soups_budget != "split":
            raise ValueError(
                f"TrainConfig.soups_budget is {self.soups_budget!r}, but only method 'soups' uses it; "
                "set method: soups, or drop soups_budget."
            )
        if self.method == "soups" and self.soups_budget == "split" and self.max_steps % m:
            raise ValueError(
                f"TrainConfig.max_steps must be a multiple of the number of dimensions ({m}) for method 'soups' with "
                f"soups_budget 'split' (each of the {m} runs trains max_steps/{m} steps), got {self.max_steps}."
            )
        if self.method != "panacea" and self.isolate_dimensions:
            raise ValueError(
                f"TrainConfig.isolate_dimensions splits a Panacea adapter's directions by dimension; method "
                f"{self.method!r} trains plain peft LoRAs, one per objective at most, which have none to split. "
                "Set it to false."
            )
        if self.isolate_dimensions and self.aggregator != "none":
            raise ValueError(
                f"TrainConfig.isolate_dimensions cannot be combined with aggregator {self.aggregator!r}: the "
                "aggregators weigh each dimension's gradient ∇L_i, and under isolation a dimension's buffer holds "
                "only its own directions' share of it. Use aggregator 'none' (LS or Tchebycheff), or isolation off."
            )
        if self.method == "lora" and self.preference_sampling != "fixed":
            raise ValueError(
                f"TrainConfig.method 'lora' trains one plain LoRA, which has no λ input, so it needs "
                f"preference_sampling 'fixed' with fixed_preference (e.g. a vertex); got {self.preference_sampling!r}."
            )

    def _check_rl(self) -> None:
        """All dimensions RL or none; the rl section's prompts and groups; PAMA only alone with LS."""
        rl_names = [dimension.name for dimension in self.dimensions if dimension.objective == "rl"]
        if not rl_names:
            if self.rl != RLConfig():
                raise ValueError(
                    "TrainConfig.rl is set, but no dimension has objective 'rl'; drop the rl section, or give every "
                    "dimension objective 'rl' and a reward."
                )
            return
        others = [dimension.name for dimension in self.dimensions if dimension.objective != "rl"]
        if others:
            raise ValueError(
                f"TrainConfig: dimensions {rl_names} have objective 'rl' and {others} do not; a run is all RL or none. "
                "The trainer draws pair batches and rollout batches on different schedules, so one step's λ draw "
                "does not cover both: mixing them is not implemented. Give every dimension objective 'rl' and a reward "
                "(e.g. a reward model fitted on its pairs), or train them in separate runs."
            )
        rl, groups = self.rl, self.num_groups
        _require(bool(rl.prompts), "rl.prompts", rl.prompts, "at least one PromptSource (the prompts rollouts answer)")
        _require(self.rpo_alpha is None, "rpo_alpha", self.rpo_alpha, "None for RL (RPO adds to DPO pair losses)")
        _require(
            not self.isolate_dimensions,
            "isolate_dimensions",
            self.isolate_dimensions,
            "false for RL (one rollout's forward pass serves every dimension's loss, so its directions cannot be "
            "split by loss without a forward pass per dimension)",
        )
        _require(
            rl.prompts_per_step % groups == 0,
            "rl.prompts_per_step",
            rl.prompts_per_step,
            f"a multiple of the λ-groups ({groups}): each group answers whole prompts",
        )
        group_rows = rl.prompts_per_step // groups * rl.rollouts_per_prompt
        _require(
            group_rows % self.micro_batch_size == 0,
            "micro_batch_size",
            self.micro_batch_size,
            f"a divisor of the rollouts of a λ-group (prompts_per_step / groups × rollouts_per_prompt = {group_rows}): "
            "each forward carries one group's rows",
        )
        if rl.advantage_combiner != "none" and (self.scalarization != "ls" or self.aggregator != "none"):
            raise ValueError(
                f"TrainConfig.rl.advantage_combiner {rl.advantage_combiner!r} replaces the per-dimension losses with "
                "one loss on a combined advantage, so there are no per-dimension losses for Tchebycheff or an "
                f"aggregator to weigh (got scalarization {self.scalarization!r}, aggregator {self.aggregator!r}); "
                "use scalarization 'ls' and aggregator 'none'."
            )
        if self.aggregator_kwargs.get("normalization") in ("loss", "loss+"):  # MGDA's normalisers (and their users)
            raise ValueError(
                f"TrainConfig.aggregator_kwargs.normalization {self.aggregator_kwargs['normalization']!r} divides by "
                "the losses, but RL's per-dimension losses are PPO surrogates of centred advantages (near 0, either "
                "sign); use 'none' or 'l2'."
            )

    @property
    def is_rl(self) -> bool:
        """Whether the run trains on rollouts (every dimension's objective is 'rl')."""
        return all(dimension.objective == "rl" for dimension in self.dimensions)

    @property
    def dimension_names(self) -> list[str]:
        return [dimension.name for dimension in self.dimensions]

    @property
    def trained_dimensions(self) -> list[bool]:
        """Which dimensions are forwarded: all, except those with weight 0 under 'fixed' sampling."""
        if self.fixed_preference is None:
            return [True] * len(self.dimensions)
        return [weight > 0 for weight in self.fixed_preference]

    @property
    def num_groups(self) -> int:
        """G, the number of λ-groups a step's batch is split into (1 unless 'groups' sampling)."""
        return self.preference_groups if self.preference_sampling == "groups" else 1

    def adapter_config(self) -> PanaceaConfig:
        """The PanaceaConfig, with num_preferences and preference_names taken from `dimensions`."""
        names = self.dimension_names
        given = dict(self.adapter)
        for key, value in (("num_preferences", len(names)), ("preference_names", names)):
            if key in given and given[key] != value:
                raise ValueError(
                    f"TrainConfig.adapter.{key} is {given[key]!r} but the dimensions give {value!r}; "
                    f"drop {key} from the adapter section (it follows `dimensions`)."
                )
            given[key] = value
        return PanaceaConfig.from_dict(given, where="TrainConfig.adapter")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: Sequence[str] = ()) -> TrainConfig:
        """Read a YAML config and apply `--set key=value` overrides; one clear error for anything wrong."""
        return load_config(cls, path, overrides)


def with_absolute_data_paths(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config`, a TrainConfig as a dict, whose data sources name local files and folders by absolute path.

    A run's config.yaml records these, so `panacea eval RUN` and `--resume` work from any directory. Covered: pair
    sources, RL prompt sources, and reward specs' local paths (`path`, `name_or_path`, and their `train` / `test`
    pair sources). A relative path is read from the current directory, as `PairSource` does; one that names
    nothing here (a hub id) stays as given.
    """
    result = copy.deepcopy(config)
    for source, key in data_path_slots(result):
        if (local := Path(source[key]).expanduser()).exists():
            source[key] = str(local.resolve())
    return result


def data_path_slots(config: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """Where `config`, a TrainConfig as a dict, names data by path or id, in order: (source, key) for each string
    `path` / `name_or_path` of its RL prompt sources, each dimension's train and eval pair sources, and its reward
    spec with that spec's `train` / `test` pair sources."""
    sources = list((config.get("rl") or {}).get("prompts") or [])
    for dimension in config.get("dimensions") or []:
        if not isinstance(dimension, dict):
            continue
        sources += [*(dimension.get("train") or []), *(dimension.get("eval") or [])]
        reward = dimension.get("reward")
        if isinstance(reward, dict):
            sources.append(reward)
            sources += [item for key in ("train", "test") for item in reward.get(key) or [] if isinstance(item, dict)]
    return [
        (source, key)
        for source in sources
        if isinstance(source, dict)
        for key in ("path", "name_or_path")
        if isinstance(source.get(key), str)
    ]


def follow_moved_data(saved: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a run's saved config (a dict, absolute data paths) whose data paths are `config`'s where the data
    moved as one tree: every path that differs is absolute in both, no longer exists where it was, and differs only in
    a leading folder, the same one for all, below which at least a folder and the file name stay the same (the
    checkout `/old/project` moved to `/new/place`: `/old/project/data/a.jsonl` is now `/new/place/data/a.jsonl`); and
    no path that stayed lies in the folder the others left. Anything else — a copy whose original is still there, one
    file of several moved, another file or folder name, a relative or hub path — is left as saved, to count as a
    changed config. The moved training files' contents are then data.json's to check (`trainer.data_changes`)."""
    result = copy.deepcopy(saved)
    before, now = data_path_slots(result), data_path_slots(config)
    if [key for _, key in before] != [key for _, key in now]:
        return result
    pairs = [(source, key, now_source[key]) for (source, key), (now_source, _) in zip(before, now, strict=True)]
    moved = [(source, key, path) for source, key, path in pairs if source[key] != path]
    roots = {_moved_root(Path(source[key]), Path(path)) for source, key, path in moved}
    if len(roots) != 1 or None in roots:
        return result
    left = Path(os.path.commonpath([str(Path(source[key]).parent) for source, key, _ in moved]))  # where it was
    if any(Path(source[key]).is_relative_to(left) for source, key, path in pairs if source[key] == path):
        return result  # a file that stayed where the others left: not a tree that moved
    for source, key, path in moved:
        source[key] = path
    return result


def moved_tree_paths(saved: dict[str, Any], run_folder: Path) -> dict[str, Any] | None:
    """Where a run's data lies now if the run moved with it as one tree (a checkout `/old/project` holding runs and
    data renamed `/new/place`), judged by paths alone: a copy of `saved` (a TrainConfig as a dict) whose data paths,
    absolute and gone, are found again below one folder that holds `run_folder` (`/new/place`), each with the same
    trailing folder and file name, by `follow_moved_data`'s rules (one leading folder replaced for all; none of them
    still where it was). None when no such folder is found or nothing is gone. Paths alone do not say it is the same
    data: `trainer.follow_moved_run` checks the training files' contents too."""
    slots = data_path_slots(saved)
    gone = [
        Path(source[key]) for source, key in slots if Path(source[key]).is_absolute() and not Path(source[key]).exists()
    ]
    if not gone:
        return None
    first = gone[0].parts
    for folder in run_folder.resolve().parents:  # the nearest first
        for kept in range(len(first) - 1, 1, -1):  # the longest tail first; at least a folder and the file name
            if not (folder / Path(*first[-kept:])).exists():
                continue
            old = Path(*first[:-kept])
            candidate = copy.deepcopy(saved)
            for source, key in data_path_slots(candidate):
                if (path := Path(source[key])).is_absolute() and path.is_relative_to(old):
                    source[key] = str(folder / path.relative_to(old))
            moved = [
                Path(now[key])
                for (now, key), (before, _) in zip(data_path_slots(candidate), slots, strict=True)
                if now[key] != before[key]
            ]
            if follow_moved_data(saved, candidate) == candidate and all(path.exists() for path in moved):
                return candidate
    return None


def _moved_root(before: Path, now: Path) -> tuple[Path, Path] | None:
    """(old folder, new folder) when absolute `before`, gone, is `now` with only its leading folder replaced and at
    least the last folder and the file name kept; else None."""
    if not (before.is_absolute() and now.is_absolute()) or before.exists():
        return None
    tail = 0
    while tail < min(len(before.parts), len(now.parts)) - 1 and before.parts[-1 - tail] == now.parts[-1 - tail]:
        tail += 1
    if tail < 2:  # another file name, or another folder right above it (data/v1/x → data/v2/x)
        return None
    return Path(*before.parts[: len(before.parts) - tail]), Path(*now.parts[: len(now.parts) - tail])


def _require(ok: bool, name: str, value: Any, expected: str, owner: str = "Train") -> None:
    if not ok:
        raise ValueError(f"{owner}Config.{name} must be {expected}, got {value!r}.")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < float("inf")


def _positive(value: Any) -> bool:
    return _finite(value) and value > 0


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _floating_dtype(value: Any) -> bool:
    try:
        resolve_dtype(value)
    except ValueError:
        return False
    return isinstance(value, str)


def _nonnegative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
