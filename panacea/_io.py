"""Atomic writes: a file or folder is written as a temporary sibling and only then renamed into place.

What lands gets the modes a plain `open` or `mkdir` would give under the user's umask, whatever the writer
used (tempfile and safetensors' `save_file` create private 0600 files).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_directory(
    path: str | os.PathLike, *, keep_existing: bool = False, replaces: Collection[str] = ()
) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; when the body succeeds, it becomes `path` by rename.

    Readers (and a second process doing the same work) see the old folder or the complete new one,
    never a mix. If `path` exists it is renamed aside first and files the body did not write (a
    user's notes, other run outputs) are moved back into the new folder (two renames: for that moment `path` is
    absent, and a process killed between them leaves the old folder as `.NAME.old-*` beside it, whole); with
    `keep_existing=True` an existing `path` wins instead and the new content is dropped (for caches whose writers
    all produce the same thing). `replaces`: names in the old folder that the new content supersedes (an earlier
    export's files and subfolders), removed even where the body did not write them, so nothing stale stays.
    If the body raises, `path` is untouched and the temporary folder removed.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory; choose another output path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield staging
        _apply_umask(staging)
        _move_into_place(staging, path, keep_existing, frozenset(replaces))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, path: Path, keep_existing: bool, replaces: frozenset[str]) -> None:
    try:
        os.rename(staging, path)  # atomic; succeeds when `path` is absent
        return
    except OSError:
        if not path.is_dir():  # not an existing folder in the way: a real error
            raise
    if keep_existing:
        return
    previous = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.rename(path, previous)  # replaces the empty `previous` folder
    os.rename(staging, path)
    for entry in previous.iterdir():
        if entry.name not in replaces and not (path / entry.name).exists():
            os.rename(entry, path / entry.name)
    shutil.rmtree(previous)


def _umask() -> int:
    """The process's umask, read from /proc where it can be: os.umask(0) to read it would, for that moment, give
    files another thread creates mode 0666."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _apply_umask(folder: Path) -> None:
    """Give `folder` and everything in it a normal folder's (0o777) or file's (0o666) mode less the umask."""
    mask = _umask()
    for entry in [folder, *folder.rglob("*")]:
        if not entry.is_symlink():
            entry.chmod((0o777 if entry.is_dir() else 0o666) & ~mask)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; when the body succeeds, it replaces `path` by rename.

    Readers see the old file or the complete new one, never a part; if the body raises (or the process dies
    before the rename), `path` is untouched and the temporary file is removed (or left as a dot-file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        temporary.chmod(0o666 & ~_umask())  # after the body, which may have made the file anew (and private)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically, flushed to disk before the rename."""
    with atomic_file(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write `data` atomically as indented, key-sorted JSON with a trailing newline."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Write `records` atomically as JSON lines, one object a line in the given order, non-ASCII kept as it is."""
    write_text(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


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


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in blocks (hex; `hashlib.file_digest` needs Python 3.11)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
