"""benchmarks/validation_study.py: every row trains on 'fit' and is scored on validation only; equal search sizes."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from panacea.training.reference import SEED_DIRS_ENV

from panacea.base_model import CACHE_DIR_ENV, CACHE_SEEDS_ENV, seeded_entries
from tests.helpers import config_dict, load_script, make_workspace

ROOT = Path(__file__).resolve().parents[1]


def _study(monkeypatch):
    return load_script(ROOT / "benchmarks" / "validation_study.py", monkeypatch)


def _study_in(tmp_path, monkeypatch):
    """The study with its runs in tmp_path/study and its published rows in tmp_path/published."""
    study = _study(monkeypatch)
    monkeypatch.setattr(study, "OUTPUT", tmp_path / "study")
    monkeypatch.setattr(study, "PUBLISHED", tmp_path / "published")
    monkeypatch.setattr(study, "EVAL_CACHE", tmp_path / "eval-cache")  # never the checkout's
    for variable in (CACHE_SEEDS_ENV, SEED_DIRS_ENV):  # main() names its seed folders there: put back after the test
        monkeypatch.delenv(variable, raising=False)
    return study


def test_every_row_loads_trains_on_fit_and_both_methods_search_as_many_configurations(monkeypatch):
    monkeypatch.chdir(ROOT)
    study = _study(monkeypatch)
    assert len(study.SOUPS) == len(study.PANACEA)  # the same tuning budget for the baseline ...
    chosen_from = {
        method: sum(study.candidate(method, name) for name in study.METHODS[method]) for method in ("panacea", "soups")
    }
    assert chosen_from == {"panacea": 12, "soups": 19}  # ... of which it may choose among more (aggregator rows: not)
    for method in ("panacea", "soups"):  # ... among the rows a method is chosen from (steps are a budget)
        longer = [name for name in study.METHODS[method] if study.budget_binds(method, name)]
        assert len(longer) == 1, (method, longer)
    assert sorted(study.ALL_ROWS) == sorted(f"{m}/{name}" for m, rows in study.METHODS.items() for name in rows)
    assert not [row for row in study.PRIORITY if row.startswith("confirm/")]  # run only when a choice waits on one
    for row in study.ALL_ROWS:
        method, name = row.split("/")
        config = study.study_config(method, name)  # every override is a valid config
        assert config.method == ("soups" if row.startswith(("soups/", "confirm/soups-")) else "panacea"), row
        assert all(source.split == "fit" for dimension in config.dimensions for source in dimension.train), row
        assert config.max_steps == (100 if method in ("proxy", "confirm") else 80 if "80" in name else 40), row
    # every row the protocol can choose has two 100-step trainings: its proxy row, else its confirmation row, at the
    # config's seed, and a confirmation row at the second seed that differs from it only in the seed
    for method in ("panacea", "soups"):
        for name in study.METHODS[method]:
            if study.candidate(method, name):
                first, second = study.confirm_rows(method, name)
                assert {first, second} <= set(study.ALL_ROWS), (method, name)
                configs = [study.study_config(*row.split("/")) for row in (first, second)]
                assert (configs[0].seed, configs[1].seed) == (0, study.SECOND_SEED), (method, name)
                assert dataclasses.replace(configs[1], seed=0, output_dir=configs[0].output_dir) == configs[0]
    assert study.confirm_rows("panacea", "rpo1") == ("proxy/rpo1", "confirm/panacea-rpo1-seed1")
    assert study.study_config("confirm", "soups-lr5e-3_beta0.3_steps40").learning_rate == 5e-3
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
    study = _study_in(tmp_path, monkeypatch)
    monkeypatch.setattr(study, "BASE_CONFIG", str(tmp_path / "base.yaml"))
    monkeypatch.setattr(study, "PROTOCOL", ["max_steps=2", *(f"dimensions.{d}.train.0.split=fit" for d in (0, 1))])
    monkeypatch.setattr(study, "DEFAULTS", {"panacea": "defaults", "soups": "lr2e-3_beta0.1_steps40"})
    rows = ["panacea/defaults", "soups/lr2e-3_beta0.1_steps40", "soups/lr1e-3_beta0.3_steps40",
            "soups/lr2e-3_beta0.1_steps80"]  # fmt: skip
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
    budget = next(line for line in table if line.startswith("Budget, soups:"))  # the 80-step row, by its interval
    assert re.fullmatch(
        r"Budget, soups: at 80 steps the best is lr2e-3_beta0\.1_steps80 \(\d\.\d{3}\), against the best 40-step "
        r"row lr\S+ \(\d\.\d{3}\) [+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\] (win|tie|loss): the 40-step "
        r"budget (binds|does not bind)\.",
        budget,
    ), budget
    published = tmp_path / "published"
    assert (published / "panacea/defaults/run/eval-validation/results.json").is_file()
    assert (published / "soups/lr1e-3_beta0.3_steps40/run/eval-validation/ab/results.json").is_file()
    assert sorted(path.name for path in (published / "soups/lr1e-3_beta0.3_steps40/run/soups").iterdir()) == [
        "harmless",
        "helpful",
    ]  # the members' config, data record and log, no weights
    for record in ("panacea/defaults/run", "soups/lr1e-3_beta0.3_steps40/run/soups/helpful"):  # what each trained on
        assert json.loads((published / record / "data.json").read_text())["data"]
    assert not list(published.rglob("*.safetensors"))
    shutil.rmtree(tmp_path / "study")  # a new machine: runs/ is gone, the published rows stay
    record = published / "soups/lr1e-3_beta0.3_steps40/row.json"  # as if the row had resumed: one call's minutes
    record.write_text(json.dumps({**json.loads(record.read_text()), "wall_minutes": 999.0}))
    trained = []
    monkeypatch.setattr(study, "run_row", lambda row, **options: trained.append(row))
    assert study.main(["--only", *rows]) == 0 and trained == []  # nothing trained or scored again
    assert line in capsys.readouterr().out.splitlines()  # the same table (step minutes), from the published rows
    cells = lambda text: [cell.strip() for cell in text.strip("| ").split(" | ")]  # noqa: E731
    header = cells(next(line for line in table if line.startswith("| row |")))
    defaults = cells(next(line for line in table if line.startswith("| `panacea/defaults`")))
    assert defaults[header.index("PLC veto rate")] == "-"  # no PLC in this row
    minutes = cells(line)[header.index("train min")]
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


def test_the_choice_is_the_best_40_step_row_that_does_not_loop_and_the_80_step_rows_are_not_chosen(monkeypatch):
    study = _study(monkeypatch)
    assert study.choice({"panacea/lr1e-3": 0.4}, "panacea") is None  # no defaults row yet
    rows = {
        "panacea/defaults": 0.30,
        "panacea/lr1e-3": 0.32,
        "panacea/steps80": 0.50,
        "soups/lr1e-3_beta0.1_steps40": 1,
    }
    clean = {row: [0.0, 0.02, 0.05] for row in rows}  # at most LOOP_LIMIT at every point
    assert study.choice(rows, "panacea", clean) == (
        "Chosen for panacea (2 of the 12 rows it chooses among finished): lr1e-3 (0.320; loops at most 0.050)."
    )  # the 80-step row is not chosen from, however accurate
    # the best row loops at one point: the next best that does not is chosen, and the text names the one passed over
    looping = {**clean, "panacea/lr1e-3": [0.0, 0.01, 0.30]}
    assert study.choice(rows, "panacea", looping) == (
        "Chosen for panacea (2 of the 12 rows it chooses among finished): "
        "defaults (0.300; loops at most 0.050); passed over, "
        "looping more than 0.05 at some point: lr1e-3 0.300."
    )
    # a row not yet checked for loops stops the choice there: it must be checked first
    assert study.choice(rows, "panacea", {"panacea/defaults": [0.0] * 3}) == (
        "Chosen for panacea (2 of the 12 rows it chooses among finished): "
        "pending — lr1e-3 (0.320) is the best row not yet checked "
        "for loops: `python benchmarks/validation_study.py --only panacea/lr1e-3 --generations`."
    )
    everywhere = {row: [0.5] * 3 for row in rows}
    assert study.choice(rows, "panacea", everywhere) == (
        "Chosen for panacea (2 of the 12 rows it chooses among finished): "
        "lr1e-3 (0.320; it loops 0.500), though every finished row loops above "
        "0.05; passed over, looping more than 0.05 at some point: defaults 0.500."
    )
    tie = {"panacea/cosine": 0.30, "panacea/defaults": 0.30}  # cosine first: the rule, not the order, picks defaults
    assert study.choice(tie, "panacea", {row: [0.0] for row in tie}).startswith(
        "Chosen for panacea (2 of the 12 rows it chooses among finished): defaults"
    )
    # undecided whether the choice must be checked at 100 steps: provisional
    assert study.choice(rows, "panacea", clean, None).endswith(
        "lr1e-3 (0.320; loops at most 0.050) — provisional: whether it must also be checked at 100 steps waits on "
        "the proxy rows."
    )


def test_where_the_40_step_loop_check_does_not_carry_a_choice_must_not_loop_at_100_steps_either(monkeypatch):
    """docs/steering.md round 4 (~13:25 and ~14:50 UTC): a proxy row that loops while its 40-step row does not means
    the 40-step check does not carry; each method's choice then needs its settings' 100-step row to pass too."""
    study = _study(monkeypatch)
    clean, loops = [0.0, 0.01, 0.02], [0.0, 0.02, 0.40]
    assert study.loop_carry({}) is None
    assert study.loop_carry({"proxy/defaults": loops}) is None  # its 40-step row's loops are not known yet
    assert study.loop_carry({"proxy/defaults": loops, "panacea/defaults": loops}) is None  # both loop: the others
    assert study.loop_carry({"proxy/defaults": loops, "panacea/defaults": clean}) is False
    every = {f"{kind}/{name}": clean for kind in ("panacea", "proxy") for name in study.PROXY}
    assert study.loop_carry(every) is True
    assert study.loop_carry({**every, "proxy/rpo1": loops, "panacea/rpo1": loops}) is True  # loops at both budgets
    assert study.loop_carry({**every, "panacea/rpo1": loops}) is True  # the 100-step row does not loop
    hypervolumes = {f"{kind}/{name}": 0.3 + 0.01 * index for kind in ("panacea", "proxy")
                    for index, name in enumerate(study.PROXY)}  # fmt: skip
    assert study.proxy_orders_agree(hypervolumes) is True
    assert study.confirming(hypervolumes, every) is False
    assert study.confirming(hypervolumes, {**every, "panacea/lr1e-3": clean, "proxy/lr1e-3": loops}) is True
    assert study.confirming({**hypervolumes, "proxy/defaults": 0.9}, every) is True  # the orders disagree
    assert study.confirming(hypervolumes, {}) is None
    rows = {"panacea/defaults": 0.30, "panacea/cosine": 0.35, "soups/lr2e-3_beta0.1_steps40": 0.4}
    checked = {row: clean for row in rows}
    # cosine passes at 40 steps; at 100 steps its confirmation row has not run: the choice waits on it
    assert study.ranking(rows, "panacea", checked, confirm=True) == (None, "confirm/panacea-cosine", [])
    assert study.choice(rows, "panacea", checked, True) == (  # 17 40-step rows to go: the ranking can still change
        "Chosen for panacea (2 of the 12 rows it chooses among finished): "
        "pending — cosine (0.350) is the best row not yet checked "
        "for loops at 100 steps (confirm/panacea-cosine): due once all 12 rows it chooses among are finished "
        "(the full run trains it then)."
    )
    every_row = {f"panacea/{name}": 0.1 for name in study.PANACEA if not study.budget_binds("panacea", name)}
    assert study.choice({**every_row, **rows}, "panacea", checked, True).endswith(
        "(confirm/panacea-cosine): `python benchmarks/validation_study.py --only confirm/panacea-cosine --generations`."
    )
    # it loops at 100 steps: passed over; defaults' 100-step row is its proxy row, which does not loop, but the
    # defaults' second training has not run: the choice waits on it
    at_100 = {**checked, "confirm/panacea-cosine": loops, "proxy/defaults": clean}
    assert study.ranking(rows, "panacea", at_100, confirm=True) == (
        None,
        "confirm/panacea-defaults-seed1",
        [("cosine", "confirm/panacea-cosine")],
    )
    # docs/steering.md round 4 (~20:35 UTC): both 100-step trainings must pass
    both = {**at_100, "confirm/panacea-defaults-seed1": clean}
    assert study.choice(rows, "panacea", both, True) == (
        "Chosen for panacea (2 of the 12 rows it chooses among finished): "
        "defaults (0.300; loops at most 0.020 at 40 steps and "
        "in both 100-step trainings); passed over, looping more than 0.05 at some point: cosine 0.400 at 100 steps."
    )
    # cosine passes at seed 0 and loops at seed 1: passed over, named with the seed that looped
    seeds = {**both, "confirm/panacea-cosine": clean, "confirm/panacea-cosine-seed1": loops}
    assert study.ranking(rows, "panacea", seeds, confirm=True) == (
        "defaults",
        None,
        [("cosine", "confirm/panacea-cosine-seed1")],
    )
    assert study.choice(rows, "panacea", seeds, True).endswith("cosine 0.400 at 100 steps (seed 1).")
    # every training of both rows loops: the best is chosen, and the sentence says so
    looping = {row: loops for row in seeds}
    assert study.ranking(rows, "panacea", looping, confirm=True)[0] == "cosine"
    assert study.ranking(rows, "soups", checked, confirm=True)[1] == "confirm/soups-lr2e-3_beta0.1_steps40"
    assert study.ranking(rows, "soups", checked, confirm=False) == ("lr2e-3_beta0.1_steps40", None, [])


def test_a_row_whose_published_100_step_training_loops_is_passed_over_without_its_missing_40_step_answers(monkeypatch):
    """A row that loops in any published training cannot be the first row passing at 40 and at 100 steps
    (docs/steering.md round 4): the walk passes it over rather than waiting on (and retraining for) its 40-step
    answers."""
    study = _study(monkeypatch)
    clean, loops = [0.0, 0.01, 0.02], [0.0, 0.02, 0.40]
    rows = {"panacea/defaults": 0.30, "panacea/rpo1": 0.35}
    known = {"panacea/defaults": clean, "proxy/defaults": clean, "confirm/panacea-defaults-seed1": clean}
    # rpo1's 40-step answers are missing; its 100-step (proxy) row loops: passed over, defaults chosen
    assert study.ranking(rows, "panacea", {**known, "proxy/rpo1": loops}, confirm=True) == (
        "defaults",
        None,
        [("rpo1", "proxy/rpo1")],
    )
    # its 100-step row passes: its 40-step answers are still what the walk waits on
    assert study.ranking(rows, "panacea", {**known, "proxy/rpo1": clean}, confirm=True) == (None, "panacea/rpo1", [])
    # without the 100-step check the walk waits on its 40-step answers whatever its 100-step row says
    assert study.ranking(rows, "panacea", {**known, "proxy/rpo1": loops}, confirm=False) == (None, "panacea/rpo1", [])


PAIRS_SETTINGS = {"base_model": "b0", "sets": {"helpful/helpful-validation": {"beta": 0.1, "ids": "i1", "pairs": 256}}}
ANSWERS_SETTINGS = {"base_model": "b0", "decoding": {"max_new_tokens": 96}, "loop_detector": "l1", "prompts": {}}


def _document(hypervolume: float, shares: list[float] | None = None, **changes) -> dict:
    """A row's validation results as the study reads them: split, grid, the pairs' and answers' settings."""
    document = {
        "split": "validation",
        "grid": [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]],
        "scorers": {
            "pairs": {
                "settings": PAIRS_SETTINGS,
                "fronts": {"accuracy": {"metrics": {"hypervolume": hypervolume}}},
            }
        },
    }
    if shares is not None:
        generations = {"settings": ANSWERS_SETTINGS, "statistics": {"loops": {"values": shares}}}
        document["scorers"]["generations"] = generations
    document.update(changes)
    return document


def _published_rows(tmp_path, accuracy: dict[str, float], loops: dict[str, list[float]]) -> None:
    for row, hypervolume in accuracy.items():
        _write_row(tmp_path, row, _document(hypervolume, loops.get(row)))


def test_rows_measured_unlike_the_defaults_are_refused_before_the_choice_reads_them(monkeypatch, tmp_path):
    """The choice ranks hypervolumes and loop shares of every finished row: one scored on another split, other pairs,
    grid or decoding, or with a NaN loop share, stops the study (and the table) naming it; a β row's own β is not a
    difference."""
    study = _study_in(tmp_path, monkeypatch)
    clean = [0.0, 0.01, 0.0]
    _published_rows(tmp_path, {"panacea/defaults": 0.4, "panacea/cosine": 0.45}, {"panacea/defaults": clean})
    beta = _document(0.3, clean)
    beta["scorers"]["pairs"]["settings"] = {**PAIRS_SETTINGS, "sets": {
        "helpful/helpful-validation": {"beta": 0.3, "ids": "i1", "pairs": 256}}}  # fmt: skip
    _write_row(tmp_path, "panacea/beta0.3", beta)
    assert study.study_state()[0] == {"panacea/defaults": 0.4, "panacea/cosine": 0.45, "panacea/beta0.3": 0.3}
    other_pairs, other_decoding = _document(0.5), _document(0.5, clean)
    other_pairs["scorers"]["pairs"]["settings"] = {**PAIRS_SETTINGS, "sets": {
        "helpful/helpful-validation": {"beta": 0.1, "ids": "i2", "pairs": 256}}}  # fmt: skip
    other_decoding["scorers"]["generations"]["settings"] = {**ANSWERS_SETTINGS, "decoding": {"max_new_tokens": 64}}
    unlike = [
        (_document(0.5, split="test"), "panacea/lr1e-3: scored on split 'test'"),
        (other_pairs, "panacea/lr1e-3: scored on other pairs settings than panacea/defaults (sets differ)"),
        (_document(0.5, grid=[[1.0, 0.0], [0.0, 1.0]]), "other pairs settings than panacea/defaults (grid differ)"),
        (other_decoding, "other answers settings than panacea/defaults (decoding differ)"),
        (_document(0.5, [0.0, float("nan"), 0.0]), "panacea/lr1e-3: its loop shares [0.0, nan, 0.0] are not one"),
    ]
    for document, message in unlike:
        _write_row(tmp_path, "panacea/lr1e-3", document)
        with pytest.raises(SystemExit, match=re.escape(message)):
            study.study_state()
        records = [{"row": row, "results": str(tmp_path / "published" / row / "results.json")}
                   for row in ("panacea/defaults", "panacea/lr1e-3")]  # fmt: skip
        with pytest.raises(SystemExit, match=re.escape(message)):  # the table reads the same rows
            study.rows_table(records)
        shutil.rmtree(tmp_path / "published" / "panacea/lr1e-3")


def _write_row(tmp_path, row: str, document: dict) -> None:
    results = tmp_path / "published" / row / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps(document))
    (results.parent / "row.json").write_text(json.dumps({"row": row, "results": str(results)}))


def test_a_100_step_check_is_due_only_once_every_40_step_row_of_its_method_is_finished_and_trains_it(
    monkeypatch, tmp_path
):
    study = _study_in(tmp_path, monkeypatch)
    clean, looping = [0.0, 0.01, 0.0], [0.0, 0.3, 0.0]
    accuracy = {"panacea/defaults": 0.40, "panacea/cosine": 0.45, "proxy/defaults": 0.5}
    _published_rows(tmp_path, accuracy, {"panacea/defaults": clean, "panacea/cosine": clean, "proxy/defaults": looping})
    # proxy/defaults loops where panacea/defaults does not: confirmation needed, but 16 40-step rows have not run
    assert study.loop_carry(study.study_state()[1]) is False and study.loop_checks_due() == []
    others = {f"panacea/{name}": 0.1 for name in study.PANACEA if name not in ("defaults", "cosine", "steps80")}
    _published_rows(tmp_path, others, {})
    assert study.loop_checks_due() == ["confirm/panacea-cosine"]  # cosine's 100-step row, before the rest's loops
    trained = []
    monkeypatch.setattr(study, "run_row", lambda row, generations=False: trained.append((row, generations)))
    study.check_loops(set(), {})
    assert trained == [("confirm/panacea-cosine", True)]  # not finished: trained, with its answers


def test_soups_best_row_is_confirmed_at_100_steps_once_its_last_40_step_row_finishes(monkeypatch, tmp_path):
    """Where the study stands on 2026-12-07 (a review asked for it): the 100-step check is required (proxy/defaults
    loops where panacea/defaults does not), soups' best row passes at 40 steps, and its confirmation is due only once
    the last of soups' 19 40-step rows is finished; a loop share of exactly 0.05 passes."""
    study = _study_in(tmp_path, monkeypatch)
    clean, edge = [0.0, 0.01, 0.0], [0.0, 0.05, 0.0]
    soups = [f"soups/{name}" for name in study.SOUPS if not study.budget_binds("soups", name)]
    best, last = "soups/lr1.5e-3_beta0.1_steps40", "soups/lr2e-2_beta0.3_steps40"
    accuracy = {name: 0.1 for name in soups if name != last} | {
        best: 0.4,
        "panacea/defaults": 0.4,
        "proxy/defaults": 0.4,
    }
    loops = {best: edge, "panacea/defaults": clean, "proxy/defaults": [0.0, 0.06, 0.0]}
    _published_rows(tmp_path, accuracy, loops)
    assert study.loop_carry(study.study_state()[1]) is False
    assert "confirm/soups-lr1.5e-3_beta0.1_steps40" not in study.loop_checks_due()  # one soups row still to run
    _published_rows(tmp_path, {last: 0.1}, {})
    assert "confirm/soups-lr1.5e-3_beta0.1_steps40" in study.loop_checks_due()
    assert study.confirm_refused("confirm/soups-lr1.5e-3_beta0.1_steps40") is None


def test_the_proxy_rows_answers_and_their_40_step_rows_are_scored_while_the_carry_is_undecided(monkeypatch, tmp_path):
    study = _study_in(tmp_path, monkeypatch)
    accuracy = {"panacea/defaults": 0.40, "panacea/lr1e-3": 0.3, "proxy/defaults": 0.5, "proxy/lr1e-3": 0.4}
    _published_rows(tmp_path, accuracy, {"panacea/defaults": [0.5] * 3, "proxy/lr1e-3": [0.0, 0.3, 0.0]})
    # proxy/defaults has no answers; proxy/lr1e-3 loops and panacea/lr1e-3 is unchecked; defaults loops (best row)
    # is passed over, so lr1e-3 is also what panacea's choice waits on
    assert study.loop_checks_due() == ["proxy/defaults", "panacea/lr1e-3"]
    shutil.rmtree(tmp_path / "published")
    _published_rows(tmp_path, accuracy, {"panacea/defaults": [0.0] * 3, "proxy/lr1e-3": [0.0, 0.3, 0.0]})
    # now defaults does not loop and is panacea's choice: lr1e-3's 40-step answers are due for the carry alone
    assert study.ranking(study.study_state()[0], "panacea", study.study_state()[1])[0] == "defaults"
    assert study.loop_checks_due() == ["proxy/defaults", "panacea/lr1e-3"]


def test_generations_on_a_finished_row_score_its_answers_and_publish_it_again(monkeypatch, tmp_path):
    """`--only ROW --generations` on a row finished without generations scores them (pairs from the cache) and
    publishes the row again; a row that has them is skipped; without its weights in runs/ it stops, saying so."""
    study = _study_in(tmp_path, monkeypatch)
    row, calls = "panacea/rpo1", []
    run = tmp_path / "study" / row / "run"
    results = run / "eval-validation" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"scorers": {"pairs": {"points": []}}}))
    (tmp_path / "study" / row / "row.json").write_text(json.dumps({"row": row, "results": str(results)}))

    def evaluate(folder, **options):
        calls.append(options["scorers"])
        loops = {"statistics": {"loops": {"values": [0.0, 0.1, 0.0]}}}
        results.write_text(json.dumps({"scorers": {"pairs": {"points": []}, "generations": loops}}))

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


def test_a_published_row_whose_weights_went_with_a_machine_is_trained_again_for_its_answers(monkeypatch, tmp_path):
    """The walk needed the answers of a 40-step row published on a machine since replaced (rows are published without
    weights): it stopped there for good. Its settings and seed are trained again, only the answers are scored and
    published beside the row, and its pairs numbers (the ranking) stay the published ones."""
    study = _study_in(tmp_path, monkeypatch)
    row = "soups/lr5e-4_beta0.1_steps40"
    _published_rows(tmp_path, {"panacea/defaults": 0.40, row: 0.42}, {"panacea/defaults": [0.0, 0.0, 0.0]})
    trained, scored = [], []

    def train_soups(config, resume):
        trained.append((config.output_dir, config.learning_rate, config.seed, config.max_steps, resume))
        (Path(config.output_dir) / "manifest.json").parent.mkdir(parents=True, exist_ok=True)
        (Path(config.output_dir) / "manifest.json").write_text("{}")
        (Path(config.output_dir) / "log.jsonl").write_text("{}\n")

    def evaluate(folder, **options):
        scored.append((Path(folder), options["scorers"], options["split"]))
        results = Path(folder) / "eval-validation" / "ab" / "results.json"
        results.parent.mkdir(parents=True)
        answers = _document(0.99, [0.0, 0.02, 0.04])  # pairs it would not score: never read
        results.write_text(json.dumps({**answers, "adapter_digest": "d2"}))

    monkeypatch.setattr(study, "train_soups", train_soups)
    monkeypatch.setattr(study, "evaluate_path", evaluate)
    record = study.score_generations(row)
    folder = tmp_path / "study" / row / "retrained"
    assert trained == [(str(folder), 5e-4, 0, 40, True)]
    assert scored == [(folder, ["generations"], "validation")]
    published = tmp_path / "published" / row
    assert json.loads((published / "row.json").read_text()) == record
    assert Path(record["answers"]) == published / "retrained" / "eval-validation" / "ab" / "results.json"
    assert (published / "retrained" / "log.jsonl").is_file() and "second training" in record["answers_note"]
    hypervolumes, loops = study.study_state()
    assert hypervolumes[row] == 0.42 and loops[row] == [0.0, 0.02, 0.04] and study.has_generations(row)
    assert study.score_generations(row) == record and len(trained) == 1  # scored: not trained again


def test_the_full_run_scores_the_answers_its_choice_waits_on_until_a_row_does_not_loop(monkeypatch, tmp_path):
    """Before each row (and at the end) the study scores the answers of each method's best unchecked row; when that
    row loops, the next best is due and scored too; a row without weights here is reported once and left."""
    study = _study_in(tmp_path, monkeypatch)
    accuracy = {
        "panacea/defaults": 0.40,
        "panacea/lr1e-3": 0.45,
        "panacea/rpo1": 0.30,
        "soups/lr1e-3_beta0.1_steps40": 0.5,
        "soups/lr2e-3_beta0.1_steps40": 0.3,
    }
    loops = {"panacea/lr1e-3": [0.0, 0.2, 0.0], "panacea/defaults": [0.0, 0.01, 0.02]}
    _published_rows(tmp_path, accuracy, {})
    scored = []

    def score(row):
        if row == "soups/lr1e-3_beta0.1_steps40":
            raise SystemExit(f"{row}: its weights are not in runs/")
        if row.startswith("soups/"):  # any other failure (a damaged weights file) is reported alike
            raise FileNotFoundError(f"{row}: adapter_model.safetensors")
        scored.append(row)
        results = tmp_path / "published" / row / "results.json"
        document = json.loads(results.read_text())
        document["scorers"]["generations"] = {"statistics": {"loops": {"values": loops[row]}}}
        results.write_text(json.dumps(document))

    monkeypatch.setattr(study, "score_generations", score)
    unavailable, failed = set(), {}
    study.check_loops(unavailable, failed)
    assert scored == ["panacea/lr1e-3", "panacea/defaults"] and "soups/lr1e-3_beta0.1_steps40" in unavailable
    assert list(failed) == ["soups/lr1e-3_beta0.1_steps40"] and "weights are not in runs/" in failed[list(failed)[0]]
    study.check_loops(unavailable, failed)  # nothing due any more, and the soups row is not tried again
    assert scored == ["panacea/lr1e-3", "panacea/defaults"] and len(failed) == 1
    shutil.rmtree(tmp_path / "published" / "soups/lr1e-3_beta0.1_steps40")
    study.check_loops(unavailable := set(), failed := {})  # the next soups row fails otherwise: reported, goes on
    assert unavailable == {"soups/lr2e-3_beta0.1_steps40"} == set(failed)


def test_the_100_step_proxy_rows_score_their_answers_and_the_40_step_rows_only_when_asked(monkeypatch, tmp_path):
    study = _study_in(tmp_path, monkeypatch)
    monkeypatch.setattr(study, "rows_table", lambda records: "")
    runs = []
    monkeypatch.setattr(study, "run_row", lambda row, generations=False: runs.append((row, generations)))
    assert study.main(["--only", "proxy/defaults", "panacea/cosine"]) == 0
    assert runs == [("proxy/defaults", True), ("panacea/cosine", False)]


def test_answers_scored_again_are_not_published_over_a_row_whose_weights_or_pairs_numbers_differ(monkeypatch, tmp_path):
    study = _study_in(tmp_path, monkeypatch)
    row = "panacea/rpo1"
    run = tmp_path / "study" / row / "run"
    (run / "adapter").mkdir(parents=True)
    results = run / "eval-validation" / "results.json"
    results.parent.mkdir()
    points = [{"objectives": {"helpful": 0.5, "harmless": 0.25}}]
    document = {"adapter_digest": "aa", "scorers": {"pairs": {"points": points}}}
    results.write_text(json.dumps(document))
    (tmp_path / "study" / row / "row.json").write_text(json.dumps({"row": row, "results": str(results)}))
    study.publish_row(row)
    published = (tmp_path / "published" / row / "run" / "eval-validation" / "results.json").read_text()
    rescored = {"adapter_digest": "aa", "scorers": {"pairs": {"points": points}, "generations": {}}}
    monkeypatch.setattr(study, "evaluate_path", lambda folder, **options: results.write_text(json.dumps(rescored)))
    for changed, problem in (
        ({"adapter_digest": "bb"}, "its weights in runs/ are others"),
        ({"scorers": {"pairs": {"points": [{"objectives": {"helpful": 0.5, "harmless": 0.5}}]}}}, "its pairs were"),
    ):
        rescored.update(changed)
        with pytest.raises(SystemExit, match=f"{row}: not published again: {problem}"):
            study.score_generations(row)
        assert (tmp_path / "published" / row / "run" / "eval-validation" / "results.json").read_text() == published
        rescored.update({"adapter_digest": "aa", "scorers": {"pairs": {"points": points}, "generations": {}}})
    study.score_generations(row)  # the same weights and pairs numbers: published with its answers
    assert "generations" in (tmp_path / "published" / row / "run" / "eval-validation" / "results.json").read_text()


def test_a_row_another_process_works_on_is_refused_and_an_interrupted_publication_leaves_the_old_one(
    monkeypatch, tmp_path
):
    import fcntl

    study = _study_in(tmp_path, monkeypatch)
    row = "panacea/cosine"
    (tmp_path / "study" / row).mkdir(parents=True)
    with open(tmp_path / "study" / row / ".lock", "w") as other:  # another process's hold on the row
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SystemExit, match="another process is working on it"), study.row_lock(row):
            pass
    with study.row_lock(row):  # released: taken
        pass
    run = tmp_path / "study" / row / "run"
    for name, text in (("config.yaml", "old"), ("log.jsonl", "old")):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    (tmp_path / "study" / row / "row.json").write_text(json.dumps({"row": row, "results": str(run / "x.json")}))
    study.publish_row(row)
    for name in ("config.yaml", "log.jsonl"):
        (run / name).write_text("new")
    writes = []

    def write_text(path, text):
        writes.append(path)
        if len(writes) == 2:
            raise KeyboardInterrupt  # killed halfway through publishing
        Path(path).write_text(text)

    monkeypatch.setattr(study, "write_text", write_text)
    with pytest.raises(KeyboardInterrupt):
        study.publish_row(row)
    published = tmp_path / "published" / row / "run"
    assert [(published / name).read_text() for name in ("config.yaml", "log.jsonl")] == ["old", "old"]


def test_a_row_whose_definition_changed_after_it_ran_is_refused(monkeypatch, tmp_path):
    study = _study_in(tmp_path, monkeypatch)
    row = "panacea/lr1e-3"
    record = tmp_path / "published" / row / "row.json"
    record.parent.mkdir(parents=True)
    ran = [*study.PROTOCOL, *study.PANACEA["lr1e-3"].overrides]
    record.write_text(json.dumps({"row": row, "overrides": ran}))
    assert study.finished_record(row)["overrides"] == ran
    monkeypatch.setitem(study.PANACEA, "lr1e-3", study.Setting("learning rate 1e-3", ["learning_rate=1.5e-3"]))
    with pytest.raises(SystemExit, match=r"panacea/lr1e-3: .* ran with the overrides .*learning_rate=1e-3.* give new"):
        study.finished_record(row)


def test_rows_are_refused_once_the_base_config_differs_from_the_one_the_published_rows_trained_on(
    monkeypatch, tmp_path, capsys
):
    """Its base (a frozen copy of configs/hh-2d.yaml, where the chosen settings go) edited: a row trained after that
    would belong to another study. Running rows is refused, naming the fields; the table still prints."""
    monkeypatch.chdir(ROOT)
    study = _study_in(tmp_path, monkeypatch)
    recorded = tmp_path / "published" / "panacea" / "defaults" / "run" / "config.yaml"
    recorded.parent.mkdir(parents=True)
    shutil.copy(ROOT / "docs/results/validation-study/panacea/defaults/run/config.yaml", recorded)
    assert study.base_changes() == (recorded, [])  # the checkout's base is the one the study ran on
    base = yaml.safe_load((ROOT / study.BASE_CONFIG).read_text())
    base["learning_rate"] = 1e-3  # e.g. a tuned default written into it
    (tmp_path / "hh-2d.yaml").write_text(yaml.safe_dump(base))
    monkeypatch.setattr(study, "BASE_CONFIG", str(tmp_path / "hh-2d.yaml"))
    monkeypatch.setattr(study, "study_row", lambda *args, **kwargs: pytest.fail("a row ran"))
    with pytest.raises(SystemExit) as refused:
        study.main(["--only", "panacea/lr1e-3"])
    assert refused.value.code == 2 and "differs from the study's base" in (error := capsys.readouterr().err)
    assert "['learning_rate']" in error
    assert study.main(["--table"]) == 0
    # a full run that started before the file changed: its next row is refused before it trains
    with pytest.raises(ValueError, match=r"row soups/lr2e-3_beta0\.1_steps40: .* differs from the study's base"):
        study.study_config("soups", "lr2e-3_beta0.1_steps40")


def test_two_full_runs_share_the_rows_a_busy_one_is_passed_by_the_full_run_and_refused_with_only(
    monkeypatch, tmp_path, capsys
):
    import fcntl

    study = _study_in(tmp_path, monkeypatch)
    busy, free = "panacea/cosine", "panacea/beta0.3"
    monkeypatch.setattr(study, "PRIORITY", [busy, free])
    monkeypatch.setattr(study, "check_loops", lambda unavailable, failed: None)
    monkeypatch.setattr(study, "rows_table", lambda records: "")
    trained = []

    def run_row(row, generations=False):
        with study.row_lock(row):
            trained.append(row)

    monkeypatch.setattr(study, "run_row", run_row)
    (tmp_path / "study" / busy).mkdir(parents=True)
    with open(tmp_path / "study" / busy / ".lock", "w") as other:  # the other full run trains `busy`
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert study.main([]) == 0
        assert trained == [free]
        assert f"{busy}: another process is working on it" in capsys.readouterr().out
        with pytest.raises(study.RowBusy, match="another process is working on it"):
            study.main(["--only", busy])
    assert study.main(["--only", busy]) == 0 and trained == [free, busy]  # released: trained


def test_a_due_row_another_process_holds_is_retried_by_the_next_loop_check(monkeypatch, tmp_path):
    import fcntl

    study = _study_in(tmp_path, monkeypatch)
    row = "confirm/panacea-cosine"
    monkeypatch.setattr(study, "loop_checks_due", lambda: [row])
    monkeypatch.setattr(study, "finished_record", lambda name: None)
    tried = []

    def run_row(name, generations=False):  # as the real one: the lock first
        tried.append(name)
        with study.row_lock(name):
            pass

    monkeypatch.setattr(study, "run_row", run_row)
    (tmp_path / "study" / row).mkdir(parents=True)
    unavailable: set[str] = set()
    with open(tmp_path / "study" / row / ".lock", "w") as other:  # the other full run trains it
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        study.check_loops(unavailable, failed := {})  # passed by, once, and not marked unavailable nor failed
        assert tried == [row] and unavailable == set() and failed == {}
    study.check_loops(unavailable, failed)  # the other process died or finished: the next call tries the row again
    assert tried == [row, row] and unavailable == {row}


def test_a_row_finished_by_another_process_meanwhile_is_not_trained_again(monkeypatch, tmp_path):
    study = _study_in(tmp_path, monkeypatch)
    row = "panacea/cosine"
    _published_rows(tmp_path, {row: 0.4}, {})
    monkeypatch.setattr(study, "train", lambda *args, **kwargs: pytest.fail("trained a finished row"))
    assert study.run_row(row)["row"] == row


def test_a_100_step_row_runs_by_hand_only_once_every_40_step_row_is_finished_and_its_first_training_passed(
    monkeypatch, tmp_path, capsys
):
    study = _study_in(tmp_path, monkeypatch)
    row = "confirm/panacea-cosine-seed1"
    for confirm in ("confirm/panacea-cosine", row):  # the ranking that makes them due can still change
        with pytest.raises(SystemExit):
            study.main(["--only", confirm])
        assert (
            f"{confirm}: not due yet: 12 of the 12 rows panacea chooses among are unfinished" in capsys.readouterr().err
        )
    forty = [f"panacea/{name}" for name in study.PANACEA if not study.budget_binds("panacea", name)]
    clean, looping = [0.0, 0.01, 0.0], [0.0, 0.2, 0.0]
    # the best row (cosine) passes at 40 steps and proxy/defaults loops where panacea/defaults does not: the choice
    # waits on cosine's 100-step training
    accuracy = {name: 0.1 for name in forty} | {"panacea/cosine": 0.5, "proxy/defaults": 0.3}
    loops = {"panacea/cosine": clean, "panacea/defaults": clean, "proxy/defaults": looping}
    _published_rows(tmp_path, {name: value for name, value in accuracy.items() if name != forty[-1]}, loops)
    assert study.confirm_refused("confirm/panacea-cosine").startswith(
        f"confirm/panacea-cosine: not due yet: 1 of the 12 rows panacea chooses among are unfinished ({forty[-1]})"
    )
    _published_rows(tmp_path, {forty[-1]: 0.1}, {})
    assert study.confirm_refused("confirm/panacea-cosine") is None
    with pytest.raises(SystemExit):
        study.main(["--only", row])
    assert "its seed-0 training confirm/panacea-cosine has no scored answers yet" in capsys.readouterr().err
    _published_rows(tmp_path, {"confirm/panacea-cosine": 0.4}, {"confirm/panacea-cosine": looping})
    with pytest.raises(SystemExit):
        study.main(["--only", row])
    assert "loops 0.200 > 0.05: passed over" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "published/confirm")
    _published_rows(tmp_path, {"confirm/panacea-cosine": 0.4}, {"confirm/panacea-cosine": clean})
    assert study.confirm_refused(row) is None
    soups = [f"soups/{name}" for name in study.SOUPS if not study.budget_binds("soups", name)]
    _published_rows(tmp_path, {name: 0.1 for name in soups}, {})
    assert study.confirm_refused("confirm/soups-lr2e-3_beta0.1_steps40-seed1").startswith(
        "confirm/soups-lr2e-3_beta0.1_steps40-seed1: its seed-0 training confirm/soups-lr2e-3_beta0.1_steps40 has"
    )


def test_a_hand_run_trains_only_the_confirmation_row_the_choice_waits_on(monkeypatch, tmp_path, capsys):
    """docs/steering.md round 4: the study trains a confirmation row "when the choice waits on it"; `--only` accepted
    any row of a finished method whose seed-0 twin passed, e.g. a lower row's second training (hours of a core
    published outside the walk). A finished row still runs (its answers are scored, nothing is trained)."""
    study = _study_in(tmp_path, monkeypatch)
    forty = [f"panacea/{name}" for name in study.PANACEA if not study.budget_binds("panacea", name)]
    clean = [0.0, 0.01, 0.0]
    accuracy = {name: 0.1 for name in forty} | {"panacea/cosine": 0.5, "panacea/lr1e-3": 0.4, "proxy/lr1e-3": 0.4}
    loops = {row: clean for row in ("panacea/cosine", "panacea/lr1e-3", "proxy/lr1e-3", "panacea/defaults")}
    _published_rows(tmp_path, accuracy, loops)  # the 100-step check not required (nothing says the check fails)
    assert study.confirm_refused("confirm/panacea-cosine") == (
        "confirm/panacea-cosine: the choice does not wait on it (whether the 100-step check is required is not decided "
        "yet); the study "
        "trains a confirmation row only when it does"
    )
    _published_rows(tmp_path, {"proxy/defaults": 0.3}, {"proxy/defaults": [0.0, 0.2, 0.0]})  # required now
    assert study.confirm_refused("confirm/panacea-cosine") is None  # the best row's first 100-step training
    for other in ("confirm/panacea-lr1e-3-seed1", "confirm/panacea-diag3"):  # passed at seed 0 / lower rows
        assert study.confirm_refused(other) == (
            f"{other}: the choice does not wait on it (it waits on confirm/panacea-cosine); the study trains a "
            "confirmation row only when it does"
        )
        with pytest.raises(SystemExit):
            study.main(["--only", other])
        assert "the choice does not wait on it" in capsys.readouterr().err
    _published_rows(tmp_path, {"confirm/panacea-diag3": 0.4}, {"confirm/panacea-diag3": clean})
    assert study.confirm_refused("confirm/panacea-diag3") is None  # finished: its answers may be scored again


def test_aggregator_rows_are_not_chosen_and_exact_ties_follow_the_run_order(monkeypatch):
    """docs/steering.md round 4 (amended 2026-12-07 ~11:40 UTC): an aggregator replaces LS and Tchebycheff, so its
    rows say whether acting helps and are never chosen, nor confirmed at 100 steps; an exact tie between two rows
    that are not the defaults goes to the earlier row in PRIORITY, whatever order the rows are read in."""
    study = _study(monkeypatch)
    aggregators = [name for name, row in study.PANACEA.items() if any("aggregator=" in o for o in row.overrides)]
    assert sorted(aggregators) == ["cagrad", "clipped_cagrad", "mgda", "normalized", "pcgrad", "plc", "plc_tau_inf"]
    assert "groups4" not in aggregators and study.candidate("panacea", "groups4")  # LS on the aggregators' layout
    rows = {"panacea/defaults": 0.3, "panacea/clipped_cagrad": 0.9, "panacea/mgda": 0.8, "panacea/lr1e-3": 0.4}
    clean = {row: [0.0] * 3 for row in rows}
    assert study.ranking(rows, "panacea", clean) == ("lr1e-3", None, [])
    assert study.ranking(rows, "panacea", {}) == (None, "panacea/lr1e-3", [])  # the aggregators' answers not needed
    assert not [row for row in study.CONFIRM_ROWS if row.split("-", 1)[1].removesuffix("-seed1") in aggregators]
    tie = ["panacea/groups4", "panacea/cosine", "panacea/defaults"]  # groups4 and cosine tie above the defaults
    first = min(tie[:2], key=study.PRIORITY.index).split("/")[1]
    for order in (tie, tie[::-1]):
        hypervolumes = {row: 0.2 if row == "panacea/defaults" else 0.4 for row in order}
        assert study.ranking(hypervolumes, "panacea", {row: [0.0] * 3 for row in order})[0] == first


def test_the_reward_models_and_base_answers_the_study_computed_are_kept_whole(tmp_path, monkeypatch):
    """keep_eval_cache: what panacea's cache gained since the study started goes to the seed folder (read back through
    $PANACEA_CACHE_SEEDS on a fresh machine); what was there before, and a reward model still being written (no
    metadata yet), is not copied."""
    study = _study(monkeypatch)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    cache = study.cache_dir()
    for name in ("reward-models/helpful-old/reward_model.json", "base-answers/old.json", "base-rewards/old.json"):
        (cache / name).parent.mkdir(parents=True, exist_ok=True)
        (cache / name).write_text("{}")
    before = seeded_entries(cache)
    assert before == {"reward-models/helpful-old", "base-answers/old.json", "base-rewards/old.json"}
    for name, text in (
        ("reward-models/harmless-new/reward_model.safetensors", "weights"),
        ("reward-models/harmless-new/reward_model.json", "{}"),
        ("reward-models/helpful-half/reward_model.safetensors", "weights"),  # being written
        ("base-answers/new.json", '{"answers": []}'),
        ("base-rewards/new.json", '{"rewards": {}}'),
    ):
        (cache / name).parent.mkdir(parents=True, exist_ok=True)
        (cache / name).write_text(text)
    (cache / "reward-models/.harmless-other.tmp-1234").mkdir()  # another process's staging copy: not an entry
    (cache / "reward-models/.harmless-other.tmp-1234/reward_model.json").write_text("{}")
    seed = tmp_path / "eval-seed"
    assert study.keep_eval_cache(before, seed) == [
        "base-answers/new.json",
        "base-rewards/new.json",
        "reward-models/harmless-new",
    ]
    kept = sorted(str(path.relative_to(seed)) for path in seed.rglob("*") if path.is_file())
    assert kept == [
        "base-answers/new.json",
        "base-rewards/new.json",
        "reward-models/harmless-new/reward_model.json",
        "reward-models/harmless-new/reward_model.safetensors",
    ]
    assert (seed / "base-answers/new.json").read_text() == '{"answers": []}'
    assert study.keep_eval_cache(before, seed) == []  # kept already


def test_what_the_cache_held_when_the_study_first_started_is_recorded_across_an_interrupt(tmp_path, monkeypatch):
    """An entry computed by a row that was then interrupted is still kept by the next start: the record of what was
    there before is on disk, not in the interrupted process."""
    study = _study_in(tmp_path, monkeypatch)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    (tmp_path / "cache/base-answers").mkdir(parents=True)
    (tmp_path / "cache/base-answers/old.json").write_text("{}")
    assert study.eval_cache_before() == {"base-answers/old.json"}
    (tmp_path / "cache/base-answers/computed-then-killed.json").write_text("{}")
    assert study.eval_cache_before() == {"base-answers/old.json"}  # the restart reads the first record
    assert study.keep_eval_cache(study.eval_cache_before()) == ["base-answers/computed-then-killed.json"]


def test_the_cache_record_outlives_a_full_run_that_ends_while_another_still_works(tmp_path, monkeypatch):
    """The first of two full runs to end deleted the record while the second still trained: a restart of the
    second then took what it had computed for the cache as there before, and did not keep it."""
    import fcntl

    study = _study_in(tmp_path, monkeypatch)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(study, "PRIORITY", [])
    monkeypatch.setattr(study, "base_changes", lambda: (None, []))
    monkeypatch.setattr(study, "check_loops", lambda unavailable, failed: None)
    monkeypatch.setattr(study, "rows_table", lambda records: "")
    record = tmp_path / "study" / "eval-cache-before.json"
    (tmp_path / "study").mkdir()
    with open(tmp_path / "study" / ".full-run.lock", "a") as other:  # the other full run, still working
        fcntl.flock(other, fcntl.LOCK_SH)
        assert study.main([]) == 0 and record.is_file()
    assert study.main([]) == 0 and not record.is_file()  # the last to end starts the next record afresh


def test_the_table_gives_each_rows_own_win_probability_only_where_its_pairs_were_scored_as_the_defaults(monkeypatch):
    study = _study(monkeypatch)

    def document(beta: float, hypervolume: float) -> dict:
        sets = {"helpful/helpful-validation": {"beta": beta, "ids": "x", "pairs": 256}}
        fronts = {"win_probability": {"metrics": {"hypervolume": hypervolume}}}
        return {"scorers": {"pairs": {"settings": {"sets": sets}, "fronts": fronts}}}

    reference = document(0.1, 0.3)["scorers"]["pairs"]["settings"]
    assert study._win_probability(document(0.1, 0.3127), reference) == "0.313"  # its own, not the defaults'
    assert study._win_probability(document(0.3, 0.346), reference) == "- (β or pairs differ)"  # β changes the measure


def test_the_aggregator_note_pairs_each_aggregator_row_with_ls_on_its_own_layout(monkeypatch):
    """On the published rows: MGDA against `panacea/groups4` (the paired interval `panacea compare --baseline`
    gives, −0.0314 [−0.0830, +0.0238]); the defaults row, not on the λ-group layout, is left out."""
    study = _study(monkeypatch)
    published = ROOT / "docs/results/validation-study/panacea"

    def document(name: str) -> dict:
        record = json.loads((published / name / "row.json").read_text())
        return {**json.loads((ROOT / record["results"]).read_text()), "label": record["row"]}

    rows = [document(name) for name in ("defaults", "groups4", "mgda")]
    note = study.aggregator_note(rows)
    assert note == (
        "Aggregators against panacea/groups4 (LS on their λ-group layout; paired): mgda -0.031 [-0.083, +0.024] tie."
    )
    assert study.aggregator_note([rows[0], rows[2]]) is None  # no baseline yet
    assert study.aggregator_note(rows[:2]) is None  # no aggregator row yet


def test_a_due_row_whose_answers_cannot_be_scored_makes_the_full_run_exit_1_naming_it(monkeypatch, tmp_path, capsys):
    """A row the choice waits on whose answers failed (its weights gone with a machine, a crash in its training) was
    reported in passing and the run still ended with status 0, as if the choice could go on."""
    study = _study_in(tmp_path, monkeypatch)
    monkeypatch.setattr(study, "PRIORITY", ["panacea/defaults"])
    monkeypatch.setattr(study, "base_changes", lambda: (None, []))
    monkeypatch.setattr(study, "study_row", lambda row, generations=False: None)
    monkeypatch.setattr(study, "rows_table", lambda records: "")
    due = ["confirm/panacea-cosine"]
    monkeypatch.setattr(study, "loop_checks_due", lambda: list(due))
    monkeypatch.setattr(study, "finished_record", lambda row: None)

    def run_row(row, generations=False):
        raise RuntimeError("killed at step 7")

    monkeypatch.setattr(study, "run_row", run_row)
    assert study.main([]) == 1
    assert capsys.readouterr().out.rstrip().endswith("- confirm/panacea-cosine: RuntimeError('killed at step 7')")
    due.clear()
    assert study.main([]) == 0


def test_a_row_that_fails_in_a_full_run_is_reported_and_the_run_goes_on(monkeypatch, tmp_path, capsys):
    """One row's error (a bad file, a crash in its training) must not end the other rows of a full run; the run ends
    with exit status 1 and names it. With --only the error is raised as it is."""
    study = _study_in(tmp_path, monkeypatch)
    monkeypatch.setattr(study, "PRIORITY", ["panacea/defaults", "panacea/cosine", "panacea/lr1e-3"])
    monkeypatch.setattr(study, "base_changes", lambda: (None, []))
    monkeypatch.setattr(study, "check_loops", lambda unavailable, failed: None)
    monkeypatch.setattr(study, "rows_table", lambda records: "")
    ran = []

    def study_row(row, generations=False):
        ran.append(row)
        if row == "panacea/cosine":
            raise ValueError("data/helpful.jsonl.gz:17: bad row")

    monkeypatch.setattr(study, "study_row", study_row)
    assert study.main([]) == 1 and ran == study.PRIORITY
    out = capsys.readouterr().out
    assert "panacea/cosine: not finished: ValueError('data/helpful.jsonl.gz:17: bad row'); going on" in out
    assert out.rstrip().endswith("- panacea/cosine: ValueError('data/helpful.jsonl.gz:17: bad row')")
    with pytest.raises(ValueError, match="bad row"):
        study.main(["--only", "panacea/cosine"])


def test_an_unfinished_rows_training_is_saved_and_continued_on_a_fresh_machine(monkeypatch, tmp_path, capsys):
    """runs/ does not survive a machine change, and a 100-step row takes ~2 h of a core: `--save-training` keeps the
    newest checkpoint (and a soups run's finished members) in PUBLISHED/ROW/resume/, the next run on a fresh machine
    puts it back before training resumes, and publishing the finished row drops it."""
    study = _study_in(tmp_path, monkeypatch)
    row = "confirm/soups-lr1.5e-3_beta0.1_steps40"
    run = tmp_path / "study" / row / "run"
    (run / "soups" / "helpful" / "adapter").mkdir(parents=True)  # a finished member
    (run / "soups" / "helpful" / "adapter" / "adapter_model.safetensors").write_text("helpful weights")
    for step in (30, 40):  # the member in training: only its newest complete checkpoint is kept
        checkpoint = run / "soups" / "harmless" / "checkpoints" / f"step-{step}"
        (checkpoint / "adapter").mkdir(parents=True)
        (checkpoint / "trainer_state.json").write_text(f'{{"step": {step}}}')
        (checkpoint / "adapter" / "adapter_model.safetensors").write_text(f"step {step}")
    (run / "soups" / "harmless" / "checkpoints" / "step-50").mkdir()  # being written: no trainer state yet
    (run / "manifest.json").write_text("{}")
    (run / "soups" / "harmless" / "config.yaml").write_text(f"train: [{{path: {Path.cwd()}/data/harmless.jsonl.gz}}]")
    (run / "soups" / "harmless" / "log.jsonl").write_text('{"step": 40}\n')
    early = tmp_path / "study" / "confirm/panacea-lr1e-3-seed1" / "run"
    early.mkdir(parents=True)
    (early / "log.jsonl").write_text('{"step": 3}\n')  # no checkpoint yet: nothing to continue from
    assert study.main(["--save-training"]) == 0
    assert not (tmp_path / "published" / "confirm/panacea-lr1e-3-seed1").exists()
    assert f"{row}: saved in" in capsys.readouterr().out
    saved = tmp_path / "published" / row / "resume"
    assert sorted(str(path.relative_to(saved)) for path in saved.rglob("*") if path.is_file()) == [
        "manifest.json",
        "soups/harmless/checkpoints/step-40/adapter/adapter_model.safetensors",
        "soups/harmless/checkpoints/step-40/trainer_state.json",
        "soups/harmless/config.yaml",
        "soups/harmless/log.jsonl",
        "soups/helpful/adapter/adapter_model.safetensors",
    ]
    assert (saved / "soups/harmless/config.yaml").read_text() == "train: [{path: data/harmless.jsonl.gz}]"
    shutil.rmtree(tmp_path / "study")  # a fresh machine
    seen = []
    monkeypatch.setattr(study, "study_config", lambda method, name: SimpleNamespace(method="soups"))
    monkeypatch.setattr(study, "train_soups", lambda config, resume: seen.append(sorted(
        str(path.relative_to(run)) for path in run.rglob("*") if path.is_file())))  # fmt: skip
    monkeypatch.setattr(study, "score_row", lambda row, generations: pytest.fail("stop after training"))
    with pytest.raises(pytest.fail.Exception, match="stop after training"):
        study.run_row(row)
    assert seen == [sorted(str(path.relative_to(saved)) for path in saved.rglob("*") if path.is_file())]
    assert "continues from the training saved in" in capsys.readouterr().out
    (tmp_path / "study" / row / "row.json").write_text(json.dumps({"results": str(run / "eval-validation/x.json")}))
    study.publish_row(row)
    assert not saved.exists()  # published: the save goes


def test_a_retraining_for_answers_is_saved_and_continued_on_a_fresh_machine(monkeypatch, tmp_path, capsys):
    """A finished row retrained for its answers (its weights gone with a machine) is an unfinished training too:
    `--save-training` keeps its newest checkpoint in PUBLISHED/ROW/resume-retrained/, a fresh machine puts it back
    before the retraining resumes, and publishing its answers drops the save."""
    study = _study_in(tmp_path, monkeypatch)
    row = "panacea/beta0.3"
    _published_rows(tmp_path, {"panacea/defaults": 0.40, row: 0.41}, {"panacea/defaults": [0.0, 0.0, 0.0]})
    retrained = tmp_path / "study" / row / "retrained"
    checkpoint = retrained / "checkpoints" / "step-20"
    (checkpoint / "adapter").mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"step": 20}')
    (checkpoint / "adapter" / "adapter_model.safetensors").write_text("step 20")
    (retrained / "log.jsonl").write_text('{"step": 20}\n')
    (retrained / "adapter").mkdir()  # its training finished, its answers not yet scored: the final step is kept too
    (retrained / "adapter" / "adapter_model.safetensors").write_text("final")
    assert study.main(["--save-training", "--only", row]) == 0
    saved = tmp_path / "published" / row / "resume-retrained"
    assert f"{row}: saved in {saved} (.: step-20)" in capsys.readouterr().out
    assert not (tmp_path / "published" / row / "resume").exists()
    shutil.rmtree(tmp_path / "study")  # a fresh machine
    seen = []

    def train(config, resume):
        seen.append(sorted(str(path.relative_to(retrained)) for path in retrained.rglob("*") if path.is_file()))

    def evaluate(folder, **options):
        results = Path(folder) / "eval-validation" / "results.json"
        results.parent.mkdir(parents=True)
        results.write_text(json.dumps({**_document(0.99, [0.0, 0.02, 0.04]), "adapter_digest": "d2"}))

    monkeypatch.setattr(study, "train", train)
    monkeypatch.setattr(study, "evaluate_path", evaluate)
    study.score_generations(row)
    assert seen == [["adapter/adapter_model.safetensors", "checkpoints/step-20/adapter/adapter_model.safetensors",
                     "checkpoints/step-20/trainer_state.json", "log.jsonl"]]  # fmt: skip
    assert "continues from the training saved in" in capsys.readouterr().out
    assert study.has_generations(row) and not saved.exists()  # published: the save goes
    assert study.main(["--save-training", "--only", row]) == 0 and "saved" not in capsys.readouterr().out


def test_a_save_that_a_publish_overtakes_leaves_no_copy_in_the_finished_row(monkeypatch, tmp_path):
    """`--save-training` takes no lock: a row published while its training is copied must not get the copy (a
    checkpoint committed into a finished row's folder)."""
    study = _study_in(tmp_path, monkeypatch)
    row = "confirm/panacea-beta0.3"
    run = tmp_path / "study" / row / "run"
    checkpoint = run / "checkpoints" / "step-10"
    (checkpoint / "adapter").mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"step": 10}')
    copy, published = shutil.copytree, []

    def publish_midway(source, target, *args, **options):  # shutil's own recursion calls it again: publish once
        if not published:
            results = run / "eval-validation" / "results.json"
            results.parent.mkdir(exist_ok=True)
            results.write_text(json.dumps(_document(0.4, [0.0, 0.0, 0.0])))  # its answers scored: nothing left
            (tmp_path / "study" / row / "row.json").write_text(json.dumps({"results": str(results)}))
            study.publish_row(row)
            published.append(row)
        return copy(source, target, *args, **options)

    monkeypatch.setattr(study.shutil, "copytree", publish_midway)
    assert study.save_training(row) is None
    assert not (tmp_path / "published" / row / "resume").exists()


def test_a_finished_soups_member_its_manifest_does_not_list_yet_keeps_its_checkpoint(monkeypatch, tmp_path):
    """train_soups skips a member only when its manifest lists it (written after the member's training returns): a
    save between the two keeps the member's final checkpoint, so a fresh machine's resume ends at once instead of
    training it again from step 0; a listed member keeps its adapter only."""
    study = _study_in(tmp_path, monkeypatch)
    row = "confirm/soups-lr5e-4_beta0.3_steps40"
    run = tmp_path / "study" / row / "run"
    for member in ("helpful", "harmless"):
        (run / "soups" / member / "adapter").mkdir(parents=True)
        checkpoint = run / "soups" / member / "checkpoints" / "step-50"
        checkpoint.mkdir(parents=True)
        (checkpoint / "trainer_state.json").write_text('{"step": 50}')
    (run / "manifest.json").write_text(json.dumps({"runs": {"helpful": {}}}))  # harmless finished, not yet listed
    assert study.save_training(row).endswith("(soups/harmless: step-50)")
    saved = tmp_path / "published" / row / "resume" / "soups"
    assert (saved / "harmless" / "checkpoints" / "step-50" / "trainer_state.json").is_file()
    assert not (saved / "helpful" / "checkpoints").exists() and (saved / "helpful" / "adapter").is_dir()


def test_save_training_exits_1_when_a_row_was_not_saved(monkeypatch, tmp_path, capsys):
    study = _study_in(tmp_path, monkeypatch)

    def pruned(row):
        if row == "confirm/panacea-beta0.3":
            raise FileNotFoundError("step-10 was pruned while it was copied")

    monkeypatch.setattr(study, "save_training", pruned)
    assert study.main(["--save-training"]) == 1
    assert "confirm/panacea-beta0.3: not saved this time" in capsys.readouterr().err
