"""Atomic writes: a folder is filled in a temporary sibling and only then moved into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success, move what was written into `path`.

    If `path` does not exist, the temporary folder is renamed to it in one step, so a reader (or a
    second process doing the same work) sees either nothing or the complete folder. If it exists,
    each file is moved in with `os.replace`, which is atomic per file and leaves files the caller
    did not write alone. If the body raises, the temporary folder is removed and `path` is untouched.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory; choose another output path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield staging
        _move_into_place(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, path: Path) -> None:
    if not path.exists():
        try:
            os.rename(staging, path)
            return
        except OSError:
            if not path.is_dir():  # not a lost race with another writer: a real error
                raise
    for entry in staging.iterdir():
        if entry.is_dir():
            raise IsADirectoryError(f"atomic_directory supports flat folders only, found {entry.name}/")
        os.replace(entry, path / entry.name)


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write `data` as indented, key-sorted JSON with a trailing newline."""
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON object, with an error that names the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found.")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the file is corrupt, re-create it.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(data).__name__}.")
    return data
