"""benchmarks/loop_probe.py: a run's answers at each vertex to the validation prompts, flagged as scored elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import load_script, train_tiny_run

ROOT = Path(__file__).resolve().parents[1]


def test_the_probe_flags_each_vertexs_answers_to_every_validation_set_with_intervals(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # the prompt sets are read from data/
    script = load_script(ROOT / "benchmarks" / "loop_probe.py", monkeypatch)
    run = train_tiny_run(tmp_path, max_steps=2)
    answered = []

    def answers(model, tokenizer, prompts, preferences, **kwargs):  # answer 0 refuses, 1, 2, 4, 5 loop
        answered.append((list(prompts), preferences.tolist(), kwargs["max_new_tokens"]))
        texts = [
            "I'm sorry, I can't." if i == 0 else "no no no " * 10 if i % 3 else "Fine." for i in range(len(prompts))
        ]
        return [texts] * len(preferences), [[i % 2 == 0 for i in range(len(prompts))]] * len(preferences)

    monkeypatch.setattr(script, "generate_grid", answers)
    probe = script.loop_probe(run, max_new_tokens=7, limit=6)
    assert list(probe) == ["helpful_validation", "harmless_validation"]
    assert all(vertices == [[1.0, 0.0], [0.0, 1.0]] and cap == 7 for _, vertices, cap in answered)
    shares = probe["harmless_validation"]["(1.0, 0.0)"]
    assert shares["prompts"] == 6
    assert shares["loops"]["value"] == pytest.approx(4 / 6)  # answers 1, 2, 4, 5
    assert shares["refusal"]["value"] == pytest.approx(1 / 6)
    assert shares["ended"]["value"] == pytest.approx(3 / 6)
    low, high = shares["loops"]["interval"]
    assert 0 <= low <= 4 / 6 <= high <= 1
    table = script.format_probe(probe)
    assert "| harmless_validation | (0.0, 1.0) | 6 | 0.667 [" in table
