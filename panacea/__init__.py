"""panacea: one model for every trade-off between alignment objectives.

A preference λ on the simplex enters every adapted linear layer as extra singular values
(Panacea, Zhong et al. 2024), so one fine-tuned model follows any λ set at inference.

The names below are imported on first use (PEP 562), so `import panacea` — and with it the `panacea` command's
argument parsing and `--help` — does not load torch, transformers and peft until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "EMBEDDED_MODEL_NAME": "panacea.base_model",
    "PanaceaConfig": "panacea.adapters",
    "PanaceaModel": "panacea.adapters",
    "get_panacea_model": "panacea.adapters",
    "load_base_model": "panacea.base_model",
    "sample_preferences": "panacea.preferences",
    "simplex_grid": "panacea.preferences",
    "validate_preference": "panacea.preferences",
}

__all__ = [
    "EMBEDDED_MODEL_NAME",
    "PanaceaConfig",
    "PanaceaModel",
    "get_panacea_model",
    "load_base_model",
    "sample_preferences",
    "simplex_grid",
    "validate_preference",
]

if TYPE_CHECKING:
    from panacea.adapters import PanaceaConfig, PanaceaModel, get_panacea_model
    from panacea.base_model import EMBEDDED_MODEL_NAME, load_base_model
    from panacea.preferences import sample_preferences, simplex_grid, validate_preference


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'panacea' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
