"""benchmarks/retire_run.py: a run moves aside under RUN@LABEL everywhere its name identifies it, or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
ANSWERS = "A model's answer may name any path: `ls ../../etc` and ../..\n"  # ../.. is the run's folder from there


@pytest.fixture
def retire(monkeypatch):
    return load_script(ROOT / "benchmarks" / "retire_run.py", monkeypatch)


def _source(run: str) -> dict:
    return {"run": run, "cache": "eval/cache/generations-0", "weights": [1.0, 0.0], "dimensions": ["a", "b"]}


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A checkout with hh-2d's run in runs/ and docs/results/, an audit item of it and one of hh-2d-tche's, and docs
    linking to both runs' published files."""
    monkeypatch.chdir(tmp_path)
    for folder in ("runs/hh-2d/adapter", "runs/.reference-snapshots", "docs/results/hh-2d/hh-2d/eval"):
        Path(folder).mkdir(parents=True)
    Path("runs/hh-2d/adapter/adapter_model.safetensors").write_text("weights")
    Path("runs/.reference-snapshots/hh-2d").write_text("# cache entries v2\n")
    Path("docs/results/hh-2d/hh-2d/eval/answers.md").write_text(ANSWERS)
    Path("docs/results/refusal-audit").mkdir(parents=True)
    items = [
        {"item": "1", "set": "harmbench", "sources": [_source("hh-2d"), _source("soups-hh-2d")]},
        {"item": "2", "set": "xstest", "sources": [_source("hh-2d-tche")]},
    ]
    Path("docs/results/refusal-audit/items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    Path("README.md").write_text("[answers](docs/results/hh-2d/hh-2d/eval/answers.md) and `docs/results/hh-2d/hh-2d`\n")
    Path("docs/benchmarks.md").write_text(
        "[theirs](results/hh-2d/hh-2d-tche/eval/answers.md), [ours](results/hh-2d/hh-2d/eval/answers.md), "
        "[all](results/hh-2d/compare.md), [old](results/hh-2d/hh-2d@first/eval/answers.md)\n"
    )
    return tmp_path


def _tree(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): path.read_text() for path in sorted(root.rglob("*")) if path.is_file()}


def test_the_run_its_record_links_and_audit_sources_move_under_the_label(retire, workspace, capsys):
    assert retire.main(["hh-2d", "hh-2d", "defaults"]) == 0
    assert not Path("runs/hh-2d").exists() and not Path("docs/results/hh-2d/hh-2d").exists()
    assert Path("runs/hh-2d@defaults/adapter/adapter_model.safetensors").read_text() == "weights"
    assert Path("runs/.reference-snapshots/hh-2d@defaults").is_file()
    assert Path("docs/results/hh-2d/hh-2d@defaults/eval/answers.md").read_text() == ANSWERS  # moved, unchanged
    assert Path("README.md").read_text() == (
        "[answers](docs/results/hh-2d/hh-2d@defaults/eval/answers.md) and `docs/results/hh-2d/hh-2d@defaults`\n"
    )
    assert Path("docs/benchmarks.md").read_text() == (  # another run whose name starts alike is left alone
        "[theirs](results/hh-2d/hh-2d-tche/eval/answers.md), [ours](results/hh-2d/hh-2d@defaults/eval/answers.md), "
        "[all](results/hh-2d/compare.md), [old](results/hh-2d/hh-2d@first/eval/answers.md)\n"
    )
    items = [json.loads(line) for line in Path("docs/results/refusal-audit/items.jsonl").read_text().splitlines()]
    assert [[source["run"] for source in item["sources"]] for item in items] == [
        ["hh-2d@defaults", "soups-hh-2d"],
        ["hh-2d-tche"],
    ]
    assert "refusal_audit.py score" in capsys.readouterr().out


def test_a_dry_run_changes_nothing(retire, workspace, capsys):
    before = _tree(workspace)
    assert retire.main(["hh-2d", "hh-2d", "defaults", "--dry-run"]) == 0
    assert _tree(workspace) == before
    out = capsys.readouterr().out
    assert "would move runs/hh-2d → runs/hh-2d@defaults" in out
    assert "would rename 1 answer source(s)" in out and "would point 2 link(s) in README.md" in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["hh-2d", "hh-2d", "first"], "exists already"),  # the published hh-2d@first of the docs' link
        (["hh-2d", "hh-2d-full", "defaults"], "neither runs/hh-2d-full nor"),
        (["hh-2d", "../hh-2d", "defaults"], "the run '../hh-2d' must be"),
        (["hh-2d", "hh-2d", "a/b"], "the label 'a/b' must be"),
    ],
)
def test_a_step_that_cannot_be_taken_refuses_them_all(retire, workspace, arguments, message):
    Path("docs/results/hh-2d/hh-2d@first").mkdir()
    before = _tree(workspace)
    with pytest.raises(SystemExit, match=message):
        retire.main(arguments)
    assert _tree(workspace) == before and Path("runs/hh-2d").is_dir()


def test_a_published_folder_outside_the_checkout_moves_without_touching_the_checkouts_docs(
    retire, workspace, tmp_path_factory, monkeypatch
):
    """PUBLISH_DIR elsewhere (a dry run of the benchmarks): the checkout's docs link to its own docs/results."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "hh-2d" / "hh-2d").mkdir(parents=True)
    monkeypatch.setenv("PUBLISH_DIR", str(elsewhere))
    docs = {path: path.read_text() for path in (Path("README.md"), Path("docs/benchmarks.md"))}
    assert retire.main(["hh-2d", "hh-2d", "defaults"]) == 0
    assert (elsewhere / "hh-2d" / "hh-2d@defaults").is_dir() and Path("docs/results/hh-2d/hh-2d").is_dir()
    assert {path: path.read_text() for path in docs} == docs


def test_an_interrupted_retirement_is_finished_by_the_same_command(retire, workspace, capsys):
    Path("runs/hh-2d").rename("runs/hh-2d@defaults")  # the first move happened, then the process died
    assert retire.main(["hh-2d", "hh-2d", "defaults"]) == 0
    assert Path("docs/results/hh-2d/hh-2d@defaults").is_dir() and "hh-2d@defaults/eval" in Path("README.md").read_text()
    assert "would" not in capsys.readouterr().out
    assert retire.main(["hh-2d", "hh-2d", "defaults"]) == 0
    assert "nothing left to do" in capsys.readouterr().out
