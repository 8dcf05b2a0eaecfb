"""What a sweep shows on the terminal (one progress bar line) and what it says it kept when Ctrl-C stops it."""

import contextlib
import logging
import shutil
import sys

import pytest
from panacea.eval.scorers import PairsScorer
from panacea.eval.sweep import evaluate_path

from tests.helpers import train_tiny_run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("sweep-terminal"), max_steps=2)


@pytest.fixture
def run_dir(trained_run, tmp_path):
    """A copy of the trained run, with no grid point scored yet."""
    return shutil.copytree(trained_run, tmp_path / "run")


@contextlib.contextmanager
def console_logging():
    """Logging as `panacea` sets it up: panacea's INFO reports on stderr, through a handler on the root logger."""
    handler, panacea_logger = logging.StreamHandler(sys.stderr), logging.getLogger("panacea")
    level = panacea_logger.level
    logging.root.addHandler(handler)
    panacea_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        panacea_logger.setLevel(level)
        logging.root.removeHandler(handler)


def screen(text: str) -> list[str]:
    """The lines a terminal shows for `text`: a carriage return goes back to the line's start and overwrites it."""
    lines = []
    for line in text.split("\n"):
        shown = ""
        for part in line.split("\r"):
            shown = part + shown[len(part) :]
        lines.append(shown.rstrip())
    return [line for line in lines if line]


def test_log_records_go_above_the_bar_not_into_its_line(run_dir, capsys):
    """Each "reference log-probs for 4 pairs: computing once" was written into the bar's line, which went on below."""
    with console_logging():
        evaluate_path(run_dir, grid_points=3, progress=True)
    lines = screen(capsys.readouterr().err)
    reports = [line for line in lines if line.startswith("reference log-probs for 4 pairs: ")]
    assert len(reports) == 2, lines  # one per pair set, each logged while the bar is drawn
    bars = [line for line in lines if "pairs:" in line and "|" in line]
    assert bars == [lines[-1]] and bars[0].startswith("pairs: 100%|") and bars[0].count("3/3") == 1, lines


def test_an_interrupt_says_how_many_points_are_cached_and_a_rerun_scores_only_the_rest(run_dir, monkeypatch):
    calls, original = [], PairsScorer.score

    def score(self, model, preferences):  # Ctrl-C during the second call of the first run
        calls.append(len(preferences))
        if calls == [2, 2]:
            raise KeyboardInterrupt
        return original(self, model, preferences)

    monkeypatch.setattr(PairsScorer, "MAX_POINTS_PER_CALL", 2)
    monkeypatch.setattr(PairsScorer, "score", score)
    with pytest.raises(KeyboardInterrupt) as interrupt:
        evaluate_path(run_dir, grid_points=5, progress=False)
    assert str(interrupt.value).startswith(
        f"the 2 of 5 pairs grid points scored so far are cached in {run_dir / 'eval' / 'cache' / 'pairs-'}"
    )
    calls.clear()
    assert len(evaluate_path(run_dir, grid_points=5, progress=False)["scorers"]["pairs"]["points"]) == 5
    assert calls == [2, 1]  # the rerun scored only the 3 points the interrupt left
