"""The refusal detector's audit on our own models' answers (docs/evaluation.md, "Audit on our own models' answers").

`draw` collects every answer to the audited prompt sets at each vertex of the named runs' cached generation points
(RUN/eval/**/cache/generations-*/, test split), deduplicated by (set, prompt, text), and appends the new ones to the
committed items; it writes the blind labelling sheet (item id, prompt, answer; shuffled by a fixed seed; no run, λ or
verdict) for the items not yet labelled. `score` reads the labels and prints, with 95 % intervals over prompts, the
detector's agreement with them on each half and the labelled refusal rate beside the detector's per run, vertex and
set.

    python benchmarks/refusal_audit.py draw runs/hh-2d-tche runs/soups-hh-2d
    python benchmarks/refusal_audit.py score

Committed (docs/results/refusal-audit/): `items.jsonl` (per item its set, prompt id, half, sources, the sha256 of the
answer and the detector's verdict when drawn), `labels.jsonl` (item, label, labeller) and `results.json`. The
answers' text stays in runs/refusal-audit/ (the harmful sets' answers stay out of the repository), so `score`
re-runs the current detector only where that text is on the machine; the verdicts recorded at drawing are always
there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from panacea.eval.bootstrap import percentile_interval, prompt_cluster, resample_weights
from panacea.eval.generations import PROMPT_SPLITS, load_prompts
from panacea.eval.refusal import agreement, half_of, is_refusal

from panacea._io import read_json, write_json, write_text

SETS = ("harmbench", "xstest_safe")  # the two sets issue 28's refusal targets name
LABELS = ("refusal", "compliance", "neither")
PUBLISHED = Path("docs/results/refusal-audit")
WORK = Path("runs/refusal-audit")  # the answers' text and the sheet: never committed
SHEET_SEED = 0


def vertex_caches(run: Path) -> list[tuple[str, tuple[float, ...], Path]]:
    """(cache folder relative to the run, vertex λ, file) of every cached generation point at a vertex, test split."""
    found = []
    for file in sorted((run / "eval").glob("**/cache/generations-*/*.json")):
        weights = tuple(float(weight) for weight in file.stem.split("-"))
        if sorted(weights) == [0.0] * (len(weights) - 1) + [1.0]:
            found.append((str(file.parent.relative_to(run)), weights, file))
    return found


def item_id(prompt_set: str, prompt_id: str, text: str) -> str:
    """16 hex digits of sha256 over (set, prompt id, answer): the same answer to the same prompt is one item."""
    return hashlib.sha256(f"{prompt_set}\n{prompt_id}\n{text}".encode()).hexdigest()[:16]


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> None:
    write_text(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def prompts_by_id() -> dict[str, dict[str, str]]:
    known = {prompt_set.name: prompt_set for prompt_set in PROMPT_SPLITS["test"].sets}
    return {name: {record["id"]: record["prompt"] for record in load_prompts(known[name])} for name in SETS}


def draw(runs: list[Path], published: Path = PUBLISHED, work: Path = WORK) -> dict[str, int]:
    """Append the runs' new vertex answers to the items, keep their text in `work`, and write the blind sheet of
    every item not yet labelled. Returns counts: items, new items, sheet rows."""
    items = {record["item"]: record for record in read_jsonl(published / "items.jsonl")}
    texts = {record["item"]: record["text"] for record in read_jsonl(work / "texts.jsonl")}
    prompts = prompts_by_id()
    new = 0
    for run in runs:
        caches = vertex_caches(run)
        if not caches:
            raise SystemExit(f"{run}: no cached generation point at a vertex under {run / 'eval'}.")
        for cache, weights, file in caches:
            responses = read_json(file)["responses"]
            for name in SETS:
                for answer in responses.get(name, []):
                    key = item_id(name, answer["id"], answer["text"])
                    source = {"run": run.name, "cache": cache, "weights": list(weights)}
                    if key not in items:
                        new += 1
                        items[key] = {
                            "item": key,
                            "set": name,
                            "prompt_id": answer["id"],
                            "half": half_of(prompts[name][answer["id"]]),
                            "answer_sha256": hashlib.sha256(answer["text"].encode()).hexdigest(),
                            "detector": is_refusal(answer["text"]),
                            "sources": [],
                        }
                    if source not in items[key]["sources"]:
                        items[key]["sources"].append(source)
                    texts[key] = answer["text"]
    labelled = {record["item"] for record in read_jsonl(published / "labels.jsonl")}
    unlabelled = sorted(key for key in items if key not in labelled)
    random.Random(SHEET_SEED).shuffle(unlabelled)
    sheet = [
        {"item": key, "prompt": prompts[items[key]["set"]][items[key]["prompt_id"]], "answer": texts[key]}
        for key in unlabelled
    ]
    write_jsonl(published / "items.jsonl", [items[key] for key in sorted(items)])
    write_jsonl(work / "texts.jsonl", [{"item": key, "text": texts[key]} for key in sorted(texts)])
    write_jsonl(work / "sheet.jsonl", sheet)
    return {"items": len(items), "new": new, "sheet": len(sheet)}


def read_labels(path: Path, items: dict[str, dict]) -> dict[str, str]:
    """{item: label}; one error naming the line for an unknown item, an unknown label or an item labelled twice."""
    labels: dict[str, str] = {}
    for number, record in enumerate(read_jsonl(path), 1):
        where = f"{path}:{number}"
        if record.get("item") not in items:
            raise SystemExit(f"{where}: item {record.get('item')!r} is not in the audit's items.")
        if record.get("label") not in LABELS:
            raise SystemExit(f"{where}: label {record.get('label')!r} is not one of {list(LABELS)}.")
        if record["item"] in labels:
            raise SystemExit(f"{where}: item {record['item']} is labelled twice.")
        labels[record["item"]] = record["label"]
    return labels


def rate_rows(rows: list[dict], columns: tuple[str, ...]) -> list[dict]:
    """Per (run, cache, vertex, set): the labelled refusal rate and each detector column's, with intervals."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        for source in row["sources"]:
            groups[(source["run"], source["cache"], tuple(source["weights"]), row["set"])].append(row)
    table = []
    for (run, cache, weights, name), members in sorted(groups.items()):
        clusters = [member["cluster"] for member in members]
        weights_matrix = resample_weights(clusters)
        entry = {"run": run, "cache": cache, "weights": list(weights), "set": name, "answers": len(members)}
        for column in ("labelled", *columns):
            values = np.array([member[column] for member in members], dtype=float)
            resampled = weights_matrix @ values / weights_matrix.sum(1)
            entry[column] = {"value": float(values.mean()), "interval": percentile_interval(resampled)}
        entry["neither"] = float(np.mean([member["label"] == "neither" for member in members]))
        table.append(entry)
    return table


def agreement_intervals(rows: list[dict], columns: tuple[str, ...]) -> dict[str, dict[str, list[float]]]:
    """Per half, the 95 % interval over prompts of each column's agreement with the labels and, with two columns,
    of the second's agreement minus the first's (`difference`; the same resamples: paired)."""
    intervals: dict[str, dict[str, list[float]]] = {}
    for half in ("dev", "test"):
        members = [row for row in rows if row["half"] == half]
        if not members:
            continue
        weights = resample_weights([row["cluster"] for row in members])
        agree = {
            column: weights
            @ np.array([row[column] == row["labelled"] for row in members], dtype=float)
            / weights.sum(1)
            for column in columns
        }
        intervals[half] = {column: percentile_interval(samples) for column, samples in agree.items()}
        if len(columns) == 2:
            intervals[half]["difference"] = percentile_interval(agree[columns[1]] - agree[columns[0]])
    return intervals


def score(published: Path = PUBLISHED, work: Path = WORK) -> dict:
    items = {record["item"]: record for record in read_jsonl(published / "items.jsonl")}
    labels = read_labels(published / "labels.jsonl", items)
    texts = {record["item"]: record["text"] for record in read_jsonl(work / "texts.jsonl")}
    rows = [
        items[key]
        | {
            "label": label,
            "labelled": label == "refusal",
            "cluster": prompt_cluster(f"{items[key]['set']}/{items[key]['prompt_id']}"),
            "current": is_refusal(texts[key]) if key in texts else None,
        }
        for key, label in labels.items()
    ]
    if not rows:
        raise SystemExit(f"{published / 'labels.jsonl'}: no labels yet.")
    halves = [row["half"] for row in rows]
    labelled = [row["labelled"] for row in rows]
    result = {
        "labels": {name: sum(row["label"] == name for row in rows) for name in LABELS},
        "unlabelled": len(items) - len(rows),
        "drawn": agreement([row["detector"] for row in rows], labelled, halves),
    }
    columns: tuple[str, ...] = ("detector",)
    if all(row["current"] is not None for row in rows):  # the answers' text is on this machine
        result["current"] = agreement([row["current"] for row in rows], labelled, halves)
        columns = ("detector", "current")
    result["intervals"] = agreement_intervals(rows, columns)
    result["rates"] = rate_rows(rows, columns)
    write_json(published / "results.json", result)
    return result


def markdown(result: dict) -> str:
    lines = [f"labels: {result['labels']}, unlabelled items: {result['unlabelled']}", ""]
    lines += ["| detector | dev | test | precision | recall | completions |", "|---|---|---|---|---|---|"]
    column = {"drawn": "detector", "current": "current"}
    for name in ("drawn", "current"):
        if name in result:
            summary = result[name]
            cells = [
                f"{summary[half]:.3f} {_interval(result['intervals'][half][column[name]], 3)}"
                if half in result["intervals"]
                else "-"
                for half in ("dev", "test")
            ]
            lines.append(
                f"| {name} | {' | '.join(cells)} | {summary['precision']:.3f} | {summary['recall']:.3f}"
                f" | {summary['completions']} |"
            )
    if "current" in result:
        intervals = result["intervals"]
        cells = [
            f"{result['current'][half] - result['drawn'][half]:+.3f} {_interval(intervals[half]['difference'], 3)}"
            for half in ("dev", "test")
            if half in intervals
        ]
        lines += ["", f"agreement, current − drawn (paired): dev, test = {', '.join(cells)}"]
    current = "current" in result
    lines += [
        "",
        "| run | cache | λ | set | answers | refusal, labelled | refusal, detector as drawn"
        + (" | refusal, detector now" if current else "")
        + " | neither |",
        "|---|---|---|---|---|---|---|" + ("---|" if current else "") + "---|",
    ]
    for entry in result["rates"]:
        names = ("labelled", "detector", "current") if current else ("labelled", "detector")
        cells = [f"{entry[name]['value']:.2f} {_interval(entry[name]['interval'], 2)}" for name in names]
        weights = ", ".join(f"{weight:g}" for weight in entry["weights"])
        lines.append(
            f"| {entry['run']} | {entry['cache']} | ({weights}) | {entry['set']} | {entry['answers']}"
            f" | {' | '.join(cells)} | {entry['neither']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _interval(bounds: list[float], digits: int) -> str:
    return f"[{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    drawing = commands.add_parser("draw", help="Append the runs' vertex answers and write the blind sheet.")
    drawing.add_argument("runs", nargs="+", type=Path, help="Evaluated run folders (runs/NAME).")
    commands.add_parser("score", help="The detector against the labels, with intervals.")
    args = parser.parse_args(argv)
    if args.command == "draw":
        counts = draw(args.runs)
        print(f"{counts['items']} items ({counts['new']} new); {counts['sheet']} to label in {WORK / 'sheet.jsonl'}")
    else:
        print(markdown(score()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
