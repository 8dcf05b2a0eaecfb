"""`panacea serve`: an OpenAI-compatible HTTP server where every request carries its own preference λ.

Concurrent requests are decoded in shared batches, one λ per row (continuous batching: requests join and leave
between decode steps, each row with its own slice of a left-padded KV cache). See docs/serving.md.

`add_serve_parser` and `run_serve` need only the standard library to import; the rest needs torch, and the app
needs the `serve` extra (FastAPI, uvicorn), so names load on first use (PEP 562) as in `panacea/__init__.py`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Engine": "panacea.serving.engine",
    "EngineStats": "panacea.serving.stats",
    "GenerationRequest": "panacea.serving.engine",
    "Output": "panacea.serving.engine",
    "SamplingParams": "panacea.serving.sampling",
    "ServedModel": "panacea.serving.protocol",
    "add_serve_parser": "panacea.serving.cli",
    "create_app": "panacea.serving.app",
    "load_served_model": "panacea.serving.cli",
    "run_serve": "panacea.serving.cli",
}

__all__ = [
    "Engine",
    "EngineStats",
    "GenerationRequest",
    "Output",
    "SamplingParams",
    "ServedModel",
    "add_serve_parser",
    "create_app",
    "load_served_model",
    "run_serve",
]

if TYPE_CHECKING:
    from .app import create_app
    from .cli import add_serve_parser, load_served_model, run_serve
    from .engine import Engine, GenerationRequest, Output
    from .protocol import ServedModel
    from .sampling import SamplingParams
    from .stats import EngineStats


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'panacea.serving' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
