"""benchmarks/refusal_audit.py: the blind sheet hides the source, and the detector is scored exactly against labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from panacea.eval.generations import PROMPT_SPLITS, load_prompts
from panacea.eval.refusal import half_of, is_refusal

from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SETS = {prompt_set.name: prompt_set for prompt_set in PROMPT_SPLITS["test"].sets}
REFUSE, COMPLY = "I cannot help with that.", "Sure, here is how."
MISSED = "Let's talk about gardening instead."  # a refusal (an alternative only) that the detector misses


def write_point(folder: Path, weights: tuple[float, float], texts: dict[str, list[str]]) -> None:
    """A cached generation point: per set, the i-th text answers the set's i-th prompt."""
    folder.mkdir(parents=True, exist_ok=True)
    responses = {}
    for name, answers in texts.items():
        records = load_prompts(SETS[name], 4)[: len(answers)]
        responses[name] = [{"id": record["id"], "text": text} for record, text in zip(records, answers, strict=True)]
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


def test_draw_keeps_vertex_answers_of_the_audited_sets_once_and_the_sheet_is_blind(audit, tmp_path):
    a, b = runs(tmp_path)
    counts = audit.draw([a, b], tmp_path / "published", tmp_path / "work")
    # a at (1, 0): 4 harmbench + 2 xstest_safe; at (0, 1) only its 3 answers not given at (1, 0) too (donotanswer and
    # the interior point are not audited); b: 1, its COMPLY being a's and its vertex cached twice.
    harmbench = load_prompts(SETS["harmbench"], 4)
    assert counts == {"items": 6 + 3 + 1, "new": 10, "sheet": 10}
    items = [json.loads(line) for line in (tmp_path / "published/items.jsonl").read_text().splitlines()]
    shared = next(i for i in items if i["prompt_id"] == harmbench[0]["id"] and i["set"] == "harmbench")
    assert {(s["run"], s["cache"]) for s in shared["sources"]} == {
        ("a", "eval/cache/generations-1"),
        ("b", "eval/cache/generations-vertex-2"),
        ("b", "eval/delta/cache/generations-3"),
    }
    assert all(item["half"] in ("dev", "test") for item in items)
    assert shared["half"] == half_of(harmbench[0]["prompt"]) and shared["detector"] is False
    assert "text" not in json.dumps(items) and COMPLY not in json.dumps(items)  # no answer text is committed
    sheet = [json.loads(line) for line in (tmp_path / "work/sheet.jsonl").read_text().splitlines()]
    assert all(set(row) == {"item", "prompt", "answer"} for row in sheet)  # no run, λ or verdict
    assert sorted(row["item"] for row in sheet) == sorted(item["item"] for item in items)
    again = audit.draw([a, b], tmp_path / "published", tmp_path / "work")
    assert again["new"] == 0
    assert [json.loads(line)["item"] for line in (tmp_path / "work/sheet.jsonl").read_text().splitlines()] == [
        row["item"] for row in sheet
    ]  # the shuffle is seeded


def test_score_matches_a_hand_count_and_drops_labelled_items_from_the_next_sheet(audit, tmp_path):
    a, b = runs(tmp_path)
    audit.draw([a], tmp_path / "published", tmp_path / "work")
    items = [json.loads(line) for line in (tmp_path / "published/items.jsonl").read_text().splitlines()]
    texts = {json.loads(line)["item"]: json.loads(line)["text"] for line in (tmp_path / "work/texts.jsonl").open()}
    # The labeller calls MISSED a refusal.
    labels = {key: "refusal" if text != COMPLY else "compliance" for key, text in texts.items()}
    (tmp_path / "published/labels.jsonl").write_text(
        "".join(json.dumps({"item": k, "label": v}) + "\n" for k, v in labels.items())
    )
    result = audit.score(tmp_path / "published", tmp_path / "work")
    verdicts = {item["item"]: item["detector"] for item in items}
    assert result["labels"] == {"refusal": 3, "compliance": 6, "neither": 0} and result["unlabelled"] == 0
    for half in ("dev", "test"):
        members = [item["item"] for item in items if item["half"] == half]
        expected = sum(verdicts[k] == (labels[k] == "refusal") for k in members) / len(members) if members else None
        assert result["drawn"].get(half) == pytest.approx(expected, nan_ok=True)
    assert result["drawn"]["recall"] == pytest.approx(2 / 3) and result["drawn"]["precision"] == 1.0
    assert result["current"] == result["drawn"]  # the detector did not change since the draw
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


def test_a_changed_detector_is_scored_beside_the_verdicts_recorded_at_drawing(audit, tmp_path, monkeypatch):
    a, _ = runs(tmp_path)
    audit.draw([a], tmp_path / "published", tmp_path / "work")
    texts = {json.loads(line)["item"]: json.loads(line)["text"] for line in (tmp_path / "work/texts.jsonl").open()}
    labels = {key: "refusal" if text != COMPLY else "compliance" for key, text in texts.items()}
    (tmp_path / "published/labels.jsonl").write_text(
        "".join(json.dumps({"item": k, "label": v}) + "\n" for k, v in labels.items())
    )
    monkeypatch.setattr(audit, "is_refusal", lambda text: is_refusal(text) or text == MISSED)
    result = audit.score(tmp_path / "published", tmp_path / "work")
    assert result["drawn"]["recall"] == pytest.approx(2 / 3) and result["current"]["recall"] == 1.0
    rates = {(tuple(entry["weights"]), entry["set"]): entry for entry in result["rates"]}
    assert rates[((0.0, 1.0), "harmbench")]["current"]["value"] == 0.5  # as labelled, where "drawn" says 0.25
    # The one answer the change catches is in one half: there the paired difference is positive in every resample.
    missed = next(key for key, text in texts.items() if text == MISSED)
    half = next(
        item["half"] for item in map(json.loads, (tmp_path / "published/items.jsonl").open()) if item["item"] == missed
    )
    low, high = result["intervals"][half]["difference"]
    assert 0 <= low <= high and result["current"][half] > result["drawn"][half]
    table = audit.markdown(result)
    assert "agreement, current − drawn (paired)" in table
    assert "| harmbench | 4 | 0.50 [" in table and "| 0.25 [" in table  # labelled, as drawn, now: each its cell


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"item": "0" * 16, "label": "refusal"}, "is not in the audit's items"),
        ({"label": "maybe"}, "label 'maybe' is not one of"),
        ({}, "labelled twice"),
    ],
)
def test_a_bad_label_line_is_one_error_naming_its_line(audit, tmp_path, record, message):
    a, _ = runs(tmp_path)
    audit.draw([a], tmp_path / "published", tmp_path / "work")
    first = json.loads((tmp_path / "published/items.jsonl").read_text().splitlines()[0])["item"]
    lines = [{"item": first, "label": "refusal"}, {"item": first, "label": "compliance"} | record]
    (tmp_path / "published/labels.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(SystemExit, match=f"labels.jsonl:2: .*{message}"):
        audit.score(tmp_path / "published", tmp_path / "work")


def test_a_run_without_vertex_answers_is_one_clear_error(audit, tmp_path):
    write_point(tmp_path / "run/eval/cache/generations-1", (0.5, 0.5), {"harmbench": [COMPLY]})
    with pytest.raises(SystemExit, match="no cached generation point at a vertex"):
        audit.draw([tmp_path / "run"], tmp_path / "published", tmp_path / "work")
