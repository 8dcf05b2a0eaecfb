"""The Panacea adapter: config, the SVD-LoRA layer, injection into a causal LM, save/load/export; rewarded soups."""

from .config import PanaceaConfig
from .layer import PanaceaLinear, PreferenceState
from .model import PanaceaModel, find_target_modules, get_panacea_model
from .serialization import nearest_grid_adapter
from .soups import PlainLoraModel, SoupModel, get_lora_model, lora_config_for, read_soups_manifest, soup_delta

__all__ = [
    "PanaceaConfig",
    "PanaceaLinear",
    "PanaceaModel",
    "PlainLoraModel",
    "PreferenceState",
    "SoupModel",
    "find_target_modules",
    "get_lora_model",
    "get_panacea_model",
    "lora_config_for",
    "nearest_grid_adapter",
    "read_soups_manifest",
    "soup_delta",
]
