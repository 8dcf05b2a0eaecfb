"""docs/keys.py: docs/training.md's key tables are what the config dataclasses' help strings render."""

from __future__ import annotations

import dataclasses
import re
import shutil
import types
import typing
from pathlib import Path

import pytest
from panacea.adapters import PanaceaConfig
from panacea.training import TrainConfig
from panacea.training.config import RLConfig

from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "training.md"
CELL = re.compile(r"(?<!\\)\|")  # a cell border: a '|' that is not escaped


@pytest.fixture
def keys(monkeypatch):
    return load_script(ROOT / "docs" / "keys.py", monkeypatch)


def _tables(text: str) -> dict[str, list[list[str]]]:
    """Marker name -> the cells of its table's rows below the header, read independently of the script."""
    lines, tables = text.split("\n"), {}
    for index, line in enumerate(lines):
        if match := re.fullmatch(r"<!-- keys: (\w+) -->", line):
            rows = []
            for row in lines[index + 3 :]:  # past the marker, the header and its rule
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in CELL.split(row)[1:-1]])
            tables[match[1]] = rows
    return tables


def _nested_configs(cls: type) -> set[type]:
    """`cls` and every dataclass its fields hold, at any depth (e.g. TrainConfig -> DimensionConfig -> PairSource)."""
    found = {cls}
    for hint in typing.get_type_hints(cls).values():
        for inner in [hint, *typing.get_args(hint)]:
            if dataclasses.is_dataclass(inner) and inner not in found:
                found |= _nested_configs(inner)
    return found


def test_the_committed_tables_are_what_keys_py_renders(keys):
    assert keys.update(DOC, overwrite=False) == [], "docs/training.md is stale: run `python docs/keys.py`"


def test_a_help_string_changed_without_regenerating_fails_the_check_until_rerun(keys, monkeypatch, tmp_path, capsys):
    copy = tmp_path / "training.md"
    shutil.copy(DOC, copy)
    monkeypatch.setattr(keys, "DOC", copy)
    (kl_coef,) = [field for field in dataclasses.fields(RLConfig) if field.name == "kl_coef"]
    monkeypatch.setattr(kl_coef, "metadata", types.MappingProxyType({"help": "A new | help string."}))

    assert keys.main(["--check"]) == 1
    assert "['RLConfig']" in capsys.readouterr().err
    assert copy.read_text(encoding="utf-8") == DOC.read_text(encoding="utf-8")  # --check writes nothing
    assert keys.main([]) == 0
    assert "| `kl_coef` | `0.05` | A new \\| help string. |" in copy.read_text(encoding="utf-8").split("\n")
    assert keys.main(["--check"]) == 0


def test_a_hand_edited_row_is_named_and_restored(keys, tmp_path):
    copy = tmp_path / "training.md"
    text = DOC.read_text(encoding="utf-8")
    copy.write_text(text.replace("| `seed` | `0` | Seeds the adapter init", "| `seed` | `1` | Seeds the adapter init"))
    assert keys.update(copy, overwrite=False) == ["TrainConfig"]
    assert keys.update(copy) == ["TrainConfig"]
    assert copy.read_text(encoding="utf-8") == text


def test_every_field_of_every_config_appears_once_in_its_table(keys):
    tables = _tables(DOC.read_text(encoding="utf-8"))
    configs = _nested_configs(TrainConfig) | {PanaceaConfig}  # `adapter` is a dict read as a PanaceaConfig
    assert {cls.__name__ for cls in configs} == set(tables) == set(keys.TABLES)
    for cls in configs:
        rows = tables[cls.__name__]
        assert all(len(row) == 3 for row in rows), cls.__name__  # '|' in a help string is escaped
        documented = [row[0].strip("`") for row in rows if not row[0].startswith("*")]
        assert documented == [field.name for field in dataclasses.fields(cls)], cls.__name__


def test_train_config_sections_come_from_its_comments(keys):
    rows = _tables(DOC.read_text(encoding="utf-8"))["TrainConfig"]
    sections = [row[0].strip("*") for row in rows if row[0].startswith("*")]
    assert sections == ["run", "model", "data", "preferences", "optimisation", "output", "evaluation after training"]
    assert keys.section_titles(TrainConfig)["output_dir"] == "run"


def test_defaults_render_in_yaml_flow_style(keys):
    assert keys.yaml_flow({"init": "lora", "svd_rank": 0}) == "{init: lora, svd_rank: 0}"
    assert [keys.yaml_flow(value) for value in ([0.9, 0.999], None, True, 1e-8, "all-linear")] == [
        "[0.9, 0.999]",
        "null",
        "true",
        "1e-08",
        "all-linear",
    ]
    assert keys.yaml_flow(RLConfig()) == "{}"  # a section at its defaults, as `rl: {}` reads
    rows = {row[0]: row[1] for row in _tables(DOC.read_text(encoding="utf-8"))["TrainConfig"]}
    assert (rows["`dimensions`"], rows["`model`"], rows["`rl`"]) == ("**required**", "`null`", "`{}`")
