"""`panacea eval` on a rewarded-soups run and `panacea compare` on tiny runs: one table, one reference, clear errors."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from panacea.eval.bootstrap import percentile_interval, resample_weights, statistic_intervals
from panacea.eval.compare import compare, format_comparison, run_results
from panacea.eval.metrics import hypervolume
from panacea.eval.scorers import PairsScorer
from panacea.eval.sweep import load_run

from panacea.cli import main
from tests.helpers import config_dict, make_workspace


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A Panacea run and a soups run (same data and budget) on a tiny Llama, each evaluated on a 3-point grid."""
    root = tmp_path_factory.mktemp("compare")
    workspace = make_workspace(root)
    runs = {}
    for method in ("panacea", "soups"):
        data = config_dict(workspace, root / method, max_steps=4, save_steps=4, method=method)
        for dimension in data["dimensions"]:
            dimension["eval"] = [{"path": dimension["train"][0]["path"], "max_pairs": 4}]
        path = root / f"{method}.yaml"
        path.write_text(yaml.safe_dump(data))
        assert main(["train", str(path)]) == 0
        assert main(["eval", str(root / method), "--grid", "3"]) == 0
        runs[method] = root / method
    return runs


def recorded_scores(monkeypatch) -> list:
    """The λs the pairs scorer is asked to score from now on (it still scores them)."""
    scored, original = [], PairsScorer.score

    def record(self, model, preferences):
        scored.extend(preferences.tolist())
        return original(self, model, preferences)

    monkeypatch.setattr(PairsScorer, "score", record)
    return scored


def test_a_soups_run_is_evaluated_in_both_modes(evaluated):
    documents = run_results(evaluated["soups"])
    assert [document["mode"] for document in documents] == ["ab", "delta"]
    ab, delta = (document["scorers"]["pairs"]["points"] for document in documents)
    assert delta[0] == ab[0] and delta[2] == ab[2]  # delta read the vertices ab scored (the next test checks why)
    assert delta[1] != ab[1]
    assert documents[0]["training"]["budget"] == "split" and documents[0]["switch_seconds"] > 0


def test_the_second_mode_scores_only_the_points_the_first_could_not_serve(evaluated, monkeypatch):
    soups = evaluated["soups"]
    ab = run_results(soups)[0]["scorers"]["pairs"]["points"]
    run = load_run(soups, mode="delta")  # at a vertex delta mode serves that dimension's own LoRA, as ab does
    scorer = PairsScorer.from_run(run)
    for vertex, cached in (([1.0, 0.0], ab[0]), ([0.0, 1.0], ab[2])):  # a soup serves one λ per call
        (point,) = scorer.score(run.model, torch.tensor([vertex]))
        for name, scores in point["sets"].items():
            assert scores["values"]["margin"] == pytest.approx(cached["sets"][name]["values"]["margin"], abs=1e-5)

    shutil.rmtree(soups / "eval" / "delta" / "cache")
    scored = recorded_scores(monkeypatch)
    assert main(["eval", str(soups), "--grid", "3", "--soups-mode", "delta"]) == 0
    assert scored == [[0.5, 0.5]]
    assert len(list((soups / "eval" / "delta" / "cache").glob("*/*.json"))) == 3  # its own folder holds every point


def test_a_mode_read_from_its_own_cache_gives_the_next_mode_its_vertices(evaluated, monkeypatch):
    """A fresh machine gets each published mode's points back in that mode's folder (restore_points), not in the
    folder of the vertices the modes share; evaluating ab from its cache must put them there, so delta scores only
    its middle."""
    soups = evaluated["soups"]
    for folder in (soups / "eval" / "cache").glob("pairs-vertex-*"):
        shutil.rmtree(folder)
    shutil.rmtree(soups / "eval" / "delta" / "cache")
    scored = recorded_scores(monkeypatch)
    assert main(["eval", str(soups), "--grid", "3", "--soups-mode", "ab"]) == 0
    assert scored == []  # every ab point from its own folder
    assert main(["eval", str(soups), "--grid", "3", "--soups-mode", "delta"]) == 0
    assert scored == [[0.5, 0.5]]


def test_compare_prints_one_table_against_one_reference(evaluated, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", str(evaluated["panacea"]), str(evaluated["soups"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| panacea (panacea) |" in printed and "| soups (soups, ab) |" in printed and "(soups, delta)" in printed
    comparison = json.loads((out / "compare.json").read_text())
    assert len(comparison["rows"]) == 3 and (out / "compare.png").stat().st_size > 0
    assert all(row["metrics"]["reference"] == comparison["reference"] for row in comparison["rows"])
    panacea, soups = comparison["rows"][0]["training"], comparison["rows"][1]["training"]
    assert soups["steps"] == panacea["steps"] and soups["tokens"] == panacea["tokens"]  # the split budget
    assert comparison["objective"] == "accuracy" and comparison["reference"] == [0.0, 0.0]  # bounded: fixed at 0
    for row in comparison["rows"]:  # every number carries its interval, and the interval holds the number
        for values, intervals in zip(row["objectives"], row["intervals"], strict=True):
            assert all(low <= v <= high for v, (low, high) in zip(values, intervals, strict=True))
        low, high = row["metric_intervals"]["hypervolume"]
        assert low <= row["metrics"]["hypervolume"] <= high
    margin = compare(run_results(evaluated["panacea"]) + run_results(evaluated["soups"]), objective="margin")
    reference = margin["reference"]
    for row in margin["rows"]:  # the margin diagnostic: the shared reference lies below every point of every run
        assert all(all(v > r for v, r in zip(point, reference, strict=True)) for point in row["objectives"])


def test_compares_default_objective_is_the_scorers_not_the_one_a_run_was_evaluated_with(evaluated):
    """`panacea eval --objective margin` records margin as that run's objective; compare still defaults to
    accuracy (docs/evaluation.md), whichever run comes first (it took the first run's before)."""
    panacea, ab, _ = run_results(evaluated["panacea"]) + run_results(evaluated["soups"])
    panacea["scorers"]["pairs"]["default_objective"] = "margin"
    assert compare([panacea, ab])["objective"] == "accuracy"
    assert compare([panacea, ab], objective="margin")["objective"] == "margin"


def test_compare_refuses_runs_that_do_not_match(evaluated, tmp_path, capsys):
    documents = run_results(evaluated["panacea"]) + run_results(evaluated["soups"])
    other = json.loads(json.dumps(documents[1]))
    other["dimensions"] = ["a", "c"]
    with pytest.raises(ValueError, match="differ in their dimensions"):
        compare([documents[0], other])
    other = json.loads(json.dumps(documents[1]))
    other["grid"] = other["grid"][:2]
    with pytest.raises(ValueError, match="differ in their λ grid"):
        compare([documents[0], other])
    other = json.loads(json.dumps(documents[1]))
    other["scorers"]["pairs"]["settings"]["sets"]["a/a"]["pairs"] = 3
    with pytest.raises(ValueError, match=r"different 'pairs' settings \(sets: "):
        compare([documents[0], other])
    for key, value in (("device", "cuda"), ("dtype", "torch.bfloat16"), ("base_model", "another")):
        other = json.loads(json.dumps(documents[1]))  # scored on another device, dtype or base model
        assert documents[0]["scorers"]["pairs"]["settings"][key] != value
        other["scorers"]["pairs"]["settings"][key] = value
        with pytest.raises(ValueError, match=rf"different 'pairs' settings \({key}: "):  # the error names the key
            compare([documents[0], other])
    first, other = json.loads(json.dumps(documents[0])), json.loads(json.dumps(documents[1]))
    first["scorers"]["pairs"]["settings"]["example_setting"] = None  # None in one, absent in the other: still named
    other["scorers"]["pairs"]["settings"].pop("example_setting", None)
    with pytest.raises(ValueError, match=r"different 'pairs' settings \(example_setting: "):
        compare([first, other])
    other = json.loads(json.dumps(documents[1]))  # another DPO β: accuracy (the margin's sign) compares, the rest not
    other["scorers"]["pairs"]["settings"]["sets"]["a/a"]["beta"] = 0.3
    assert len(compare([documents[0], other], objective="accuracy")["rows"]) == 2
    for objective in ("win_probability", "margin"):
        with pytest.raises(ValueError, match="different 'pairs' settings"):
            compare([documents[0], other], objective=objective)
    other = json.loads(json.dumps(documents[1]))  # the objective pools other sets (another panacea's results)
    other["scorers"]["pairs"]["objectives"]["accuracy"]["dimensions"]["a"]["sets"] = ["b/b"]
    with pytest.raises(ValueError, match=r"define the objective of the 'pairs' scorer differently"):
        compare([documents[0], other])
    with pytest.raises(ValueError, match="at least two evaluated runs"):
        compare(documents[:1])
    assert main(["compare", str(evaluated["panacea"]), str(tmp_path / "missing")]) == 2
    assert "no run folder at" in capsys.readouterr().err
    (tmp_path / "fresh").mkdir()
    assert main(["compare", str(evaluated["panacea"]), str(tmp_path / "fresh")]) == 2
    assert "has not been evaluated" in capsys.readouterr().err


def test_a_soups_row_off_the_budget_it_names_is_marked(evaluated):
    """'split' must total the Panacea rows' steps and 'full' m× them; a soups run of another config is flagged."""
    panacea, ab, _ = run_results(evaluated["panacea"]) + run_results(evaluated["soups"])
    assert "✗" not in format_comparison(compare([panacea, ab]))  # the fixture's soups run is at Panacea's budget
    for budget, steps in (("split", 6), ("full", 4)):  # m = 2: 'full' would be 8 steps
        other = json.loads(json.dumps(ab))
        other["training"].update(budget=budget, steps=steps)
        other["label"] = "other soups"
        comparison = compare([panacea, other])
        assert [row["budget_matches"] for row in comparison["rows"]] == [None, False]
        assert f"| {budget} ✗ | {steps} |" in format_comparison(comparison)
    other["training"]["steps"] = 8  # 'full' at m× Panacea's 4 steps
    assert compare([panacea, other])["rows"][1]["budget_matches"] is True
    assert compare([ab, other])["rows"][1]["budget_matches"] is None  # no Panacea row: nothing to check against
    # beside a Panacea run at m× its budget (NAME-full, 8 steps) both soups budgets still match: they marked ✗ before
    full_panacea = json.loads(json.dumps(panacea))
    full_panacea["training"]["steps"], full_panacea["label"] = 8, "panacea at m×"
    assert [row["budget_matches"] for row in compare([panacea, full_panacea, ab, other])["rows"]] == [
        None, None, True, True]  # fmt: skip
    full_panacea["training"]["steps"] = 6  # Panacea rows at 4 and 6 steps: no one budget to match
    assert compare([panacea, full_panacea, other])["rows"][2]["budget_matches"] is False


def test_compare_reads_published_folders_as_it_reads_the_runs(evaluated, tmp_path):
    """benchmarks/fronts.sh publishes only each run's results to docs/results/NAME/RUN/eval/ (no adapter, cache or
    checkpoint): on a fresh clone those folders are what `panacea compare` gets, and they give the same table."""
    published = tmp_path / "published"
    for name, run in evaluated.items():
        for document in run.glob("eval/**/results.json"):
            target = published / name / document.relative_to(run)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(document, target)
    tables = {}
    for source in ("runs", "published"):
        folders = evaluated.values() if source == "runs" else [published / name for name in evaluated]
        assert main(["compare", *map(str, folders), "--out", str(tmp_path / source)]) == 0
        tables[source] = (tmp_path / source / "compare.md").read_text()
    assert tables["published"] == tables["runs"]


def test_runs_whose_folders_share_a_name_are_labelled_by_their_paths(evaluated, tmp_path, capsys):
    copy = tmp_path / "published" / "panacea"  # a run and its published copy: both folders are called `panacea`
    copy.mkdir(parents=True)
    shutil.copytree(evaluated["panacea"] / "eval", copy / "eval")
    out = tmp_path / "out"
    assert main(["compare", str(evaluated["panacea"]), str(copy), str(evaluated["soups"]), "--out", str(out)]) == 0
    labels = [row["label"] for row in json.loads((out / "compare.json").read_text())["rows"]]
    assert labels == [
        f"{evaluated['panacea']} (panacea)",
        f"{copy} (panacea)",
        "soups (soups, ab)",  # one folder, two modes: its own name still tells them apart
        "soups (soups, delta)",
    ]
    capsys.readouterr()
    assert main(["compare", str(evaluated["panacea"]), str(evaluated["panacea"]), "--out", str(out)]) == 2
    assert "labelled 'panacea (panacea)': is one run given twice?" in capsys.readouterr().err


def test_a_reference_point_of_ones_own_replaces_the_shared_one(evaluated, tmp_path, capsys):
    runs = [str(evaluated["panacea"]), str(evaluated["soups"])]
    shared = compare(run_results(evaluated["panacea"]) + run_results(evaluated["soups"]), objective="margin")
    lower = [value - 1.0 for value in shared["reference"]]  # 1 below the shared point in both objectives
    out = tmp_path / "out"
    given = ["--objective", "margin", "--reference", *map(str, lower)]
    assert main(["compare", *runs, "--out", str(out), *given]) == 0  # negative numbers
    given = json.loads((out / "compare.json").read_text())
    assert given["reference"] == lower and given["reference_policy"] == "given"
    assert "given" in (out / "compare.md").read_text()
    for before, after in zip(shared["rows"], given["rows"], strict=True):
        points = np.asarray(after["objectives"])
        assert after["metrics"]["hypervolume"] == pytest.approx(hypervolume(points, np.asarray(lower)))
        assert after["metrics"]["hypervolume"] > before["metrics"]["hypervolume"]  # r moved down: more volume
    capsys.readouterr()
    assert main(["compare", *runs, "--reference", "0"]) == 2
    assert "the reference point needs 2 finite values (a, b), got [0.0]" in capsys.readouterr().err
    assert main(["compare", *runs, "--reference", "0", "nan"]) == 2
    assert "finite values" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not numbers at all
        main(["compare", *runs, "--reference", "low", "lower"])
    assert "argument --reference: invalid float value: 'low'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda d: d.pop("scorers"), "no 'scorers' (dict)"),
        (lambda d: d["scorers"]["pairs"].pop("settings"), "scorer 'pairs' lacks its objective, settings or points"),
        (lambda d: d["scorers"]["pairs"]["points"].pop(), "does not have one point per λ of its 3-point grid"),
        (lambda d: d["scorers"]["pairs"]["points"][1]["objectives"].pop("b"), "point 1: not a number for every"),
        (lambda d: d["scorers"]["pairs"].pop("items"), "no per-item values (scored before 2026-12-04"),
    ],
)
def test_an_incomplete_results_document_is_named_not_a_traceback(evaluated, tmp_path, capsys, damage, problem):
    run = tmp_path / "damaged"
    shutil.copytree(evaluated["panacea"] / "eval", run / "eval", ignore=shutil.ignore_patterns("cache"))
    document = json.loads((run / "eval" / "results.json").read_text())
    damage(document)
    (run / "eval" / "results.json").write_text(json.dumps(document))
    assert main(["compare", str(evaluated["soups"]), str(run), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert f"{run / 'eval' / 'results.json'} is not a complete `panacea eval` results document" in error
    assert problem in error and "Traceback" not in error


def test_baseline_gives_each_row_a_paired_difference_and_a_verdict(evaluated, tmp_path, capsys):
    out = tmp_path / "out"
    runs = [str(evaluated["panacea"]), str(evaluated["soups"])]
    assert main(["compare", *runs, "--out", str(out), "--baseline", "soups", "--resamples", "200"]) == 0
    printed = capsys.readouterr().out
    assert "Δ hypervolume vs soups (soups, ab)" in printed and "Δ hypervolume vs soups (soups, delta)" in printed
    comparison = json.loads((out / "compare.json").read_text())
    assert comparison["baseline"] == ["soups (soups, ab)", "soups (soups, delta)"]
    panacea, ab, delta = comparison["rows"]
    versus = panacea["versus"]["soups (soups, ab)"]["hypervolume"]
    assert versus["difference"] == pytest.approx(panacea["metrics"]["hypervolume"] - ab["metrics"]["hypervolume"])
    low, high = versus["interval"]
    assert versus["verdict"] == ("win" if low > 0 else "loss" if high < 0 else "tie")
    assert set(delta["versus"]) == {"soups (soups, ab)"} and ab["versus"] == {
        "soups (soups, delta)": ab["versus"]["soups (soups, delta)"]
    }
    assert main(["compare", *runs, "--baseline", "nobody"]) == 2
    assert "--baseline 'nobody' names none of the runs compared" in capsys.readouterr().err
    assert main(["compare", *runs, "--objective", "kindness"]) == 2
    assert "--objective 'kindness' is not one of the pairs scorer's objectives" in capsys.readouterr().err


def test_sparsity_and_spacing_stand_beside_the_non_dominated_points_they_are_computed_on(evaluated):
    """A collapsed front scores 0 on both, the best value; the table shows how many points they were computed on."""
    panacea, ab, _ = run_results(evaluated["panacea"]) + run_results(evaluated["soups"])
    comparison = compare([panacea, ab])
    table = format_comparison(comparison)
    assert "| run | non-dominated points | sparsity ↓ [95 %] | spacing ↓ [95 %] |" in table
    for row in comparison["rows"]:
        count = f"| {row['metrics']['num_nondominated']} of {len(comparison['grid'])} |"
        assert f"| {row['label']} {count}" in table


def _said(refusal_by_point, run: str, dimensions=("helpful", "harmless"), grid=None) -> dict:
    """A generations results document of a 2-D run: per point, each prompt's refusal (0/1) and answer length on
    HarmBench (its first half of prompts) and DoNotAnswer (the rest); a win-rate objective alike for every run."""
    grid = grid or [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    half = len(refusal_by_point[0]) // 2
    items = {"harmbench": [f"p{i}" for i in range(half)], "donotanswer": [f"q{i}" for i in range(half)]}
    objectives = {
        "win_rate": {
            "bounded": True,
            "description": "win rate",
            "dimensions": {name: {"sets": ["harmbench"], "column": "vs", "transform": "win"} for name in dimensions},
        }
    }
    points = [_answered(values) for values in refusal_by_point]
    for point in points:
        for name in point["sets"]:
            point["sets"][name]["values"]["vs"] = [1.0] * half
    entry = {
        "objectives": objectives,
        "items": items,
        "points": points,
        "default_objective": "win_rate",
        "settings": {},
    }
    statistics = {
        "refusal_harmbench": {"sets": ["harmbench"], "column": "refusal", "transform": "identity", "description": "r"},
        "refusal_harmful": {
            "sets": ["harmbench", "donotanswer"], "column": "refusal", "transform": "identity", "description": "rr",
        },
        "words_harmful": {
            "sets": ["harmbench", "donotanswer"], "column": "words", "transform": "identity", "description": "w",
        },
    }  # fmt: skip
    entry["statistics"] = statistic_intervals(entry, statistics)
    return {"run": run, "dimensions": list(dimensions), "grid": grid, "scorers": {"generations": entry}}


def _answered(refusal) -> dict:
    """A point of `_said`'s prompts: each answer's refusal (0/1) and length, HarmBench the first half, DoNotAnswer
    the rest."""
    half = len(refusal) // 2
    parts = (("harmbench", refusal[:half]), ("donotanswer", refusal[half:]))
    return {
        "sets": {
            name: {"values": {"refusal": list(part), "words": [40.0 + 3 * v for v in part]}} for name, part in parts
        }
    }


def _with_base(document: dict, refusal) -> dict:
    """`document` with the base model's own answers as `panacea eval` writes them (its entry's `base`): their point
    (each answer's refusal and length, as `_answered`) and each statistic on it, under eval's resamples."""
    entry = document["scorers"]["generations"]
    point = _answered(refusal)
    entry["base"] = {
        "point": point,
        "statistics": statistic_intervals({**entry, "points": [point]}, entry["statistics"]),
    }
    return document


def test_the_base_models_statistics_are_shown_once_and_drawn_from_the_comparisons_resamples():
    """The base model's own statistics, the anchor of every generation table: one row where every run's agree (the
    same base answers, as compared runs share the prompts, decoding and base model), with intervals redrawn from its
    point under the comparison's resamples like every row's; one row per run where they differ."""
    rng = np.random.default_rng(2)
    base = (rng.random(40) < 0.3).astype(float)
    mine = _with_base(_said(rng.random((3, 40)).round(), "panacea"), base)
    theirs = _with_base(_said(rng.random((3, 40)).round(), "soups"), base)
    comparison = compare([mine, theirs], scorer="generations", resamples=300, seed=5)
    weights = resample_weights([f"q{i}" for i in range(20)] + [f"p{i}" for i in range(20)], 300, 5)
    expected = percentile_interval(weights @ np.concatenate([base[20:], base[:20]]) / weights.sum(1))
    for row in comparison["rows"]:
        assert row["base"]["refusal_harmful"]["values"] == [pytest.approx(base.mean())]
        assert row["base"]["refusal_harmful"]["intervals"] == [pytest.approx(expected)]
    assert format_comparison(comparison).count("| base model (adapter off) | - |") == 1
    theirs["scorers"]["generations"]["base"]["point"]["sets"]["harmbench"]["values"]["words"][0] += 1.0
    table = format_comparison(compare([mine, theirs], scorer="generations"))
    assert "| base model (adapter off) | - |" not in table
    assert "| base model (adapter off) of panacea | - |" in table
    assert "| base model (adapter off) of soups | - |" in table


def test_a_results_document_scored_before_the_base_was_reported_still_compares():
    """results.json files written before the base model's statistics were reported have no `base`: compared as before,
    also beside one that has it (whose base row is then the table's only one)."""
    rng = np.random.default_rng(3)
    old = _said(rng.random((3, 40)).round(), "old")
    new = _with_base(_said(rng.random((3, 40)).round(), "new"), (rng.random(40) < 0.5).astype(float))
    comparison = compare([old, new], scorer="generations", baseline="old")
    assert comparison["rows"][0]["base"] == {}
    assert set(comparison["rows"][1]["base"]) == set(new["scorers"]["generations"]["statistics"])
    assert format_comparison(comparison).count("base model (adapter off)") == 1
    assert "base model" not in format_comparison(compare([old, {**old, "run": "b"}], scorer="generations"))


def test_a_statistic_defined_differently_in_two_runs_is_refused():
    """Each run's statistic was pooled from its own description: two results files of different panacea versions
    were contrasted on different sets without a word (found by an independent review)."""
    rng = np.random.default_rng(0)
    mine, theirs = _said(rng.random((3, 80)).round(), "panacea"), _said(rng.random((3, 80)).round(), "soups")
    theirs["scorers"]["generations"]["statistics"]["refusal_harmful"]["sets"] = ["harmbench"]
    with pytest.raises(ValueError, match=r"define refusal_harmful of the 'generations' scorer differently"):
        compare([mine, theirs], scorer="generations", baseline="soups")
    del theirs["scorers"]["generations"]["statistics"]["refusal_harmful"]  # one run without it: compared as before
    assert len(compare([mine, theirs], scorer="generations", baseline="soups")["rows"]) == 2


def test_what_the_models_say_is_contrasted_between_vertices_and_against_the_baseline_with_paired_intervals():
    rng = np.random.default_rng(0)
    mine = (rng.random((3, 80)) < [[0.1], [0.3], [0.6]]).astype(float)  # refusal rises toward harmless
    theirs = (rng.random((3, 80)) < [[0.0], [0.5], [0.9]]).astype(float)
    comparison = compare([_said(mine, "panacea"), _said(theirs, "soups")], scorer="generations", baseline="soups")
    row, base = comparison["rows"]
    # the shared resamples (default count and seed): items in sets sorted by name, donotanswer's before harmbench's
    weights = resample_weights([f"q{i}" for i in range(40)] + [f"p{i}" for i in range(40)])

    def drawn(values, point, pooled=False):  # a statistic's resampled means at one point
        ordered = np.concatenate([values[point][40:], values[point][:40]])  # the items' order in `weights`
        used = weights if pooled else weights * (np.arange(80) >= 40)
        return used @ ordered / used.sum(1)

    gap = row["vertex_gaps"]["refusal_harmbench"]
    assert (gap["to"], gap["from"]) == ("harmless", "helpful")
    assert gap["difference"] == pytest.approx(mine[2][:40].mean() - mine[0][:40].mean())
    assert gap["interval"] == pytest.approx(percentile_interval(drawn(mine, 2) - drawn(mine, 0)))
    assert gap["direction"] == "higher"
    pooled = row["vertex_gaps"]["refusal_harmful"]
    assert pooled["difference"] == pytest.approx(mine[2].mean() - mine[0].mean())
    assert pooled["interval"] == pytest.approx(percentile_interval(drawn(mine, 2, True) - drawn(mine, 0, True)))
    versus = row["gaps_versus"]["soups"]["refusal_harmbench"]
    expected = drawn(mine, 2) - drawn(mine, 0) - (drawn(theirs, 2) - drawn(theirs, 0))
    assert versus["difference"] == pytest.approx(
        mine[2][:40].mean() - mine[0][:40].mean() - theirs[2][:40].mean() + theirs[0][:40].mean()
    )
    assert versus["interval"] == pytest.approx(percentile_interval(expected))
    at_harmless = row["statistics_versus"]["soups"]["refusal_harmful"]["harmless"]
    assert at_harmless["difference"] == pytest.approx(mine[2].mean() - theirs[2].mean())
    assert at_harmless["interval"] == pytest.approx(percentile_interval(drawn(mine, 2, True) - drawn(theirs, 2, True)))
    assert at_harmless["direction"] == "lower"
    at_helpful = row["statistics_versus"]["soups"]["refusal_harmful"]["helpful"]
    assert at_helpful["difference"] == pytest.approx(mine[0].mean() - theirs[0].mean())
    assert base["statistics_versus"] == {} and base["gaps_versus"] == {}  # the baseline is not set against itself
    table = format_comparison(comparison)
    assert "refusal_harmbench: harmless − helpful vertex" in table and "At the vertices against soups" in table
    assert f"{gap['difference']:+.3f} [{gap['interval'][0]:+.3f}, {gap['interval'][1]:+.3f}] higher" in table
    assert f"{versus['difference']:+.3f} [{versus['interval'][0]:+.3f}, {versus['interval'][1]:+.3f}]" in table
    words = row["statistics_versus"]["soups"]["words_harmful"]["harmless"]
    assert f"{words['difference']:+.1f} [{words['interval'][0]:+.1f}, {words['interval'][1]:+.1f}]" in table


def test_the_vertex_tables_use_the_comparisons_own_resamples():
    """The statistics' intervals stored at eval time used eval's resamples; compare --resamples N redraws them, so
    every table of a comparison rests on one set of resamples."""
    values = (np.random.default_rng(1).random((3, 20)) < 0.5).astype(float)
    document = _said(values, "a")
    comparison = compare([document, {**document, "run": "b"}], scorer="generations", resamples=300, seed=5)
    weights = resample_weights([f"q{i}" for i in range(10)] + [f"p{i}" for i in range(10)], 300, 5)
    ordered = np.concatenate([values[2][10:], values[2][:10]])
    expected = percentile_interval(weights @ ordered / weights.sum(1))
    assert comparison["rows"][0]["statistics"]["refusal_harmful"]["intervals"][2] == pytest.approx(expected)
    assert "that gap's difference" not in format_comparison(comparison)  # no baseline, none promised


def test_a_vertex_gap_needs_both_of_its_vertices_and_a_grid_without_vertices_has_no_vertex_tables():
    document = _said([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0]], "a", dimensions=("helpful", "kind"))
    comparison = compare([document, {**document, "run": "b"}], scorer="generations")
    assert comparison["rows"][0]["vertex_gaps"] == {}
    assert "How far λ moves refusal" not in format_comparison(comparison)
    inner = _said([[0.0, 1.0]] * 3, "a", grid=[[0.75, 0.25], [0.5, 0.5], [0.25, 0.75]])
    table = format_comparison(compare([inner, {**inner, "run": "b"}], scorer="generations", baseline="b"))
    assert "At the vertices" not in table and "How far λ moves refusal" not in table
