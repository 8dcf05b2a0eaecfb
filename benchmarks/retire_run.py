"""Move a benchmark run aside under a label, so that its name can train again with a changed config.

    python benchmarks/retire_run.py hh-2d hh-2d defaults        # hh-2d's Panacea + LS run becomes hh-2d@defaults
    python benchmarks/retire_run.py hh-2d hh-2d defaults --dry-run

`benchmarks/fronts.sh NAME` refuses to reuse a finished training of RUN whose config differs from the one it would
train RUN with now (new defaults, new held-out sets); this keeps the old run, under RUN@LABEL, everywhere its name
identifies it:
  - runs/RUN → runs/RUN@LABEL (checkpoints, caches; a moved run still evaluates and resumes where it lies), and
    runs/.reference-snapshots/RUN with it;
  - docs/results/NAME/RUN → docs/results/NAME/RUN@LABEL (its training record, weights and published fronts), and
    every markdown link to a file under it (README.md, docs/**/*.md), so the docs keep pointing at what they
    describe; fronts.sh no longer compares it (it compares the runs it trains, by name);
  - the refusal audit's items (docs/results/refusal-audit/items.jsonl): each answer's source run RUN becomes
    RUN@LABEL, so its blind labels stay with the answers they judged and the new training's answers are drawn
    under RUN. Re-run `python benchmarks/refusal_audit.py score` afterwards to rename it in the audit's results.

Nothing moves unless every step can: a target that exists beside its source, or a RUN found nowhere, is refused
first. Files are rewritten through a temporary file and a rename; an interrupted retirement is finished by the same
command again (what is done is skipped). The run's own published markdown (answers.md) moves unchanged. Run it while
no job uses RUN; commit docs/ afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from panacea._io import write_jsonl, write_text

AUDIT_ITEMS = "refusal-audit/items.jsonl"  # under docs/results (benchmarks/refusal_audit.py)
LINK_END = r"(?=[/)\s#`\"'>]|$)"  # the path ends at a folder separator, a link's end or whitespace


def retired_name(name: str, run: str, label: str) -> str:
    """RUN@LABEL; NAME, RUN and LABEL each a plain name (letters, digits, '.', '_', '-'): none reaches elsewhere."""
    for what, value in (("benchmark", name), ("run", run), ("label", label)):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise SystemExit(f"retire_run: the {what} {value!r} must be letters, digits, '.', '_' or '-'.")
    return f"{run}@{label}"


def plan(name: str, run: str, label: str, runs: Path, published: Path, docs: list[Path], items: Path) -> list[tuple]:
    """The steps retiring RUN takes, as (kind, what, detail); refuses (SystemExit) before any of them if one cannot
    be taken."""
    retired = retired_name(name, run, label)
    steps: list[tuple] = []
    folders = (runs / run, runs / ".reference-snapshots" / run, published / name / run)
    for folder in folders:
        target = folder.with_name(retired)
        if folder.exists() and target.exists():
            raise SystemExit(f"retire_run: {target} exists already; choose another label. Nothing moved.")
        if folder.exists():
            steps.append(("move", folder, target))
    done = [folder for folder in folders if not folder.exists() and folder.with_name(retired).exists()]
    if not steps and not done:
        raise SystemExit(f"retire_run: neither {runs / run} nor {published / name / run} exists. Nothing moved.")
    moved = [folder for folder in folders if folder.exists()]
    for doc in docs:
        if any(doc.resolve().is_relative_to(folder.resolve()) for folder in moved):  # its own (answers.md): not
            continue  # rewritten (a model's answer may hold any path), and their links move with them
        text, count = retarget_links(doc, published / name / run, published / name / retired)
        if count:
            steps.append(("links", doc, (text, count)))
    if items.is_file():
        records = [json.loads(line) for line in items.read_text().splitlines() if line.strip()]
        sources = [source for record in records for source in record["sources"] if source["run"] == run]
        for source in sources:
            source["run"] = retired
        if sources:  # written as refusal_audit writes it: a record a line, in the same order
            steps.append(("items", items, (records, len(sources))))
    return steps


def retarget_links(doc: Path, old: Path, new: Path) -> tuple[str, int]:
    """DOC's text with each path to OLD (or to a file under it) pointing at NEW instead, and how many there were.

    A path is matched as written relative to DOC's folder (a link) or to the checkout's root (a path named in the
    text, e.g. `docs/results/hh-2d/hh-2d`), whole: not inside a longer name (hh-2d-tche, hh-2d@first). A folder
    outside the checkout (PUBLISH_DIR elsewhere) has no links here; a bare sibling name (no '/') is not matched."""
    text, count = doc.read_text(), 0
    if not old.resolve().is_relative_to(Path.cwd().resolve()):
        return text, 0
    for base in sorted({doc.parent, Path(".")}):
        written = os.path.relpath(old, base)
        if "/" not in written:
            continue
        pattern = re.compile(rf"(?<![\w.@/-]){re.escape(written)}{LINK_END}")
        text, found = pattern.subn(os.path.relpath(new, base), text)
        count += found
    return text, count


def apply(steps: list[tuple]) -> None:
    for kind, what, detail in steps:
        if kind == "move":
            detail.parent.mkdir(parents=True, exist_ok=True)
            os.rename(what, detail)
        elif kind == "links":
            write_text(what, detail[0])
        else:
            write_jsonl(what, detail[0])


def describe(step: tuple) -> str:
    kind, what, detail = step
    if kind == "move":
        return f"move {what} → {detail}"
    if kind == "links":
        return f"point {detail[1]} link(s) in {what} at the retired run's folder"
    return f"rename {detail[1]} answer source(s) in {what}"


def markdown_files(root: Path) -> list[Path]:
    """README.md and every markdown file under docs/ (`plan` leaves those of the moved folders alone)."""
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    return files + sorted((root / "docs").rglob("*.md"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the benchmark, e.g. hh-2d (configs/NAME.yaml, docs/results/NAME/)")
    parser.add_argument("run", help="the run to retire, e.g. hh-2d or soups-hh-2d")
    parser.add_argument("label", help="what distinguishes it, e.g. 'defaults': it becomes RUN@LABEL")
    parser.add_argument("--dry-run", action="store_true", help="print the steps; change nothing")
    args = parser.parse_args(argv)
    runs = Path(os.environ.get("RUNS_DIR", "runs"))
    published = Path(os.environ.get("PUBLISH_DIR", "docs/results"))
    steps = plan(args.name, args.run, args.label, runs, published, markdown_files(Path(".")), published / AUDIT_ITEMS)
    for step in steps:
        print(("would " if args.dry_run else "") + describe(step))
    if not steps:
        print(f"{args.run} is retired as {retired_name(args.name, args.run, args.label)} already: nothing left to do")
    if not args.dry_run:
        apply(steps)  # the moves first, then the rewrites (no file rewritten lies in a moved folder)
        if any(step[0] == "items" for step in steps):
            print("now: python benchmarks/refusal_audit.py score (the audit's results name the retired run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
