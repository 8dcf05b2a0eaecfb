"""panacea: one model for every trade-off between alignment objectives.

A preference λ on the simplex enters every adapted linear layer as extra singular values
(Panacea, Zhong et al. 2024), so one fine-tuned model follows any λ set at inference.
"""

from panacea.adapters import PanaceaConfig, PanaceaModel, get_panacea_model
from panacea.base_model import EMBEDDED_MODEL_NAME, load_base_model
from panacea.preferences import sample_preferences, simplex_grid, validate_preference

__version__ = "0.1.0"

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
