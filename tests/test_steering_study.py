"""benchmarks/steering_study.py keeps its protocol when the demo's config changes."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

from panacea.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _study(monkeypatch):
    """benchmarks/steering_study.py as a module (registered first: its dataclasses look themselves up there)."""
    spec = importlib.util.spec_from_file_location("steering_study", ROOT / "benchmarks" / "steering_study.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_the_study_scores_11_points_whatever_the_demo_scores(monkeypatch):
    """The demo went to 6 grid points; the study read the grid from demo.yaml, so a rerun would have scored 6
    points and, since the yardstick's folder is a digest of its config, retrained every yardstick (bug)."""
    monkeypatch.chdir(ROOT)
    study = _study(monkeypatch)
    config, demo = study.study_config([]), TrainConfig.from_yaml("configs/demo.yaml")
    assert config.eval_grid == 11
    assert dataclasses.replace(config, eval_grid=demo.eval_grid) == demo
