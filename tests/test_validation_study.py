"""benchmarks/validation_study.py: every row trains on 'fit' and is scored on validation only; equal search sizes."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import config_dict, load_script, make_workspace

ROOT = Path(__file__).resolve().parents[1]


def _study(monkeypatch):
    return load_script(ROOT / "benchmarks" / "validation_study.py", monkeypatch)


def test_every_row_loads_trains_on_fit_and_both_methods_search_as_many_configurations(monkeypatch):
    monkeypatch.chdir(ROOT)
    study = _study(monkeypatch)
    assert len(study.SOUPS) == len(study.PANACEA)  # the same tuning budget for the baseline
    for method in ("panacea", "soups"):  # ... among the rows a method is chosen from (steps are a budget)
        longer = [name for name in study.METHODS[method] if study.budget_binds(method, name)]
        assert len(longer) == 1, (method, longer)
    assert sorted(study.PRIORITY) == sorted(f"{m}/{name}" for m, rows in study.METHODS.items() for name in rows)
    for row in study.PRIORITY:
        method, name = row.split("/")
        config = study.study_config(method, name)  # every override is a valid config
        assert config.method == ("soups" if method == "soups" else "panacea"), row
        assert all(source.split == "fit" for dimension in config.dimensions for source in dimension.train), row
    assert study.study_config("panacea", "plc_tau_inf").aggregator_kwargs == {"tau": float("inf")}


def test_a_protocol_that_trains_on_the_validation_prompts_is_refused(monkeypatch):
    monkeypatch.chdir(ROOT)
    study = _study(monkeypatch)
    monkeypatch.setattr(study, "PROTOCOL", [item for item in study.PROTOCOL if not item.endswith("split=fit")])
    with pytest.raises(ValueError, match=r"row panacea/defaults: dimensions\.0 trains on \['train'\], not only 'fit'"):
        study.study_config("panacea", "defaults")


def test_two_rows_end_to_end_score_only_validation_and_tabulate_a_verdict(monkeypatch, tmp_path, capsys):
    """A tiny base config in place of hh-2d: each row trains, is scored on validation (never eval/), and the table
    gives the soups row's difference to soups' defaults with an interval and a verdict."""
    workspace = make_workspace(tmp_path)
    rng = random.Random(0)
    for name in ("helpful", "harmless"):
        with open(tmp_path / f"{name}.jsonl", "w") as handle:
            for index in range(64):  # 32 prompts, two pairs each: a few fall in the validation fold
                prompt = f"q{index // 2} " + " ".join(f"w{rng.randrange(4, 64)}" for _ in range(2))
                words = [" ".join(f"w{rng.randrange(4, 64)}" for _ in range(3)) for _ in range(2)]
                record = dict(id=f"{name}{index}", prompt=prompt, chosen=words[0], rejected=words[1], dim=name)
                handle.write(json.dumps({**record, "source": "test", "split": "train"}) + "\n")
    data = config_dict(workspace, tmp_path / "unused", save_steps=2)
    data["dimensions"] = [
        {"name": name, "train": [{"path": str(tmp_path / f"{name}.jsonl")}]} for name in ("helpful", "harmless")
    ]
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(data))
    study = _study(monkeypatch)
    monkeypatch.setattr(study, "BASE_CONFIG", str(tmp_path / "base.yaml"))
    monkeypatch.setattr(study, "PROTOCOL", ["max_steps=2", *(f"dimensions.{d}.train.0.split=fit" for d in (0, 1))])
    monkeypatch.setattr(study, "OUTPUT", tmp_path / "study")
    monkeypatch.setattr(study, "PUBLISHED", tmp_path / "published")
    monkeypatch.setattr(study, "DEFAULTS", {"panacea": "defaults", "soups": "lr2e-3_beta0.1_steps40"})
    rows = ["panacea/defaults", "soups/lr2e-3_beta0.1_steps40", "soups/lr1e-3_beta0.3_steps40"]
    for row in rows:
        method, name = row.split("/")
        settings = study.METHODS[method][name]
        monkeypatch.setitem(  # the tiny budget: 2 steps (soups: 1 per member)
            study.METHODS[method], name, study.Setting(settings.description, [*settings.overrides, "max_steps=2"])
        )
    assert study.main(["--only", *rows]) == 0
    for row in rows:
        run = tmp_path / "study" / row / "run"
        assert (run / "eval-validation").is_dir() and not (run / "eval").exists()
    table = capsys.readouterr().out.splitlines()
    line = next(line for line in table if line.startswith("| `soups/lr1e-3_beta0.3_steps40`"))
    assert any(verdict in line for verdict in (" win |", " tie |", " loss |"))
    published = tmp_path / "published"
    assert (published / "panacea/defaults/run/eval-validation/results.json").is_file()
    assert (published / "soups/lr1e-3_beta0.3_steps40/run/eval-validation/ab/results.json").is_file()
    assert sorted(path.name for path in (published / "soups/lr1e-3_beta0.3_steps40/run/soups").iterdir()) == [
        "harmless",
        "helpful",
    ]  # the members' config and log, no weights
    assert not list(published.rglob("*.safetensors"))
    shutil.rmtree(tmp_path / "study")  # a new machine: runs/ is gone, the published rows stay
    record = published / "soups/lr1e-3_beta0.3_steps40/row.json"  # as if the row had resumed: one call's minutes
    record.write_text(json.dumps({**json.loads(record.read_text()), "wall_minutes": 999.0}))
    trained = []
    monkeypatch.setattr(study, "run_row", lambda row, **options: trained.append(row))
    assert study.main(["--only", *rows]) == 0 and trained == []  # nothing trained or scored again
    assert line in capsys.readouterr().out.splitlines()  # the same table (step minutes), from the published rows
    assert next(line for line in table if line.startswith("| `panacea/defaults`")).count("| - |") >= 1  # no PLC
    cells = lambda text: [cell.strip() for cell in text.strip("| ").split(" | ")]  # noqa: E731
    minutes = cells(line)[cells(next(line for line in table if line.startswith("| row |"))).index("train min")]
    results = json.loads((published / "soups/lr1e-3_beta0.3_steps40/run/eval-validation/ab/results.json").read_text())
    assert minutes == f"{results['training']['train_seconds'] / 60:.0f}"  # the run's step minutes, not this call's


def test_the_proxy_check_compares_the_orders_of_the_three_settings_at_40_and_100_steps(monkeypatch):
    monkeypatch.chdir(ROOT)
    study = _study(monkeypatch)
    assert study.study_config("proxy", "rpo1").max_steps == 100 and study.study_config("proxy", "rpo1").rpo_alpha == 1
    assert study.study_config("panacea", "rpo1").max_steps == 40
    hypervolumes = {"panacea/defaults": 0.30, "panacea/lr1e-3": 0.32, "panacea/rpo1": 0.31}
    assert study.proxy_agreement(hypervolumes) is None  # the 100-step rows have not run
    same = {**hypervolumes, "proxy/defaults": 0.40, "proxy/lr1e-3": 0.45, "proxy/rpo1": 0.41}
    assert study.proxy_agreement(same) == (
        "Proxy check: 40 steps order lr1e-3 > rpo1 > defaults, 100 steps lr1e-3 > rpo1 > defaults; agree: the "
        "40-step ranking is used."
    )
    swapped = {**same, "proxy/rpo1": 0.46}
    assert "100 steps rpo1 > lr1e-3 > defaults; disagree" in study.proxy_agreement(swapped)


def test_the_choice_is_the_best_40_step_row_that_does_not_loop_and_the_80_step_rows_only_say_whether_the_budget_binds(
    monkeypatch,
):
    study = _study(monkeypatch)
    assert study.choice({"panacea/lr1e-3": 0.4}, "panacea") is None  # no defaults row yet
    rows = {
        "panacea/defaults": 0.30,
        "panacea/lr1e-3": 0.32,
        "panacea/steps80": 0.50,
        "soups/lr1e-3_beta0.1_steps40": 1,
    }
    clean = {row: [0.0, 0.02, 0.05] for row in rows}  # at most LOOP_LIMIT at every point
    chosen = study.choice(rows, "panacea", clean)
    assert chosen.startswith("Chosen for panacea (2 of 18 40-step rows finished): lr1e-3 (0.320; loops at most 0.050)")
    assert chosen.endswith("at 80 steps the best is steps80 (0.500): the 40-step budget binds (point estimates).")
    # the best row loops at one point: the next best that does not is chosen, and the text names the one passed over
    looping = {**clean, "panacea/lr1e-3": [0.0, 0.01, 0.30]}
    assert study.choice(rows, "panacea", looping).startswith(
        "Chosen for panacea (2 of 18 40-step rows finished): defaults (0.300; loops at most 0.050); above it, "
        "looping more than 0.05 at some point: lr1e-3 0.300;"
    )
    # a row not yet checked for loops stops the choice there: it must be checked first
    assert study.choice(rows, "panacea", {"panacea/defaults": [0.0] * 3}) == (
        "Chosen for panacea (2 of 18 40-step rows finished): pending — lr1e-3 (0.320) is the best row not yet checked "
        "for loops: `python benchmarks/validation_study.py --only panacea/lr1e-3 --generations`; at 80 steps the best "
        "is steps80 (0.500): the 40-step budget binds (point estimates)."
    )
    everywhere = {row: [0.5] * 3 for row in rows}
    assert "lr1e-3 (0.320), though every row loops above 0.05; above it, looping more than 0.05 at some point: " \
        "lr1e-3 0.500, defaults 0.500" in study.choice(rows, "panacea", everywhere)  # fmt: skip
    tie = {"panacea/defaults": 0.30, "panacea/cosine": 0.30}
    assert study.choice(tie, "panacea", {row: [0.0] for row in tie}).startswith(
        "Chosen for panacea (2 of 18 40-step rows finished): defaults"
    )
    soups = {
        "soups/lr2e-3_beta0.1_steps40": 0.2,
        "soups/lr2e-3_beta0.1_steps80": 0.1,
        "soups/lr1e-3_beta0.3_steps40": 0.25,
    }
    assert study.choice(soups, "soups", {row: [0.01] for row in soups}) == (
        "Chosen for soups (2 of 18 40-step rows finished): lr1e-3_beta0.3_steps40 (0.250; loops at most 0.010); at "
        "80 steps the best is lr2e-3_beta0.1_steps80 (0.100): the 40-step budget does not bind (point estimates)."
    )


def test_generations_on_a_finished_row_score_its_answers_and_publish_it_again(monkeypatch, tmp_path):
    """`--only ROW --generations` on a row finished without generations scores them (pairs from the cache) and
    publishes the row again; a row that has them is skipped; without its weights in runs/ it stops, saying so."""
    study = _study(monkeypatch)
    monkeypatch.setattr(study, "OUTPUT", tmp_path / "study")
    monkeypatch.setattr(study, "PUBLISHED", tmp_path / "published")
    row, calls = "panacea/rpo1", []
    run = tmp_path / "study" / row / "run"
    results = run / "eval-validation" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"scorers": {"pairs": {}}}))
    (tmp_path / "study" / row / "row.json").write_text(json.dumps({"row": row, "results": str(results)}))

    def evaluate(folder, **options):
        calls.append(options["scorers"])
        loops = {"statistics": {"loops": {"values": [0.0, 0.1, 0.0]}}}
        results.write_text(json.dumps({"scorers": {"pairs": {}, "generations": loops}}))

    monkeypatch.setattr(study, "evaluate_path", evaluate)
    monkeypatch.setattr(study, "rows_table", lambda records: "")
    with pytest.raises(SystemExit, match="its weights are not in"):
        study.main(["--only", row, "--generations"])
    (run / "adapter").mkdir()
    assert study.main(["--only", row, "--generations"]) == 0 and calls == [["pairs", "generations"]]
    published = json.loads((tmp_path / "published" / row / "row.json").read_text())
    assert published["command"].endswith("--only panacea/rpo1 --generations")
    assert study.loop_shares(json.loads(Path(published["results"]).read_text())) == [0.0, 0.1, 0.0]
    assert study.main(["--only", row, "--generations"]) == 0 and len(calls) == 1  # has them now: skipped


def test_the_full_run_scores_the_answers_its_choice_waits_on_until_a_row_does_not_loop(monkeypatch, tmp_path):
    """Before each row (and at the end) the study scores the answers of each method's best unchecked row; when that
    row loops, the next best is due and scored too; a row without weights here is reported once and left."""
    study = _study(monkeypatch)
    monkeypatch.setattr(study, "OUTPUT", tmp_path / "study")
    monkeypatch.setattr(study, "PUBLISHED", tmp_path / "published")
    accuracy = {
        "panacea/defaults": 0.40,
        "panacea/lr1e-3": 0.45,
        "panacea/rpo1": 0.30,
        "soups/lr1e-3_beta0.1_steps40": 0.5,
        "soups/lr2e-3_beta0.1_steps40": 0.3,
    }
    loops = {"panacea/lr1e-3": [0.0, 0.2, 0.0], "panacea/defaults": [0.0, 0.01, 0.02]}
    for row, hypervolume in accuracy.items():
        results = tmp_path / "published" / row / "results.json"
        results.parent.mkdir(parents=True)
        results.write_text(
            json.dumps({"scorers": {"pairs": {"fronts": {"accuracy": {"metrics": {"hypervolume": hypervolume}}}}}})
        )
        (results.parent / "row.json").write_text(json.dumps({"row": row, "results": str(results)}))
    scored = []

    def score(row):
        if row.startswith("soups/"):
            raise SystemExit(f"{row}: its weights are not in runs/")
        scored.append(row)
        results = tmp_path / "published" / row / "results.json"
        document = json.loads(results.read_text())
        document["scorers"]["generations"] = {"statistics": {"loops": {"values": loops[row]}}}
        results.write_text(json.dumps(document))

    monkeypatch.setattr(study, "score_generations", score)
    unavailable = set()
    study.check_loops(unavailable)
    assert scored == ["panacea/lr1e-3", "panacea/defaults"] and "soups/lr1e-3_beta0.1_steps40" in unavailable
    study.check_loops(unavailable)  # nothing due any more, and the soups row is not tried again
    assert scored == ["panacea/lr1e-3", "panacea/defaults"]


def test_the_100_step_proxy_rows_score_their_answers_and_the_40_step_rows_only_when_asked(monkeypatch, tmp_path):
    study = _study(monkeypatch)
    monkeypatch.setattr(study, "OUTPUT", tmp_path / "study")
    monkeypatch.setattr(study, "PUBLISHED", tmp_path / "published")
    monkeypatch.setattr(study, "rows_table", lambda records: "")
    runs = []
    monkeypatch.setattr(study, "run_row", lambda row, generations=False: runs.append((row, generations)))
    assert study.main(["--only", "proxy/defaults", "panacea/cosine"]) == 0
    assert runs == [("proxy/defaults", True), ("panacea/cosine", False)]
