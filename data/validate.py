#!/usr/bin/env python3
"""Check the preference data in this folder against its manifest.json (stdlib only, Python >= 3.10).

    python3 validate.py [DATA_DIR]        # DATA_DIR defaults to the folder of this file

For every file listed in manifest.json it checks that the file exists, that its sha256 and its
record counts (total, per split, per dim, per dim and split, per source, per label) match, and that
every line is a JSON object with exactly the expected keys whose values are non-empty strings without
leading or trailing whitespace. Pair records must have split "train" or "test" and chosen != rejected.
Ids must be unique across all files. Within one dim, no prompt (compared lower-cased with whitespace
collapsed) may occur in both train and test. A *.jsonl.gz file that the manifest does not list is an
error too.

The data is offensive by design, so problems are reported by file, line and id, never by text.
Prints "data ok: N files, M records" and exits 0, or lists the problems and exits 1.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

SPLITS = ("train", "test")
PAIR_KEYS = ("id", "prompt", "chosen", "rejected", "dim", "source", "split")
PROMPT_KEYS = ("id", "prompt", "label", "source")
KINDS = ("pairs", "prompts")
MAX_REPORTED_PER_FILE = 20


class Report:
    """Collects problems; caps how many are kept per file so one broken file cannot flood the output."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self._per_file: Counter[str] = Counter()

    def add(self, where: str, message: str) -> None:
        file = where.split(":", 1)[0]
        self._per_file[file] += 1
        if self._per_file[file] <= MAX_REPORTED_PER_FILE:
            self.problems.append(f"{where}: {message}")
        elif self._per_file[file] == MAX_REPORTED_PER_FILE + 1:
            self.problems.append(f"{file}: further problems in this file not shown")


def normalise(prompt: str) -> str:
    return " ".join(prompt.lower().split())


def load_manifest(folder: Path, report: Report) -> dict | None:
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        report.add("manifest.json", f"not found in {folder}; run the validator on the data folder")
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        report.add("manifest.json", f"cannot be read as JSON ({exc})")
        return None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        report.add("manifest.json", "expected an object with a non-empty 'files' object")
        return None
    for rel, entry in files.items():
        where = f"manifest.json[{rel}]"
        if Path(rel).is_absolute() or ".." in Path(rel).parts or not rel.endswith(".jsonl.gz"):
            report.add(where, "file names must be relative paths inside the data folder ending in .jsonl.gz")
        if not isinstance(entry, dict) or entry.get("kind") not in KINDS:
            report.add(where, f"entry must be an object with 'kind' one of {KINDS}")
            continue
        sha = entry.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64:
            report.add(where, "'sha256' must be a 64-character hex string")
        if not isinstance(entry.get("records"), int):
            report.add(where, "'records' must be an integer")
        extra = entry.get("extra_keys", [])
        if not isinstance(extra, list) or not all(isinstance(k, str) for k in extra):
            report.add(where, "'extra_keys' must be a list of key names")
    return manifest


def read_records(folder: Path, rel: str, entry: dict, report: Report) -> list[tuple[int, dict]] | None:
    path = folder / rel
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        report.add(rel, "listed in manifest.json but missing")
        return None
    except OSError as exc:
        report.add(rel, f"cannot be read ({exc})")
        return None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != entry.get("sha256"):
        report.add(rel, f"sha256 is {digest}, manifest says {entry.get('sha256')}: file changed or corrupt")
    try:
        text = gzip.decompress(raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        report.add(rel, f"not a gzip file of UTF-8 text ({exc})")
        return None
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            report.add(f"{rel}:{number}", f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            report.add(f"{rel}:{number}", f"expected a JSON object, got {type(obj).__name__}")
            continue
        records.append((number, obj))
    return records


def check_schema(
    rel: str, kind: str, extra_keys: list[str], records: list[tuple[int, dict]], report: Report
) -> list[tuple[int, dict]]:
    """Returns the records whose keys and values are well-formed."""
    expected = set(PAIR_KEYS if kind == "pairs" else PROMPT_KEYS) | set(extra_keys)
    good = []
    for number, obj in records:
        rid = obj.get("id") if isinstance(obj.get("id"), str) else "?"
        where = f"{rel}:{number} id={rid}"
        keys = set(obj)
        if keys != expected:
            parts = []
            if expected - keys:
                parts.append(f"missing {sorted(expected - keys)}")
            if keys - expected:
                parts.append(f"unexpected {sorted(keys - expected)}")
            report.add(where, "wrong keys: " + ", ".join(parts))
            continue
        bad = [k for k in sorted(keys) if not isinstance(obj[k], str)]
        if bad:
            report.add(where, f"values must be strings: {bad}")
            continue
        empty = [k for k in sorted(keys) if not obj[k].strip()]
        if empty:
            report.add(where, f"empty values: {empty}")
            continue
        padded = [k for k in sorted(keys) if obj[k] != obj[k].strip()]
        if padded:
            report.add(where, f"leading/trailing whitespace in: {padded}")
            continue
        if kind == "pairs":
            if obj["split"] not in SPLITS:
                report.add(where, f"split is {obj['split']!r}, expected one of {SPLITS}")
                continue
            if obj["chosen"] == obj["rejected"]:
                report.add(where, "chosen and rejected are identical")
                continue
        good.append((number, obj))
    return good


def check_counts(rel: str, entry: dict, kind: str, records: list[dict], report: Report) -> None:
    if len(records) != entry.get("records"):
        report.add(rel, f"{len(records)} records, manifest says {entry.get('records')}")
    for name, key in ("splits", "split"), ("dims", "dim"), ("sources", "source"), ("labels", "label"):
        if name in entry:
            got = dict(Counter(str(r.get(key)) for r in records))
            if got != entry[name]:
                report.add(rel, f"counts per {key} are {dict(sorted(got.items()))}, manifest says {entry[name]}")
    if kind == "pairs" and "dim_splits" in entry:
        nested: dict[str, dict[str, int]] = {}
        for (dim, split), n in Counter((str(r.get("dim")), str(r.get("split"))) for r in records).items():
            nested.setdefault(dim, {})[split] = n
        if nested != entry["dim_splits"]:
            report.add(rel, f"counts per dim and split are {nested}, manifest says {entry['dim_splits']}")


def validate(folder: Path) -> tuple[Report, int, int]:
    report = Report()
    manifest = load_manifest(folder, report)
    if manifest is None:
        return report, 0, 0
    files: dict = manifest["files"]
    listed = set(files)
    for path in sorted(folder.rglob("*.jsonl.gz")):
        rel = path.relative_to(folder).as_posix()
        if rel not in listed:
            report.add(rel, "not listed in manifest.json (add it with the build script or remove it)")

    ids: dict[str, str] = {}
    first_split: dict[tuple[str, str], tuple[str, str, str]] = {}  # (dim, prompt) -> (split, file, id)
    n_files = n_records = 0
    for rel in sorted(files):
        entry = files[rel]
        if not isinstance(entry, dict) or entry.get("kind") not in KINDS:
            continue
        kind = entry["kind"]
        raw = read_records(folder, rel, entry, report)
        if raw is None:
            continue
        good = check_schema(rel, kind, entry.get("extra_keys", []) if kind == "prompts" else [], raw, report)
        records = [obj for _, obj in raw]
        check_counts(rel, entry, kind, records, report)
        for number, obj in good:
            where = f"{rel}:{number} id={obj['id']}"
            if obj["id"] in ids:
                report.add(where, f"duplicate id, first used in {ids[obj['id']]}")
            else:
                ids[obj["id"]] = rel
            if kind != "pairs":
                continue
            key = (obj["dim"], normalise(obj["prompt"]))
            seen = first_split.setdefault(key, (obj["split"], rel, obj["id"]))
            if seen[0] != obj["split"]:
                report.add(
                    where,
                    f"prompt of dim {obj['dim']!r} is in {obj['split']} here and in "
                    f"{seen[0]} in {seen[1]} (id={seen[2]}): train/test leakage",
                )
        n_files += 1
        n_records += len(records)
    return report, n_files, n_records


def main(argv: list[str]) -> int:
    if len(argv) > 2 or (len(argv) == 2 and argv[1] in ("-h", "--help")):
        print(__doc__.strip())
        return 0 if len(argv) == 2 else 2
    folder = Path(argv[1]) if len(argv) == 2 else Path(__file__).resolve().parent
    if not folder.is_dir():
        print(f"data error: {folder} is not a folder; pass the data folder that holds manifest.json", file=sys.stderr)
        return 1
    report, n_files, n_records = validate(folder)
    if report.problems:
        for problem in report.problems:
            print(f"data error: {problem}", file=sys.stderr)
        print(f"data check FAILED: {len(report.problems)} problem(s) in {folder}", file=sys.stderr)
        return 1
    print(f"data ok: {n_files} files, {n_records} records")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
