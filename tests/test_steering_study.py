"""benchmarks/steering_study.py keeps its protocol when the demo's config changes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from panacea.training import TrainConfig

from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


def _study(monkeypatch):
    return load_script(ROOT / "benchmarks" / "steering_study.py", monkeypatch)


def test_the_study_keeps_its_budget_and_grid_whatever_the_demo_runs(monkeypatch):
    """The demo went to 6 grid points and then to 24 steps; the study read both from demo.yaml, so a rerun would
    have trained and scored something else and, since the yardstick's folder is a digest of its config,
    retrained every yardstick (bug). Everything but the study's budget still follows demo.yaml."""
    monkeypatch.chdir(ROOT)
    study = _study(monkeypatch)
    config, demo = study.study_config([]), TrainConfig.from_yaml("configs/demo.yaml")
    assert (config.max_steps, config.warmup_steps, config.save_steps, config.eval_grid) == (40, 4, 10, 11)
    for dimension in config.dimensions:
        assert [source.max_pairs for source in dimension.train] == [160]
        assert [source.max_pairs for source in dimension.eval] == [12, 8]
    budget = {"max_steps", "warmup_steps", "save_steps", "eval_grid", "dimensions"}
    fields = [field.name for field in dataclasses.fields(TrainConfig) if field.name not in budget]
    assert {name: getattr(config, name) for name in fields} == {name: getattr(demo, name) for name in fields}
    for ours, theirs in zip(config.dimensions, demo.dimensions, strict=True):
        assert _unsized(ours) == _unsized(theirs)


def _unsized(dimension):
    """`dimension` with every pair source's max_pairs cleared."""

    def clear(sources):
        return [dataclasses.replace(source, max_pairs=None) for source in sources]

    return dataclasses.replace(dimension, train=clear(dimension.train), eval=clear(dimension.eval))
