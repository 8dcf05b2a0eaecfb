"""The report's text and plots."""

from panacea.eval.report import PANEL_TITLE_CHARACTERS, panel_title


def test_a_panel_title_is_wrapped_to_its_subplot():
    """A scorer's objective is a sentence: unwrapped, compare.png cut it off at both edges (bug)."""
    objective = "pairs: mean DPO implicit-reward margin over the dimension's held-out pairs (all its sets pooled)"
    title = panel_title(objective, ["helpful", "harmless"])
    assert max(len(line) for line in title.splitlines()) <= PANEL_TITLE_CHARACTERS
    assert title.replace("\n", " ") == f"{objective} (labels: weight on helpful)"
