"""Render the key tables of docs/training.md from the config dataclasses' fields; the code is the reference.

    python docs/keys.py           # rewrite the stale tables in docs/training.md
    python docs/keys.py --check   # write nothing; exit 1 naming the stale tables (tests/test_docs_keys.py does this)

A table follows a marker line `<!-- keys: TrainConfig -->` in the doc and runs to the first line that does not
start with `|`. Its rows are the dataclass's fields in order: key, default in YAML flow style (`**required**` for a
field without a default or with metadata "required"), and metadata["help"]. A `# --- run ---` comment in the class
body (TrainConfig's) becomes the section row `| *run* | | |` above the field it precedes. To change a row, change the
help string, then run this script; the way transformers' `make fix-copies` keeps its generated tables.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
from pathlib import Path
from typing import Any

from panacea.adapters import PanaceaConfig
from panacea.training.config import DimensionConfig, RLConfig, TrainConfig

from panacea._io import write_text
from panacea.data import PairSource, PromptSource

DOC = Path(__file__).resolve().with_name("training.md")
TABLES = {
    cls.__name__: cls for cls in (TrainConfig, DimensionConfig, PairSource, PanaceaConfig, RLConfig, PromptSource)
}  # the only list of generated tables: each is named by one marker in the doc
MARKER = re.compile(r"<!-- keys: (?P<name>\w+) -->")
SECTION = re.compile(r"# --- (?P<title>.+) ---")
HEADER = ["| key | default | what |", "|---|---|---|"]


def section_titles(cls: type) -> dict[str, str]:
    """Field name -> the title of the `# --- title ---` comment just above it, for the fields that open a section."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments = {  # line -> title; tokenize, so that a '#' inside a help string is never read as a comment
        token.start[0]: match["title"]
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT and (match := SECTION.fullmatch(token.string))
    }
    (body,) = ast.parse(source).body
    fields = [(node.lineno, node.target.id) for node in body.body if isinstance(node, ast.AnnAssign)]
    titles = {}
    for line, title in comments.items():
        following = [name for lineno, name in fields if lineno > line]
        if not following:
            raise ValueError(f"{cls.__name__}: section comment {title!r} on line {line} has no field below it.")
        titles[following[0]] = title
    return titles


def yaml_flow(value: Any) -> str:
    """`value` as YAML flow style with bare strings, e.g. `{init: lora, svd_rank: 0}`, `[0.9, 0.999]`, `null`."""
    if dataclasses.is_dataclass(value):  # a nested section: only its keys that differ from their defaults (`rl: {}`)
        value = {
            f.name: getattr(value, f.name) for f in dataclasses.fields(value) if getattr(value, f.name) != _default(f)
        }
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # 1e-08, 0.001, 1.0: as Python and the YAML loader read them back
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_flow(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {yaml_flow(item)}" for key, item in value.items()) + "}"
    return str(value)


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def render_table(cls: type) -> list[str]:
    """The markdown table of `cls`'s fields: header, then a row per field, section rows between."""
    titles = section_titles(cls)
    rows = list(HEADER)
    for field in dataclasses.fields(cls):
        if "help" not in field.metadata:
            raise ValueError(f"{cls.__name__}.{field.name} has no help string (metadata['help']); give it one.")
        if field.name in titles:
            rows.append(f"| *{titles[field.name]}* | | |")
        default = _default(field)
        shown = "**required**" if field.metadata.get("required") or default is dataclasses.MISSING else None
        what = " ".join(field.metadata["help"].split()).replace("|", r"\|")
        rows.append(f"| `{field.name}` | {shown or f'`{yaml_flow(default)}`'} | {what} |")
    return rows


def render(text: str) -> tuple[str, list[str]]:
    """`text` with every marked table rendered afresh, and the names of the tables that changed."""
    lines = text.split("\n")
    rendered, stale, seen = [], [], []
    index = 0
    while index < len(lines):
        rendered.append(lines[index])
        match = MARKER.fullmatch(lines[index].strip())
        index += 1
        if match is None:
            continue
        name = match["name"]
        if name not in TABLES:
            raise ValueError(f"line {index}: unknown key table {name!r}; the tables are {sorted(TABLES)}.")
        if name in seen:
            raise ValueError(f"line {index}: the key table {name!r} is marked twice.")
        seen.append(name)
        end = index
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        table = render_table(TABLES[name])
        if lines[index:end] != table:
            stale.append(name)
        rendered += table
        index = end
    missing = sorted(set(TABLES) - set(seen))
    if missing:
        raise ValueError(f"no marker for the key table(s) {missing}; add a line `<!-- keys: NAME -->` above each.")
    return "\n".join(rendered), stale


def update(path: Path = DOC, overwrite: bool = True) -> list[str]:
    """Render `path`'s key tables; rewrite it (atomically) if `overwrite` and any changed. Returns the stale tables."""
    text = path.read_text(encoding="utf-8")
    new, stale = render(text)
    if overwrite and new != text:
        write_text(path, new)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a table is stale")
    args = parser.parse_args(argv)
    stale = update(DOC, overwrite=not args.check)
    if args.check and stale:
        print(f"{DOC}: stale key table(s) {stale}; run `python docs/keys.py` to regenerate them.", file=sys.stderr)
        return 1
    if not args.check:
        print(f"{DOC}: rewrote {stale}." if stale else f"{DOC}: up to date.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
