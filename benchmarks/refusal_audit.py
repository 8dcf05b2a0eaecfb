"""The refusal detector's audit on our own models' answers (docs/evaluation.md, "Audit on our own models' answers").

`draw` collects every answer to the audited prompt sets at each vertex of the named runs' cached generation points
(RUN/eval/**/cache/generations-*/, test split; `--every-point`: at every grid point, a soups run's interior ones in
mode ab), deduplicated by (set, prompt, text), and appends the new ones to the
committed items, each in the *round* of the detector that judged it when drawn. It writes the blind labelling sheet
for the items not yet labelled: rows of (sheet id, row, prompt, answer), shuffled by a fixed seed, the rows mapped
to items only in runs/ — no item id, run, λ or verdict on the sheet (blind to a labeller who does not read this
repository: the committed items' hashes would map an answer back). `take` turns the labeller's file of
(sheet id, row, label) for the last sheet into the committed labels. `score` prints, per round, the agreement of
the detector as drawn and of today's with the labels on each half (accuracy, precision, recall; 95 % intervals over
prompts and the paired difference), the labelled refusal rate beside the detectors' per run, vertex and set, and
each run's refusal gain between its vertices (issue 28's target) and its difference between runs, paired by prompt.

    python benchmarks/refusal_audit.py draw runs/hh-2d-tche runs/soups-hh-2d
    python benchmarks/refusal_audit.py take runs/refusal-audit/labels-SHEET.jsonl --labeller "who, when"
    python benchmarks/refusal_audit.py score [--half dev]    # --half dev: while choosing phrases, never the test half

Committed (docs/results/refusal-audit/): `items.jsonl` (per item its set, prompt id, half, sources (run, cache, λ,
the run's dimension names), the sha256 of the answer, the detector's verdict when drawn and that detector's digest:
its round), `labels.jsonl` (item, label, labeller) and `results.json`. The answers' text stays in
runs/refusal-audit/, out of the audit's committed files, so `score` judges with today's detector only where that
text is on the machine; the verdicts recorded at drawing are always there.
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
import yaml
from panacea.eval.bootstrap import clustered_mean, percentile_interval, prompt_cluster, resample_weights
from panacea.eval.generations import DETECTORS, PROMPT_SPLITS, load_prompts
from panacea.eval.refusal import agreement, half_of, is_refusal
from panacea.eval.report import format_interval

from panacea._io import read_json, write_json, write_jsonl
from panacea.preferences import is_vertex

SETS = ("harmbench", "xstest_safe")  # the two sets issue 28's refusal targets name
LABELS = ("refusal", "compliance", "neither")
HALVES = ("dev", "test")
PUBLISHED = Path("docs/results/refusal-audit")
WORK = Path("runs/refusal-audit")  # the answers' text, the sheet and its key: never committed
SHEET_SEED = 0


SOUPS_MODE = "ab"  # a soups run's interior points are drawn in the deciding comparison's mode only


def point_caches(run: Path, *, every_point: bool = False) -> list[tuple[str, tuple[float, ...], Path]]:
    """(cache folder relative to the run, λ, file) of every cached generation point at a vertex, test split; with
    `every_point`, at every grid point — a soups run's interior points from its SOUPS_MODE caches only (its modes
    answer an interior λ differently; a vertex is its member alone in every mode)."""
    found = []
    for file in sorted((run / "eval").glob("**/cache/generations-*/*.json")):
        weights = tuple(float(weight) for weight in file.stem.split("-"))
        relative = file.parent.relative_to(run)  # eval/cache/generations-… or eval/MODE/cache/generations-…
        mode = None if relative.parts[1] == "cache" else relative.parts[1]
        if is_vertex(weights) or (every_point and mode in (None, SOUPS_MODE)):
            found.append((str(relative), weights, file))
    return found


def item_id(prompt_set: str, prompt_id: str, text: str) -> str:
    """16 hex digits of sha256 over (set, prompt id, answer): the same answer to the same prompt is one item."""
    return hashlib.sha256(f"{prompt_set}\n{prompt_id}\n{text}".encode()).hexdigest()[:16]


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file ([] when it is missing); one error naming the line of a bad one."""
    if not path.is_file():
        return []
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise SystemExit(f"{path}:{number}: not JSON ({error.msg}).") from None
            if not isinstance(record, dict):
                raise SystemExit(f"{path}:{number}: a JSON object per line, got {type(record).__name__}.")
            records.append(record)
    return records


def prompts_by_id() -> dict[str, dict[str, str]]:
    known = {prompt_set.name: prompt_set for prompt_set in PROMPT_SPLITS["test"].sets}
    return {name: {record["id"]: record["prompt"] for record in load_prompts(known[name])} for name in SETS}


def dimension_names(run: Path) -> list[str]:
    """The run's dimension names in λ's order, from its config.yaml."""
    try:
        return [dimension["name"] for dimension in yaml.safe_load((run / "config.yaml").read_text())["dimensions"]]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as error:
        raise SystemExit(f"{run / 'config.yaml'}: cannot read the run's dimension names ({error}).") from error


def draw(
    runs: list[Path], published: Path = PUBLISHED, work: Path = WORK, *, force: bool = False, every_point: bool = False
) -> dict:
    """Append the runs' new vertex answers (`every_point`: at every grid point, `point_caches`) to the items, keep
    their text in `work`, and write the blind sheet (and its key) of every item not yet labelled, under a new sheet
    id. Refuses while the last sheet still has unlabelled rows, unless `force`. Returns counts (items, new items,
    sheet rows) and the sheet's id."""
    items = {record["item"]: record for record in read_jsonl(published / "items.jsonl")}
    texts = {record["item"]: record["text"] for record in read_jsonl(work / "texts.jsonl")}
    prompts = prompts_by_id()
    new = 0
    for run in runs:
        caches = point_caches(run, every_point=every_point)
        if not caches:
            raise SystemExit(f"{run}: no cached generation point at a vertex under {run / 'eval'}.")
        dimensions = dimension_names(run)
        for cache, weights, file in caches:
            responses = read_json(file)["responses"]
            for name in SETS:
                for answer in responses.get(name, []):
                    key = item_id(name, answer["id"], answer["text"])
                    source = {"run": run.name, "cache": cache, "weights": list(weights), "dimensions": dimensions}
                    if key not in items:
                        new += 1
                        items[key] = {
                            "item": key,
                            "set": name,
                            "prompt_id": answer["id"],
                            "half": half_of(prompts[name][answer["id"]]),
                            "answer_sha256": hashlib.sha256(answer["text"].encode()).hexdigest(),
                            "detector": is_refusal(answer["text"]),
                            "round": DETECTORS["refusal_detector"],  # the detector that judged it when drawn
                            "sources": [],
                        }
                    if source not in items[key]["sources"]:
                        items[key]["sources"].append(source)
                    texts[key] = answer["text"]
    answers_by_group(items.values())  # before anyone labels both answers of a prompt (e.g. a stale cache)
    labelled = {record["item"] for record in read_jsonl(labels_file(published))}
    pending = [record for record in read_jsonl(work / "sheet-key.jsonl") if record["item"] not in labelled]
    if pending and not force:
        raise SystemExit(
            f"{work / 'sheet.jsonl'} (sheet {pending[0]['sheet']}) still has {len(pending)} unlabelled row(s): `take`"
            " its labels first, or draw again with --force (a labeller's file for that sheet is then refused)."
        )
    unlabelled = sorted(key for key in items if key not in labelled and key in texts)
    if absent := sum(key not in labelled and key not in texts for key in items):
        print(f"{absent} unlabelled item(s) left off the sheet: their answers are not on this machine", file=sys.stderr)
    random.Random(SHEET_SEED).shuffle(unlabelled)
    sheet_id = hashlib.sha256("\n".join(unlabelled).encode()).hexdigest()[:8]
    sheet = [
        {
            "sheet": sheet_id,
            "row": row,
            "prompt": prompts[items[key]["set"]][items[key]["prompt_id"]],
            "answer": texts[key],
        }
        for row, key in enumerate(unlabelled, 1)
    ]
    write_jsonl(published / "items.jsonl", [items[key] for key in sorted(items)])
    write_jsonl(work / "texts.jsonl", [{"item": key, "text": texts[key]} for key in sorted(texts)])
    write_jsonl(work / "sheet.jsonl", sheet)
    key = [{"sheet": sheet_id, "row": row, "item": item} for row, item in enumerate(unlabelled, 1)]
    write_jsonl(work / "sheet-key.jsonl", key)
    return {"items": len(items), "new": new, "sheet": len(sheet), "sheet_id": sheet_id}


def labels_file(published: Path, *, second: bool = False) -> Path:
    """Where the labels are kept: labels.jsonl, or a second labeller's (agreement only) second-labels.jsonl."""
    return published / ("second-labels.jsonl" if second else "labels.jsonl")


def take(labelled: Path, labeller: str, published: Path = PUBLISHED, work: Path = WORK, *, second: bool = False) -> int:
    """Append the labeller's file of {"sheet", "row", "label"} (one per row of the last sheet) to the committed
    labels, each row mapped to its item by the sheet's key. Refuses a file of another sheet, one that misses, repeats
    or adds a row, or a bad label, naming the line; nothing is written then. Returns how many labels were added.

    `second`: a second labeller's labels of some rows of the sheet (any subset), kept apart in second-labels.jsonl
    for the labellers' agreement (`score`), never in the rates."""
    if not (work / "sheet-key.jsonl").is_file():
        raise SystemExit(f"{work / 'sheet-key.jsonl'} is missing: `draw` writes a sheet and its key first.")
    records = read_jsonl(work / "sheet-key.jsonl")
    sheet_id = records[0]["sheet"] if records else None
    key = {record["row"]: record["item"] for record in records}
    target = labels_file(published, second=second)
    labels = read_jsonl(target)
    done = {record["item"] for record in labels}
    seen: set[int] = set()
    for number, record in enumerate(read_jsonl(labelled), 1):
        where = f"{labelled}:{number}"
        if record.get("sheet") != sheet_id:
            raise SystemExit(f"{where}: sheet {record.get('sheet')!r} is not the last sheet drawn ({sheet_id}).")
        if type(record.get("row")) is not int or record["row"] not in key:
            raise SystemExit(f"{where}: row {record.get('row')!r} is not a row of {work / 'sheet.jsonl'}.")
        if record["row"] in seen or key[record["row"]] in done:
            raise SystemExit(f"{where}: row {record['row']} is labelled already.")
        if record.get("label") not in LABELS:
            raise SystemExit(f"{where}: label {record.get('label')!r} is not one of {list(LABELS)}.")
        seen.add(record["row"])
        labels.append({"item": key[record["row"]], "label": record["label"], "labeller": labeller})
    if not second and (missing := sorted(set(key) - seen)):
        raise SystemExit(f"{labelled}: {len(missing)} row(s) of the sheet have no label, e.g. row {missing[0]}.")
    write_jsonl(target, labels)
    return len(seen)


def labeller_agreement(first: dict[str, str], second: dict[str, str]) -> dict:
    """Two labellers on the items both labelled: the share with the same label, the share agreeing on `refusal`
    or not (what the rates count), and Cohen's κ of that refusal call; `items`: how many."""
    shared = sorted(first.keys() & second.keys())
    if not shared:
        return {"items": 0}
    same = np.mean([first[item] == second[item] for item in shared])
    calls = np.array([[first[item] == "refusal", second[item] == "refusal"] for item in shared], dtype=float)
    observed = float(np.mean(calls[:, 0] == calls[:, 1]))
    expected = float(calls[:, 0].mean() * calls[:, 1].mean() + (1 - calls[:, 0].mean()) * (1 - calls[:, 1].mean()))
    kappa = (observed - expected) / (1 - expected) if expected < 1 else float("nan")
    return {"items": len(shared), "same_label": float(same), "refusal_agreement": observed, "kappa": kappa}


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


def answers_by_group(records) -> dict[tuple, dict[str, dict]]:
    """Per (run, λ, set), each prompt's one answer (its item record). Refuses a run that answers a prompt at a λ
    twice, differently (e.g. two caches of other settings or devices), naming both caches; nothing is written."""
    groups: dict[tuple, dict[str, tuple[dict, str]]] = defaultdict(dict)
    for record in records:
        for source in record["sources"]:
            group = (source["run"], tuple(source["weights"]), record["set"])
            kept, cache = groups[group].setdefault(record["prompt_id"], (record, source["cache"]))
            if kept["item"] != record["item"]:
                raise SystemExit(
                    f"{source['run']} at {list(source['weights'])} answers {record['set']} {record['prompt_id']} "
                    f"twice, differently in {cache} and {source['cache']} (items {kept['item']}, {record['item']}): "
                    "draw from one cache per run and λ (move the other aside); nothing written."
                )
    return {group: {prompt: record for prompt, (record, _) in answers.items()} for group, answers in groups.items()}


def rate_rows(groups: dict[tuple, dict[str, dict]], columns: tuple[str, ...]) -> list[dict]:
    """Per (run, vertex, set) of `answers_by_group`: the labelled refusal rate and each detector column's, with
    intervals over prompts (a soups run's vertex is cached for both modes: one row, its caches listed)."""
    table = []
    for (run, weights, name), answers in sorted(groups.items()):
        members = list(answers.values())
        clusters = [member["cluster"] for member in members]
        sources = [source for member in members for source in member["sources"]]
        caches = {source["cache"] for source in sources if (source["run"], tuple(source["weights"])) == (run, weights)}
        entry = {"run": run, "caches": sorted(caches), "weights": list(weights), "set": name}
        entry["answers"] = len(members)
        entry["rounds"] = sorted({member["round"] for member in members})  # >1: "as drawn" mixes detectors
        for column in ("labelled", *columns):
            entry[column] = clustered_mean([member[column] for member in members], clusters)
        entry["neither"] = float(np.mean([member["label"] == "neither" for member in members]))
        table.append(entry)
    return table


def gain_rows(
    groups: dict[tuple, dict[str, dict]], dimensions: dict[str, tuple[str, ...] | None], columns: tuple[str, ...]
) -> tuple[list[dict], list[dict]]:
    """How far a run's refusal moves between two of its vertices, and how two runs differ, paired by prompt.

    `gains`: per (run, set) and pair of vertices (from the earlier of λ's coordinates to the later: (1, 0) → (0, 1) on
    hh-2d, the helpful vertex to the harmless one, issue 28's "refusal gain"), the mean over the prompts both
    vertices answer of (refusal at `to` − refusal at `from`), labelled and by each detector column, with its 95 %
    interval over prompts. `differences`: for each two runs with the same dimensions in the same order, per set,
    their refusal rates at one point (a vertex, or an interior point where both were drawn `--every-point`) and
    their gains between two vertices, each difference the mean over the prompts both
    runs answer, with its interval. A measure over no shared prompt is left out. `groups`: `answers_by_group`'s;
    `dimensions`: `run_dimensions`'."""
    points: dict[tuple, dict[tuple, dict[str, dict]]] = defaultdict(dict)
    for (run, weights, name), answers in groups.items():
        points[(run, name)][weights] = answers
    measures: dict[tuple, dict[str, dict[str, dict[str, float]]]] = defaultdict(dict)  # what → run → prompt → column
    gains = []
    for (run, name), answers in sorted(points.items()):
        order = sorted(answers, reverse=True)  # e_0 first
        rates = {
            weights: {
                prompt: {column: float(record[column]) for column in ("labelled", *columns)}
                for prompt, record in answers[weights].items()
            }
            for weights in order
        }
        for weights in order:  # the rate at every point drawn (vertices, and interior points where drawn)
            measures[(dimensions[run], name, weights, None)][run] = rates[weights]
        corners = [weights for weights in order if is_vertex(weights)]  # gains: between vertices only
        for position, start in enumerate(corners):
            for end in corners[position + 1 :]:
                moves = {
                    prompt: {column: rates[end][prompt][column] - rates[start][prompt][column] for column in rate}
                    for prompt, rate in rates[start].items()
                    if prompt in rates[end]
                }
                measures[(dimensions[run], name, start, end)][run] = moves
                if moves:
                    entry = {"run": run, "set": name, "from": list(start), "to": list(end)}
                    gains.append(entry | _paired_means(name, [moves], columns))
    differences = []
    # per set: the rates at each vertex first, then the gains (a key is (dimensions, set, start, end or None))
    for (_, name, start, end), by_run in sorted(
        measures.items(), key=lambda item: (item[0][1], item[0][3] is not None)
    ):
        for position, run in enumerate(sorted(by_run)):
            for other in sorted(by_run)[position + 1 :]:
                if not set(by_run[run]) & set(by_run[other]):
                    continue
                entry = {"runs": [run, other], "set": name}
                entry |= {"at": list(start)} if end is None else {"from": list(start), "to": list(end)}
                differences.append(entry | _paired_means(name, [by_run[run], by_run[other]], columns))
    return gains, differences


def run_dimensions(rows: list[dict]) -> dict[str, tuple[str, ...] | None]:
    """Each run's dimension names in λ's order, as drawn (None for items drawn before names were recorded, which
    pair only with one another); refuses a run recorded with two orders."""
    names: dict[str, tuple[str, ...] | None] = {}
    for record in rows:
        for source in record["sources"]:
            found = tuple(source["dimensions"]) if "dimensions" in source else None
            if names.setdefault(source["run"], found) != found:
                raise SystemExit(f"{source['run']} is recorded with dimensions {names[source['run']]} and {found}.")
    return names


def _paired_means(name: str, values: list[dict[str, dict[str, float]]], columns: tuple[str, ...]) -> dict:
    """The mean of one per-prompt measure (or of the first minus the second) over the prompts they share (at least
    one), per column, with its 95 % interval over prompts, and the count of those prompts (`answers`)."""
    prompts = sorted(set.intersection(*(set(value) for value in values)))
    clusters = [prompt_cluster(f"{name}/{prompt}") for prompt in prompts]
    result: dict = {"answers": len(prompts)}
    for column in ("labelled", *columns):
        per_prompt = [
            values[0][prompt][column] - sum(value[prompt][column] for value in values[1:]) for prompt in prompts
        ]
        result[column] = clustered_mean(per_prompt, clusters)
    return result


def half_agreement(rows: list[dict], columns: tuple[str, ...]) -> dict[str, dict]:
    """Per half present: each column's agreement with the labels (`agreement`: accuracy, precision, recall, counts)
    with the 95 % interval over prompts of its accuracy, and with two columns the second's accuracy minus the
    first's with its interval (`difference`; the same resamples: paired)."""
    summary: dict[str, dict] = {}
    for half in HALVES:
        members = [row for row in rows if row["half"] == half]
        if not members:
            continue
        weights = resample_weights([row["cluster"] for row in members])
        labelled = [row["labelled"] for row in members]
        summary[half] = {}
        samples = {}
        for column in columns:
            verdicts = [row[column] for row in members]
            measured = agreement(verdicts, labelled, [half] * len(members))
            correct = np.array([verdict == label for verdict, label in zip(verdicts, labelled, strict=True)], float)
            samples[column] = weights @ correct / weights.sum(1)
            summary[half][column] = {
                "accuracy": measured[half],
                "interval": percentile_interval(samples[column]),
                **{key: measured[key] for key in ("precision", "recall", "completions", "refusals")},
            }
        if len(columns) == 2:
            first, second = columns
            summary[half]["difference"] = {
                "value": summary[half][second]["accuracy"] - summary[half][first]["accuracy"],
                "interval": percentile_interval(samples[second] - samples[first]),
            }
    return summary


def score(published: Path = PUBLISHED, work: Path = WORK, *, half: str | None = None) -> dict:
    """The detectors against the labels (`half`: that half only, e.g. 'dev' while choosing phrases); writes
    results.json when scoring every label (both halves). Today's detector judges only where every labelled answer's
    text is on this machine (runs/ does not survive a machine change); else the results hold the verdicts recorded
    at drawing alone and say how many texts were missing (`texts_missing`), so a new machine's labels of new runs still
    reach results.json, and the targets, which read the labelled rates; a results.json that today's detector scored
    on the same items and labels (`basis`) is kept rather than replaced by one without its columns."""
    items = {record["item"]: record for record in read_jsonl(published / "items.jsonl")}
    labels = read_labels(labels_file(published), items)
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
        if half is None or items[key]["half"] == half
    ]
    for row in rows:
        row.setdefault("round", "unrecorded")  # drawn before rounds were recorded
    if not rows:
        raise SystemExit(f"{published / 'labels.jsonl'}: no labels{f' on the {half} half' if half else ''} yet.")
    columns: tuple[str, ...] = ("detector", "current")
    if any(row["current"] is None for row in rows):  # the answers' text is not on this machine
        columns = ("detector",)
    rounds = defaultdict(list)
    for row in rows:
        rounds[row["round"]].append(row)
    result = {
        "labels": {name: sum(row["label"] == name for row in rows) for name in LABELS},
        "unlabelled": len(items) - len(labels),
        "half": half or "both",
        "detector_now": DETECTORS["refusal_detector"] if len(columns) == 2 else None,
        "texts_missing": sum(row["current"] is None for row in rows),
        "rounds": {digest: half_agreement(members, columns) for digest, members in sorted(rounds.items())},
    }
    if half is None and (second := labels_file(published, second=True)).is_file():
        result["agreement"] = labeller_agreement(labels, read_labels(second, items))
    groups = answers_by_group(rows)
    result["rates"] = rate_rows(groups, columns)
    result["gains"], result["differences"] = gain_rows(groups, run_dimensions(rows), columns)
    result["basis"] = audit_basis(published)
    if half is None and not _keeps_richer(published / "results.json", result):  # every label
        write_json(published / "results.json", result)
    return result


def audit_basis(published: Path) -> str:
    """The sha256 of what a score reads from the audit's committed files (items and both labellers' labels)."""
    digest = hashlib.sha256()
    for file in (published / "items.jsonl", labels_file(published), labels_file(published, second=True)):
        digest.update(file.read_bytes() if file.is_file() else b"-")
    return digest.hexdigest()


def _keeps_richer(existing: Path, result: dict) -> bool:
    """Whether `existing` results were judged by today's detector too, on the same items and labels, where `result`
    could not be (texts missing): then it stays. Results written before `basis` was recorded count as the same when
    their label counts and their (run, set, λ) groups are."""
    if result["detector_now"] is not None or not existing.is_file():
        return False
    earlier = read_json(existing)
    if earlier.get("detector_now") is None:
        return False
    if "basis" in earlier:
        return earlier["basis"] == result["basis"]
    groups = [
        sorted((r["run"], r["set"], tuple(r["weights"])) for r in rows) for rows in (earlier["rates"], result["rates"])
    ]
    same = (earlier["labels"], earlier["unlabelled"]) == (result["labels"], result["unlabelled"])
    return same and groups[0] == groups[1]


def markdown(result: dict) -> str:
    lines = [f"labels ({result['half']} halves): {result['labels']}, unlabelled items: {result['unlabelled']}", ""]
    if (agreement := result.get("agreement", {})).get("items"):
        lines[-1:] = [
            f"a second labeller on {agreement['items']} of them: the same label {agreement['same_label']:.3f}, the same"
            f" refusal call {agreement['refusal_agreement']:.3f}, Cohen's κ {agreement['kappa']:.3f}",
            "",
        ]
    names = {"detector": "as drawn", "current": f"now ({result['detector_now']})"}
    lines += [
        "| round (detector when drawn) | half | detector | accuracy | precision | recall | answers |",
        "|---|---|---|---|---|---|---|",
    ]
    for digest, halves in result["rounds"].items():
        for half, summary in halves.items():
            for column in (column for column in names if column in summary):
                measured = summary[column]
                accuracy = format_interval(measured["accuracy"], measured["interval"])
                lines.append(
                    f"| {digest} | {half} | {names[column]} | {accuracy} | {_number(measured['precision'])}"
                    f" | {_number(measured['recall'])} | {measured['completions']} |"
                )
            if "difference" in summary:
                difference = summary["difference"]
                lines.append(
                    f"| {digest} | {half} | now − as drawn (paired) |"
                    f" {format_interval(difference['value'], difference['interval'], sign=True)} | | | |"
                )
    current = result["detector_now"] is not None
    if result.get("texts_missing"):
        lines += [
            "",
            f"today's detector not run: {result['texts_missing']} labelled answers' text is not on this "
            "machine (runs/refusal-audit/texts.jsonl); the detector columns are the verdicts recorded at drawing",
        ]
    lines += [
        "",
        "| run | λ | set | answers | refusal, labelled | detector as drawn"
        + (" | detector now" if current else "")
        + " | neither |",
        "|---|---|---|---|---|---|" + ("---|" if current else "") + "---|",
    ]
    for entry in result["rates"]:
        columns = ("labelled", "detector", "current") if current else ("labelled", "detector")
        cells = [format_interval(entry[column]["value"], entry[column]["interval"], 2) for column in columns]
        if len(entry["rounds"]) > 1:  # answers drawn in different rounds were judged by different detectors then
            cells[1] += f" (mixed: {len(entry['rounds'])} rounds)"
        lines.append(
            f"| {entry['run']} | {_weights(entry['weights'])} | {entry['set']} | {entry['answers']}"
            f" | {' | '.join(cells)} | {entry['neither']:.2f} |"
        )
    lines += [
        "",
        "Refusal gain between two vertices of a run, and differences between runs (each paired by prompt):",
        "",
        "| run | set | measure | answers | labelled | detector as drawn"
        + (" | detector now" if current else "")
        + " |",
        "|---|---|---|---|---|---|" + ("---|" if current else ""),
    ]
    columns = ("labelled", "detector", "current") if current else ("labelled", "detector")
    for entry in result["gains"] + result["differences"]:
        run = entry["run"] if "run" in entry else " − ".join(entry["runs"])
        if "at" in entry:
            measure = f"refusal at {_weights(entry['at'])}"
        else:
            measure = f"gain {_weights(entry['from'])} → {_weights(entry['to'])}"
        cells = [format_interval(entry[column]["value"], entry[column]["interval"], 2, sign=True) for column in columns]
        lines.append(f"| {run} | {entry['set']} | {measure} | {entry['answers']} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def _weights(weights: list[float]) -> str:
    return "(" + ", ".join(f"{weight:g}" for weight in weights) + ")"


def _number(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"  # NaN: undefined (no refusal called, or none labelled)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    drawing = commands.add_parser("draw", help="Append the runs' vertex answers and write the blind sheet.")
    drawing.add_argument("runs", nargs="+", type=Path, help="Evaluated run folders (runs/NAME).")
    drawing.add_argument("--force", action="store_true", help="Replace a sheet that still has unlabelled rows.")
    drawing.add_argument(
        "--every-point",
        action="store_true",
        help=f"Every grid point, not only the vertices (soups: mode {SOUPS_MODE}).",
    )
    taking = commands.add_parser(
        "take", help="Add a labeller's labels of the last sheet ({'sheet', 'row', 'label'} lines)."
    )
    taking.add_argument("labels", type=Path, help="The labeller's JSON-lines file.")
    taking.add_argument("--labeller", required=True, help="Who labelled, and when (kept with every label).")
    taking.add_argument(
        "--second", action="store_true", help="A second labeller's labels of some rows: for agreement only."
    )
    scoring = commands.add_parser("score", help="The detectors against the labels, with intervals.")
    scoring.add_argument("--half", choices=HALVES, help="Only this half (dev: while choosing phrases).")
    args = parser.parse_args(argv)
    if args.command == "draw":
        counts = draw(args.runs, force=args.force, every_point=args.every_point)
        print(
            f"{counts['items']} items ({counts['new']} new); {counts['sheet']} to label in {WORK / 'sheet.jsonl'}"
            f" (sheet {counts['sheet_id']})"
        )
    elif args.command == "take":
        added = take(args.labels, args.labeller, second=args.second)
        print(f"{added} labels added to {labels_file(PUBLISHED, second=args.second)}")
    else:
        print(markdown(score(half=args.half)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
