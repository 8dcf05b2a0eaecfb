"""The Panacea adapter: config, the SVD-LoRA layer, injection into a causal LM, save/load/export."""

from .config import PanaceaConfig
from .layer import PanaceaLinear, PreferenceState
from .model import PanaceaModel, find_target_modules, get_panacea_model

__all__ = [
    "PanaceaConfig",
    "PanaceaLinear",
    "PanaceaModel",
    "PreferenceState",
    "find_target_modules",
    "get_panacea_model",
]
