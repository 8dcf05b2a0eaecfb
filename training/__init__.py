"""Training: DPO/SFT/RL objectives, LS/Tchebycheff scalarisation, the aggregators, and the accelerate trainer."""

from .config import DimensionConfig, TrainConfig
from .objectives import dpo_loss, implicit_rewards, reward_margin, sft_loss
from .scalarisation import LinearScalarization, Scalarizer, Tchebycheff
from .soups import SoupsResult, train_soups
from .trainer import TrainResult, train
from .update import TrainingError

__all__ = [
    "DimensionConfig",
    "LinearScalarization",
    "Scalarizer",
    "SoupsResult",
    "Tchebycheff",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "dpo_loss",
    "implicit_rewards",
    "reward_margin",
    "sft_loss",
    "train",
    "train_soups",
]
