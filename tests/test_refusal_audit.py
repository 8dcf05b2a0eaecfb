"""benchmarks/refusal_audit.py: the blind sheet hides the source, and the detector is scored exactly against labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from panacea.eval.generations import DETECTORS, PROMPT_SPLITS, load_prompts
from panacea.eval.refusal import half_of, is_refusal

from panacea._io import write_jsonl
from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SETS = {prompt_set.name: prompt_set for prompt_set in PROMPT_SPLITS["test"].sets}
REFUSE, COMPLY = "I cannot help with that.", "Sure, here is how."
MISSED = "Let's talk about gardening instead."  # a refusal (an alternative only) that the detector misses


def write_point(
    folder: Path,
    weights: tuple[float, float],
    texts: dict[str, list[str]],
    *,
    drop: tuple[int, ...] = (),
    dimensions: tuple[str, str] = ("helpful", "harmless"),
) -> None:
    """A cached generation point of the run above `folder`'s eval/ (its config.yaml written once, naming
    `dimensions`): per set, the i-th text answers the set's i-th prompt, except the prompts at `drop`."""
    folder.mkdir(parents=True, exist_ok=True)
    run = folder.parents[folder.parts[::-1].index("eval")]  # a/eval/cache/generations-1 → a
    config = run / "config.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump({"dimensions": [{"name": name} for name in dimensions]}))
    responses = {}
    for name, answers in texts.items():
        records = load_prompts(SETS[name], 4)[: len(answers)]
        responses[name] = [
            {"id": record["id"], "text": text}
            for index, (record, text) in enumerate(zip(records, answers, strict=True))
            if index not in drop
        ]
    name = "-".join(f"{weight:.4f}" for weight in weights) + ".json"
    (folder / name).write_text(json.dumps({"sets": {}, "responses": responses, "seconds": 1.0}))


@pytest.fixture
def audit(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the prompt files
    script = load_script(ROOT / "benchmarks" / "refusal_audit.py", monkeypatch)
    monkeypatch.setattr(script, "PUBLISHED", tmp_path / "published")
    monkeypatch.setattr(script, "WORK", tmp_path / "work")
    return script


def runs(tmp_path: Path) -> tuple[Path, Path]:
    """Run a: both vertices and an interior point; run b (soups-like): one vertex cached in two folders."""
    a, b = tmp_path / "a", tmp_path / "b"
    harmful = {"harmbench": [COMPLY, COMPLY, REFUSE, MISSED], "donotanswer": [REFUSE]}
    write_point(a / "eval/cache/generations-1", (1.0, 0.0), {"harmbench": [COMPLY] * 4, "xstest_safe": [COMPLY] * 2})
    write_point(a / "eval/cache/generations-1", (0.0, 1.0), harmful | {"xstest_safe": [REFUSE, COMPLY]})
    write_point(a / "eval/cache/generations-1", (0.5, 0.5), {"harmbench": ["interior"] * 4})
    for cache in ("eval/cache/generations-vertex-2", "eval/delta/cache/generations-3"):
        write_point(b / cache, (1.0, 0.0), {"harmbench": [COMPLY, "other"]})
    return a, b


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def label_sheet(audit, tmp_path: Path) -> None:
    """A labeller that calls every answer but COMPLY a refusal, through `take`."""
    labels = [
        {"sheet": row["sheet"], "row": row["row"], "label": "compliance" if row["answer"] == COMPLY else "refusal"}
        for row in read(tmp_path / "work/sheet.jsonl")
    ]
    (tmp_path / "labeller.jsonl").write_text("".join(json.dumps(label) + "\n" for label in labels))
    audit.take(tmp_path / "labeller.jsonl", "a test", tmp_path / "published", tmp_path / "work")


def test_draw_keeps_vertex_answers_of_the_audited_sets_once_and_the_sheet_is_blind(audit, tmp_path):
    a, b = runs(tmp_path)
    counts = audit.draw([a, b], tmp_path / "published", tmp_path / "work")
    # a at (1, 0): 4 harmbench + 2 xstest_safe; at (0, 1) only its 3 answers not given at (1, 0) too (donotanswer and
    # the interior point are not audited); b: 1, its COMPLY being a's and its vertex cached twice.
    harmbench = load_prompts(SETS["harmbench"], 4)
    sheet_id = counts.pop("sheet_id")
    assert counts == {"items": 6 + 3 + 1, "new": 10, "sheet": 10}
    items = read(tmp_path / "published/items.jsonl")
    shared = next(i for i in items if i["prompt_id"] == harmbench[0]["id"] and i["set"] == "harmbench")
    assert {(s["run"], s["cache"]) for s in shared["sources"]} == {
        ("a", "eval/cache/generations-1"),
        ("b", "eval/cache/generations-vertex-2"),
        ("b", "eval/delta/cache/generations-3"),
    }
    assert all(item["half"] in ("dev", "test") for item in items)
    assert shared["half"] == half_of(harmbench[0]["prompt"]) and shared["detector"] is False
    assert {item["round"] for item in items} == {DETECTORS["refusal_detector"]}
    assert "text" not in json.dumps(items) and COMPLY not in json.dumps(items)  # no answer text is committed
    sheet = read(tmp_path / "work/sheet.jsonl")
    assert all(set(row) == {"sheet", "row", "prompt", "answer"} for row in sheet)  # no item id, run, λ or verdict
    assert {row["sheet"] for row in sheet} == {sheet_id}
    assert [row["row"] for row in sheet] == list(range(1, 11))
    key = read(tmp_path / "work/sheet-key.jsonl")
    assert sorted(row["item"] for row in key) == sorted(item["item"] for item in items)
    with pytest.raises(SystemExit, match="still has 10 unlabelled row"):  # a labeller may be working on it
        audit.draw([a, b], tmp_path / "published", tmp_path / "work")
    assert audit.draw([a, b], tmp_path / "published", tmp_path / "work", force=True)["new"] == 0
    assert read(tmp_path / "work/sheet-key.jsonl") == key  # the shuffle is seeded


def test_score_matches_a_hand_count_and_drops_labelled_items_from_the_next_sheet(audit, tmp_path):
    a, b = runs(tmp_path)
    audit.draw([a], tmp_path / "published", tmp_path / "work")
    label_sheet(audit, tmp_path)
    items = {item["item"]: item for item in read(tmp_path / "published/items.jsonl")}
    labels = {label["item"]: label["label"] for label in read(tmp_path / "published/labels.jsonl")}
    assert sorted(labels) == sorted(items)
    assert {label["labeller"] for label in read(tmp_path / "published/labels.jsonl")} == {"a test"}
    result = audit.score(tmp_path / "published", tmp_path / "work")
    assert result["labels"] == {"refusal": 3, "compliance": 6, "neither": 0} and result["unlabelled"] == 0
    (measured,) = result["rounds"].values()
    for half, summary in measured.items():
        members = [key for key, item in items.items() if item["half"] == half]
        right = sum(items[key]["detector"] == (labels[key] == "refusal") for key in members)
        assert summary["detector"]["accuracy"] == pytest.approx(right / len(members))
        same = json.dumps(summary["current"], sort_keys=True) == json.dumps(summary["detector"], sort_keys=True)
        assert same  # the detector did not change since the draw (as text: NaN ≠ NaN)
        assert summary["difference"]["value"] == 0
    for half, summary in measured.items():
        refusals = [key for key, item in items.items() if item["half"] == half and labels[key] == "refusal"]
        caught = [key for key in refusals if items[key]["detector"]]
        expected = len(caught) / len(refusals) if refusals else float("nan")  # undefined without a labelled refusal
        assert summary["detector"]["recall"] == pytest.approx(expected, nan_ok=True)
    rates = {(tuple(entry["weights"]), entry["set"]): entry for entry in result["rates"]}
    harmless_harmbench = rates[((0.0, 1.0), "harmbench")]
    assert harmless_harmbench["labelled"]["value"] == 0.5 and harmless_harmbench["detector"]["value"] == 0.25
    assert harmless_harmbench["answers"] == 4
    low, high = harmless_harmbench["labelled"]["interval"]
    assert 0 <= low <= 0.5 <= high <= 1
    assert rates[((1.0, 0.0), "xstest_safe")]["labelled"]["value"] == 0.0
    # A new run's answers join the items; the labelled ones stay off the sheet.
    counts = audit.draw([a, b], tmp_path / "published", tmp_path / "work")
    assert counts["sheet"] == 1  # b's "other" (its COMPLY to the first prompt is a's item too)


def test_score_writes_the_labelled_rates_on_a_machine_without_the_answers_text(audit, tmp_path):
    """runs/ does not survive a machine change: with an earlier labelled answer's text gone, score wrote nothing, so
    new runs' labels never reached results.json nor the targets, which read the labelled rates (a review)."""
    a, _ = runs(tmp_path)
    audit.draw([a], tmp_path / "published", tmp_path / "work")
    label_sheet(audit, tmp_path)
    texts = read(tmp_path / "work/texts.jsonl")
    write_jsonl(tmp_path / "work/texts.jsonl", texts[1:])  # one text gone with a machine
    result = audit.score(tmp_path / "published", tmp_path / "work")
    written = json.loads((tmp_path / "published/results.json").read_text())
    assert written["texts_missing"] == 1 and written["detector_now"] is None
    assert written["rates"] == json.loads(json.dumps(result["rates"])) and all(
        "current" not in r for r in written["rates"]
    )
    assert "today's detector not run: 1 labelled answers' text is not on this machine" in audit.markdown(result)


def test_results_judged_by_todays_detector_are_kept_where_a_machine_without_the_text_scores_the_same_labels(
    audit, tmp_path
):
    """Rewritten without the answers' text, results.json lost today's detector's columns though nothing it was scored
    on had changed; with new labels it is rewritten (a review)."""
    a, _ = runs(tmp_path)
    audit.draw([a], tmp_path / "published", tmp_path / "work")
    label_sheet(audit, tmp_path)
    audit.score(tmp_path / "published", tmp_path / "work")
    published = tmp_path / "published/results.json"
    judged = published.read_text()
    assert json.loads(judged)["detector_now"] is not None
    write_jsonl(tmp_path / "work/texts.jsonl", read(tmp_path / "work/texts.jsonl")[1:])  # a new machine
    assert audit.score(tmp_path / "published", tmp_path / "work")["texts_missing"] == 1
    assert published.read_text() == judged  # the same items and labels: kept
    labels = read(tmp_path / "published/labels.jsonl")
    labels[0]["label"] = "neither" if labels[0]["label"] != "neither" else "refusal"
    write_jsonl(tmp_path / "published/labels.jsonl", labels)
    audit.score(tmp_path / "published", tmp_path / "work")
    assert json.loads(published.read_text())["texts_missing"] == 1  # other labels: written


def test_refusal_gains_and_their_difference_between_runs_match_a_hand_count_paired_by_prompt(audit, tmp_path):
    a, _ = runs(tmp_path)
    # c answers harmbench's prompts 0, 2 and 3 (not 1): its gain from (1, 0) to (0, 1) per prompt is (0, 0, 1); a's
    # there is (0, 1, 1) — paired by position instead of by prompt, a's first three (0, 0, 1) would match c's.
    c = tmp_path / "c"
    write_point(c / "eval/cache/generations-1", (1.0, 0.0), {"harmbench": [REFUSE, COMPLY, COMPLY, COMPLY]}, drop=(1,))
    write_point(c / "eval/cache/generations-1", (0.0, 1.0), {"harmbench": [REFUSE, REFUSE, COMPLY, REFUSE]}, drop=(1,))
    write_point(c / "eval/cache/generations-1", (0.5, 0.5), {"harmbench": [COMPLY] * 4})  # not a vertex: no gain
    audit.draw([a, c], tmp_path / "published", tmp_path / "work")
    label_sheet(audit, tmp_path)
    result = audit.score(tmp_path / "published", tmp_path / "work")
    gains = {(entry["run"], entry["set"]): entry for entry in result["gains"]}
    assert sorted(gains) == [("a", "harmbench"), ("a", "xstest_safe"), ("c", "harmbench")]
    assert (gains["a", "harmbench"]["from"], gains["a", "harmbench"]["to"]) == ([1.0, 0.0], [0.0, 1.0])
    assert gains["a", "harmbench"]["labelled"]["value"] == 0.5  # (0 + 0 + 1 + 1) / 4
    assert gains["a", "harmbench"]["detector"]["value"] == 0.25  # MISSED is no refusal to the detector
    assert gains["a", "xstest_safe"]["labelled"]["value"] == 0.5 and gains["a", "xstest_safe"]["answers"] == 2
    assert gains["c", "harmbench"]["labelled"]["value"] == pytest.approx(1 / 3)
    assert gains["c", "harmbench"]["answers"] == 3
    differences = {(entry["set"], "at" in entry, str(entry.get("at"))): entry for entry in result["differences"]}
    assert sorted(differences) == [
        ("harmbench", False, "None"),  # the gain; xstest_safe: c has no answer there
        ("harmbench", True, "[0.0, 1.0]"),
        ("harmbench", True, "[1.0, 0.0]"),
    ]
    at_harmless = differences["harmbench", True, "[0.0, 1.0]"]  # a (0, 1, 1) − c (1, 0, 1) on prompts 0, 2, 3
    assert at_harmless["runs"] == ["a", "c"] and at_harmless["labelled"]["value"] == 0 and at_harmless["answers"] == 3
    difference = differences["harmbench", False, "None"]
    assert difference["runs"] == ["a", "c"] and difference["answers"] == 3
    assert difference["labelled"]["value"] == pytest.approx(1 / 3)  # per prompt (0, 1, 0)
    low, high = difference["labelled"]["interval"]
    assert 0 <= low <= 1 / 3 <= high <= 1  # no prompt moves a's gain below c's
    assert difference["detector"]["value"] == 0  # per prompt (0, 1, -1): MISSED is a's, c's REFUSE at 3 is caught
    table = audit.markdown(result)
    assert "| a − c | harmbench | gain (1, 0) → (0, 1) | 3 | +0.33 [" in table
    assert "| a − c | harmbench | refusal at (0, 1) | 3 | +0.00 [" in table


def test_runs_whose_dimensions_differ_in_order_are_never_compared(audit, tmp_path):
    a, _ = runs(tmp_path)
    swapped = tmp_path / "swapped"  # λ = (1, 0) is its harmless vertex
    for weights in ((1.0, 0.0), (0.0, 1.0)):
        write_point(
            swapped / "eval/cache/generations-1",
            weights,
            {"harmbench": [REFUSE] * 4},
            dimensions=("harmless", "helpful"),
        )
    audit.draw([a, swapped], tmp_path / "published", tmp_path / "work")
    assert {s["run"]: s["dimensions"] for i in read(tmp_path / "published/items.jsonl") for s in i["sources"]} == {
        "a": ["helpful", "harmless"],
        "swapped": ["harmless", "helpful"],
    }
    label_sheet(audit, tmp_path)
    result = audit.score(tmp_path / "published", tmp_path / "work")
    assert {entry["run"] for entry in result["gains"]} == {"a", "swapped"}
    assert result["differences"] == []


def test_a_changed_detector_is_scored_beside_the_verdicts_recorded_at_drawing(audit, tmp_path, monkeypatch):
    a, b = runs(tmp_path)
    audit.draw([a, b], tmp_path / "published", tmp_path / "work")
    label_sheet(audit, tmp_path)
    monkeypatch.setattr(audit, "is_refusal", lambda text: is_refusal(text) or text == MISSED)
    result = audit.score(tmp_path / "published", tmp_path / "work")
    texts = {row["item"]: row["text"] for row in read(tmp_path / "work/texts.jsonl")}
    missed = next(key for key, text in texts.items() if text == MISSED)
    half = next(item["half"] for item in read(tmp_path / "published/items.jsonl") if item["item"] == missed)
    (measured,) = result["rounds"].values()
    assert measured[half]["current"]["recall"] > measured[half]["detector"]["recall"]
    low, high = measured[half]["difference"]["interval"]  # the one answer the change catches: above 0 in every resample
    assert 0 <= low <= high and measured[half]["difference"]["value"] > 0
    rates = {(entry["run"], tuple(entry["weights"]), entry["set"]): entry for entry in result["rates"]}
    assert rates["a", (0.0, 1.0), "harmbench"]["current"]["value"] == 0.5  # as labelled, where "drawn" says 0.25
    assert rates["b", (1.0, 0.0), "harmbench"]["caches"] == [
        "eval/cache/generations-vertex-2",
        "eval/delta/cache/generations-3",
    ]
    table = audit.markdown(result)
    assert "now − as drawn (paired)" in table and "| a | (0, 1) | harmbench | 4 | 0.50 [" in table
    dev_only = audit.score(tmp_path / "published", tmp_path / "work", half="dev")
    assert all(set(halves) <= {"dev"} for halves in dev_only["rounds"].values())


def test_a_group_drawn_over_two_rounds_says_its_rate_as_drawn_mixes_detectors(audit, tmp_path, monkeypatch):
    cache, first = tmp_path / "run/eval/cache/generations-1", DETECTORS["refusal_detector"]
    write_point(cache, (0.0, 1.0), {"harmbench": [REFUSE, COMPLY]})
    audit.draw([tmp_path / "run"], tmp_path / "published", tmp_path / "work")
    label_sheet(audit, tmp_path)
    monkeypatch.setitem(audit.DETECTORS, "refusal_detector", "a later detector")
    write_point(cache, (0.0, 1.0), {"harmbench": [REFUSE, COMPLY, MISSED]})  # one more prompt, the others the same
    assert audit.draw([tmp_path / "run"], tmp_path / "published", tmp_path / "work")["sheet"] == 1
    label_sheet(audit, tmp_path)
    result = audit.score(tmp_path / "published", tmp_path / "work")
    (entry,) = result["rates"]
    assert entry["answers"] == 3 and entry["rounds"] == sorted([first, "a later detector"])
    assert "(mixed: 2 rounds)" in audit.markdown(result)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"row": 99, "label": "refusal"}, "row 99 is not a row of"),
        ({"row": True, "label": "refusal"}, "row True is not a row of"),
        ({"row": 2, "label": "maybe"}, "label 'maybe' is not one of"),
        ({"row": 1, "label": "refusal"}, "row 1 is labelled already"),
        ({"sheet": "0ther", "row": 2, "label": "refusal"}, "sheet '0ther' is not the last sheet drawn"),
        ("not json", "not JSON"),
        ([1, 2], "a JSON object per line"),
    ],
)
def test_a_bad_line_from_the_labeller_is_one_error_naming_its_line(audit, tmp_path, line, message):
    a, _ = runs(tmp_path)
    sheet = audit.draw([a], tmp_path / "published", tmp_path / "work")["sheet_id"]
    if isinstance(line, dict):
        line = json.dumps({"sheet": sheet} | line)
    elif not isinstance(line, str):
        line = json.dumps(line)
    text = json.dumps({"sheet": sheet, "row": 1, "label": "compliance"}) + "\n" + line
    (tmp_path / "labeller.jsonl").write_text(text + "\n")
    with pytest.raises(SystemExit, match=f"labeller.jsonl:2: .*{message}"):
        audit.take(tmp_path / "labeller.jsonl", "a test", tmp_path / "published", tmp_path / "work")
    assert not (tmp_path / "published/labels.jsonl").exists()  # nothing taken


def test_a_sheet_labelled_in_part_is_refused_whole(audit, tmp_path):
    a, _ = runs(tmp_path)
    with pytest.raises(SystemExit, match="sheet-key.jsonl is missing"):
        audit.take(tmp_path / "labeller.jsonl", "a test", tmp_path / "published", tmp_path / "work")
    sheet = audit.draw([a], tmp_path / "published", tmp_path / "work")["sheet_id"]
    (tmp_path / "labeller.jsonl").write_text(json.dumps({"sheet": sheet, "row": 1, "label": "compliance"}) + "\n")
    with pytest.raises(SystemExit, match="8 row\\(s\\) of the sheet have no label"):
        audit.take(tmp_path / "labeller.jsonl", "a test", tmp_path / "published", tmp_path / "work")


def test_a_run_without_vertex_answers_is_one_clear_error(audit, tmp_path):
    write_point(tmp_path / "run/eval/cache/generations-1", (0.5, 0.5), {"harmbench": [COMPLY]})
    with pytest.raises(SystemExit, match="no cached generation point at a vertex"):
        audit.draw([tmp_path / "run"], tmp_path / "published", tmp_path / "work")


def test_a_run_answering_one_prompt_differently_in_two_caches_is_refused_by_name(audit, tmp_path):
    """Before anyone labels both answers: at once, or against an answer drawn before; nothing is written."""
    write_point(tmp_path / "run/eval/cache/generations-1", (1.0, 0.0), {"harmbench": [COMPLY]})
    write_point(tmp_path / "run/eval/cache/generations-2", (1.0, 0.0), {"harmbench": [REFUSE]})  # other settings
    with pytest.raises(SystemExit, match="differently in eval/cache/generations-1 and eval/cache/generations-2"):
        audit.draw([tmp_path / "run"], tmp_path / "published", tmp_path / "work")
    assert not (tmp_path / "published").exists() and not (tmp_path / "work").exists()
    (tmp_path / "run/eval/cache/generations-2").rename(tmp_path / "aside")
    audit.draw([tmp_path / "run"], tmp_path / "published", tmp_path / "work")
    label_sheet(audit, tmp_path)
    (tmp_path / "aside").rename(tmp_path / "run/eval/cache/generations-2")
    before = (tmp_path / "published/items.jsonl").read_text()
    with pytest.raises(SystemExit, match="differently in eval/cache/generations-1 and eval/cache/generations-2"):
        audit.draw([tmp_path / "run"], tmp_path / "published", tmp_path / "work")
    assert (tmp_path / "published/items.jsonl").read_text() == before


def test_score_refuses_items_that_answer_one_prompt_twice(audit, tmp_path):
    """The same guard where `score` reads the committed files (e.g. edited by hand)."""
    write_point(tmp_path / "run/eval/cache/generations-1", (1.0, 0.0), {"harmbench": [COMPLY]})
    audit.draw([tmp_path / "run"], tmp_path / "published", tmp_path / "work")
    label_sheet(audit, tmp_path)
    (item,) = read(tmp_path / "published/items.jsonl")
    (label,) = read(tmp_path / "published/labels.jsonl")
    twin = item | {"item": "0" * 16, "answer_sha256": "0" * 64}
    with (tmp_path / "published/items.jsonl").open("a") as items:
        items.write(json.dumps(twin) + "\n")
    with (tmp_path / "published/labels.jsonl").open("a") as labels:
        labels.write(json.dumps(label | {"item": twin["item"]}) + "\n")
    with pytest.raises(SystemExit, match="answers harmbench .* twice, differently"):
        audit.score(tmp_path / "published", tmp_path / "work")


def test_every_point_draws_interior_answers_soups_in_mode_ab_only_and_gains_stay_between_vertices(audit, tmp_path):
    a, _ = runs(tmp_path)  # a: both vertices and (0.5, 0.5), all harmbench "interior"
    s = tmp_path / "s"  # soups-like: vertices in its vertex cache, the interior point in two modes (other answers)
    write_point(s / "eval/cache/generations-vertex-2", (1.0, 0.0), {"harmbench": [COMPLY] * 4})
    write_point(s / "eval/cache/generations-vertex-2", (0.0, 1.0), {"harmbench": [REFUSE] * 4})
    write_point(s / "eval/ab/cache/generations-3", (0.5, 0.5), {"harmbench": [REFUSE, REFUSE, COMPLY, COMPLY]})
    write_point(s / "eval/delta/cache/generations-4", (0.5, 0.5), {"harmbench": [MISSED] * 4})
    assert [weights for _, weights, _ in audit.point_caches(s)] == [(0.0, 1.0), (1.0, 0.0)]  # vertices by default
    assert {cache for cache, _, _ in audit.point_caches(s, every_point=True)} == {
        "eval/cache/generations-vertex-2",
        "eval/ab/cache/generations-3",
    }
    audit.draw([a, s], tmp_path / "published", tmp_path / "work", every_point=True)
    items = read(tmp_path / "published/items.jsonl")
    interior = [source for item in items for source in item["sources"] if source["weights"] == [0.5, 0.5]]
    assert {(source["run"], source["cache"]) for source in interior} == {
        ("a", "eval/cache/generations-1"),
        ("s", "eval/ab/cache/generations-3"),
    }
    label_sheet(audit, tmp_path)  # every answer but COMPLY is a refusal: a's "interior" answers too
    result = audit.score(tmp_path / "published", tmp_path / "work")
    rates = {(entry["run"], tuple(entry["weights"]), entry["set"]): entry for entry in result["rates"]}
    assert rates["s", (0.5, 0.5), "harmbench"]["labelled"]["value"] == 0.5
    assert rates["a", (0.5, 0.5), "harmbench"]["labelled"]["value"] == 1.0
    assert {(entry["run"], tuple(entry["from"]), tuple(entry["to"])) for entry in result["gains"]} == {
        ("a", (1.0, 0.0), (0.0, 1.0)),  # harmbench and xstest_safe: never from or to (0.5, 0.5)
        ("s", (1.0, 0.0), (0.0, 1.0)),
    }
    at_middle = next(entry for entry in result["differences"] if entry.get("at") == [0.5, 0.5])
    assert at_middle["runs"] == ["a", "s"] and at_middle["labelled"]["value"] == 0.5  # (1, 1, 1, 1) − (1, 1, 0, 0)


def test_a_second_labeller_on_some_rows_gives_agreement_and_kappa_by_hand_and_never_the_rates(audit, tmp_path):
    a, _ = runs(tmp_path)
    audit.draw([a], tmp_path / "published", tmp_path / "work")
    label_sheet(audit, tmp_path)  # first labeller: every answer but COMPLY a refusal
    before = audit.score(tmp_path / "published", tmp_path / "work")
    assert "agreement" not in before
    sheet = read(tmp_path / "work/sheet.jsonl")[:4]  # a second labeller on four rows: flips one, calls one neither
    first = ["compliance" if row["answer"] == COMPLY else "refusal" for row in sheet]
    second = list(first)
    second[0] = "refusal" if first[0] == "compliance" else "compliance"
    second[1] = "neither"
    lines = [
        {"sheet": row["sheet"], "row": row["row"], "label": label} for row, label in zip(sheet, second, strict=True)
    ]
    (tmp_path / "second.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert audit.take(tmp_path / "second.jsonl", "b", tmp_path / "published", tmp_path / "work", second=True) == 4
    result = audit.score(tmp_path / "published", tmp_path / "work")
    assert result["rates"] == before["rates"]  # a second labeller's labels never enter the rates
    agreement = result["agreement"]
    assert agreement["items"] == 4 and agreement["same_label"] == 0.5
    calls = [(x == "refusal", y == "refusal") for x, y in zip(first, second, strict=True)]
    observed = sum(x == y for x, y in calls) / 4
    p, q = sum(x for x, _ in calls) / 4, sum(y for _, y in calls) / 4
    expected = p * q + (1 - p) * (1 - q)
    assert agreement["refusal_agreement"] == observed
    assert agreement["kappa"] == pytest.approx((observed - expected) / (1 - expected))
    assert "a second labeller on 4 of them: the same label 0.500" in audit.markdown(result)
    with pytest.raises(SystemExit, match="row .* is labelled already"):  # the same rows twice
        audit.take(tmp_path / "second.jsonl", "b", tmp_path / "published", tmp_path / "work", second=True)
