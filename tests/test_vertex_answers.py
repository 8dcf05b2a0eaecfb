"""benchmarks/vertex_answers.py: a run's answers at its vertices to the first prompts of the benign sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from panacea.eval.generations import PROMPT_SPLITS, load_prompts

from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SETS = {prompt_set.name: prompt_set for prompt_set in PROMPT_SPLITS["test"].sets}


def evaluated_run(tmp_path: Path) -> Path:
    """A run folder as `panacea eval --scorers generations` leaves it: results.json and the per-point cache."""
    run, cache = tmp_path / "run", tmp_path / "run" / "eval" / "cache" / "generations-0123"
    cache.mkdir(parents=True)
    grid = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    names = ("helpful_test", "xstest_safe", "harmbench")
    for point in grid:
        responses = {
            name: [
                {"id": record["id"], "text": f"answer of {record['id']} at {point[0]:.1f}" + ("!" * 700 * (i == 1))}
                for i, record in enumerate(load_prompts(SETS[name], 3))
            ]
            for name in names
        }
        name = "-".join(f"{weight:.4f}" for weight in point) + ".json"
        (cache / name).write_text(json.dumps({"sets": {}, "responses": responses}))
    generations = {"cache": str(cache), "settings": {"decoding": {"max_new_tokens": 96}}}
    results = {"label": "demo (panacea)", "dimensions": ["helpful", "harmless"], "grid": grid}
    (run / "eval" / "results.json").write_text(json.dumps({**results, "scorers": {"generations": generations}}))
    return run


def test_the_first_prompts_of_the_benign_sets_and_every_vertex_answer(tmp_path, monkeypatch):
    script = load_script(ROOT / "benchmarks" / "vertex_answers.py", monkeypatch)
    text = script.vertex_answers(evaluated_run(tmp_path), count=2)
    first, second, third = load_prompts(SETS["helpful_test"], 3)
    assert first["prompt"].replace("\n", " ⏎ ") in text and second["id"] in text and third["id"] not in text
    assert f"**λ = (1.0, 0.0)**: answer of {first['id']} at 1.0" in text
    assert f"**λ = (0.0, 1.0)**: answer of {first['id']} at 0.0" in text
    assert "at 0.5" not in text  # vertices only
    assert "## xstest_safe" in text and "harmbench" not in text  # harmful sets stay out by default
    assert "!" * 100 + " …" in text and "!" * 700 not in text  # a long answer is cut


def test_a_run_without_generation_scores_is_one_clear_error(tmp_path, monkeypatch):
    script = load_script(ROOT / "benchmarks" / "vertex_answers.py", monkeypatch)
    (tmp_path / "run" / "eval").mkdir(parents=True)
    (tmp_path / "run" / "eval" / "results.json").write_text(json.dumps({"scorers": {"pairs": {}}}))
    with pytest.raises(SystemExit, match="no generations scores"):
        script.vertex_answers(tmp_path / "run")
