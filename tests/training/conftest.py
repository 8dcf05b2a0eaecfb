"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny Llama run folder's inputs: the model in workspace/model, pairs in workspace/{a,b}.jsonl."""
    return make_workspace(tmp_path_factory.mktemp("trainer"))


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """accelerate keeps its state per process; tests that switch device or mixed precision need it cleared."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
