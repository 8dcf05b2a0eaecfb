"""The report's text and plots."""

import torch
from panacea.eval import report
from panacea.eval.report import (
    PANEL_TITLE_CHARACTERS,
    format_interval,
    format_monotonicity,
    format_preference,
    format_sets_table,
    format_table,
    monotonicity,
    panel_title,
    plot_fronts,
    set_order,
)

from panacea._io import read_json, write_json
from panacea.preferences import simplex_grid


def test_a_panel_title_is_wrapped_to_its_subplot():
    """A scorer's objective is a sentence: unwrapped, compare.png cut it off at both edges (bug)."""
    objective = "pairs: mean DPO implicit-reward margin over the dimension's held-out pairs (all its sets pooled)"
    title = panel_title(objective, ["helpful", "harmless"])
    assert max(len(line) for line in title.splitlines()) <= PANEL_TITLE_CHARACTERS
    assert title.replace("\n", " ") == f"{objective} (labels: weight on helpful)"


def test_fronts_are_joined_along_the_edge_of_two_dimensions_only(tmp_path, monkeypatch):
    """m ≥ 3: grid order zigzags across the simplex, and joined points drew paths that are not there (hhc-3d)."""
    drawn, save = {}, report._save

    def keep(figure, path, title=""):
        drawn[path.stem] = [line.get_linewidth() for axis in figure.axes for line in axis.lines]
        return save(figure, path, title)

    monkeypatch.setattr(report, "_save", keep)
    for m in (2, 3):
        grid = simplex_grid(m, 3).tolist()
        objectives = [[float(i + k) for k in range(m)] for i in range(len(grid))]
        plot_fronts([("pairs", [("run", grid, objectives)])], ["a", "b", "c"][:m], tmp_path / f"m{m}.png")
    assert drawn["m2"] == [0.8] and drawn["m3"] == [0, 0, 0]


def test_tables_do_not_depend_on_the_order_a_point_came_in(tmp_path):
    """A cached point comes back with sorted keys (write_json): results.md's columns then began with 'harmless/…'
    where the freshly scored run's began with 'helpful/…' (bug: the soups-hh-2d front re-published from its cache)."""
    dimensions = ["helpful", "harmless"]
    grid = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    fresh = [
        {
            "helpful/helpful": {"accuracy": 0.5 + i / 10, "margin": 0.1 * i, "pairs": 4},
            "helpful/xstest": {"accuracy": 0.25 + i / 8, "margin": -0.2 * i, "pairs": 2},
            "harmless/harmless": {"accuracy": 0.75 - i / 10, "margin": 0.3 - i / 10, "pairs": 4},
        }
        for i in range(3)
    ]
    cached = []
    for point in fresh:
        path = tmp_path / f"{len(cached)}.json"
        write_json(path, {"sets": point})
        cached.append(read_json(path)["sets"])
    assert list(cached[0]) != list(fresh[0])  # the cache really does reorder

    rho = monotonicity(grid, fresh, dimensions)
    assert list(rho) == ["helpful/helpful", "helpful/xstest", "harmless/harmless"]
    assert rho == monotonicity(grid, cached, dimensions)
    assert format_table(grid, cached, dimensions, rho) == format_table(grid, fresh, dimensions, rho)
    points = [{"objectives": {"helpful": 0.0, "harmless": 0.0}, "sets": sets} for sets in fresh]
    table = format_sets_table(grid.tolist(), points, dimensions)
    assert table.splitlines()[0].endswith(
        "| helpful/helpful (accuracy / margin) | helpful/xstest (accuracy / margin) "
        "| harmless/harmless (accuracy / margin) |"
    )
    reordered = [dict(point, sets=sets) for point, sets in zip(points, cached, strict=True)]
    assert format_sets_table(grid.tolist(), reordered, dimensions) == table


def test_sets_without_a_dimension_prefix_come_after_the_dimensions_sets():
    names = ["mtbench", "harmless/harmless", "alpaca", "helpful/xstest", "helpful/helpful"]
    assert set_order(names, ["helpful", "harmless"]) == [
        "helpful/helpful",
        "helpful/xstest",
        "harmless/harmless",
        "alpaca",
        "mtbench",
    ]


def test_every_grid_point_keeps_its_own_label():
    """One decimal labelled the 5-point grid's (0.75, 0.25) as (0.8, 0.2) in the demo's table and plot (bug)."""
    assert [format_preference(row) for row in simplex_grid(2, 5).tolist()] == [
        "(1.0, 0.0)",
        "(0.75, 0.25)",
        "(0.5, 0.5)",
        "(0.25, 0.75)",
        "(0.0, 1.0)",
    ]
    for points in (3, 4, 6, 11, 21):
        labels = [format_preference(row) for row in simplex_grid(2, points).tolist()]
        assert len(set(labels)) == points
    assert format_preference([1 / 3, 2 / 3]) == "(0.333, 0.667)"


def test_an_objective_that_does_not_move_is_not_called_non_monotone():
    """ρ is NaN when the objective is the same at every λ; it was flagged 'non-monotone (ρ < 0.9)', which it is not."""
    line = format_monotonicity([float("nan"), 0.5, 1.0], ["helpful", "harmless", "concise"])
    assert "helpful: ρ = +nan **does not change with its weight (ρ undefined)**" in line
    assert "harmless: ρ = +0.50 **non-monotone (ρ < 0.9)**" in line
    assert line.endswith("concise: ρ = +1.00.")


def test_an_interval_is_signed_throughout_when_its_number_is():
    assert format_interval(0.6126, [0.58, 0.64]) == "0.613 [0.580, 0.640]"
    assert format_interval(0.03, [-0.01, 0.07], sign=True) == "+0.030 [-0.010, +0.070]"
    assert format_interval(0.3, [0.21, 0.39], 2, sign=True) == "+0.30 [+0.21, +0.39]"
    assert format_interval(-0.5, None, sign=True) == "-0.500"


def test_results_and_comparisons_say_how_many_resamples_were_left_out():
    from panacea.eval.report import undefined_resamples_note

    assert undefined_resamples_note({"undefined_resamples": 3}) == (
        "; 3 of them drew none of some set's prompts and are left out of every interval"
    )
    assert undefined_resamples_note({"undefined_resamples": 0}) == undefined_resamples_note({}) == ""


def _generations_results(base: bool) -> dict:
    """A results document of a generations front over two λs: one statistic, loops, per point and, with `base`, the
    base model's own (its entry's `base`, as `panacea eval` writes it)."""
    loops = {"sets": ["harmbench"], "column": "loop", "transform": "identity", "description": "share of loops"}
    point = {"sets": {"harmbench": {"loop": 0.5, "prompts": 2, "values": {"loop": [0.0, 1.0]}}}}
    entry = {
        "objective": "win rate",
        "points": [point, point],
        "statistics": {"loops": {**loops, "values": [0.1, 0.2], "intervals": [[0.0, 0.3], [0.1, 0.4]]}},
        "cache": "cache/generations-0123",
    }
    if base:
        own = {"loops": {**loops, "values": [0.08], "intervals": [[0.043, 0.123]]}}
        entry["base"] = {"point": point, "statistics": own}
    grid, dimensions = [[1.0, 0.0], [0.0, 1.0]], ["helpful", "harmless"]
    return {"run": "r", "seed": 0, "dimensions": dimensions, "grid": grid, "scorers": {"generations": entry}}


def test_the_statistics_beside_the_objectives_end_with_the_base_models_row_shown_once():
    """The base model loops in 8 % of its validation answers: every generation table shows its own statistics as the
    anchor, as a last row, and the entry's `base` is not also written out as JSON below the tables."""
    text = report.format_front(_generations_results(base=True))
    table = text.split("### Beside the objectives\n\n")[1].split("\n\n")[0].splitlines()
    assert table[2:] == [
        "| (1.0, 0.0) | 0.100 [0.000, 0.300] |",
        "| (0.0, 1.0) | 0.200 [0.100, 0.400] |",
        "| base model (adapter off) | 0.080 [0.043, 0.123] |",
    ]
    assert "\nbase: " not in text and "\ncache: " in text  # every other key still written out


def test_a_results_document_scored_before_the_base_was_reported_still_formats():
    text = report.format_front(_generations_results(base=False))
    assert "| (0.0, 1.0) | 0.200 [0.100, 0.400] |\n\nloops: share of loops." in text and "base model" not in text
