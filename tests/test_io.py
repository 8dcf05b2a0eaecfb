import hashlib
import os

import pytest
import torch
from safetensors.torch import save_file

from panacea._io import atomic_directory, atomic_file, file_sha256, read_json, write_json, write_text


@pytest.fixture(params=[0o022, 0o077], ids=oct)
def umask(request):
    """The process's umask set to the parameter for the test, then restored."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_new_folder_appears_whole(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("a")
        assert not target.exists()  # nothing visible until the body succeeds
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]
    assert (target / "a.txt").read_text() == "a"


def test_existing_folder_gets_files_replaced_and_keeps_others(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "a.txt").write_text("old")
    (target / "other.txt").write_text("other")
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new" and (target / "other.txt").read_text() == "other"


def test_failure_leaves_target_untouched_and_no_staging(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as staging:
            (staging / "a.txt").write_text("a")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def _rename_after_another_writer(monkeypatch):
    """Make the final rename meet a folder that another writer completed in the meantime."""
    real_rename = os.rename
    calls = []

    def rename(source, destination):
        if not calls:
            os.makedirs(destination, exist_ok=True)
            (destination / "a.txt").write_text("theirs")
            (destination / "b.txt").write_text("theirs")
        calls.append(destination)
        real_rename(source, destination)

    monkeypatch.setattr(os, "rename", rename)


def test_a_racing_writer_is_replaced_whole(tmp_path, monkeypatch):
    _rename_after_another_writer(monkeypatch)
    with atomic_directory(tmp_path / "out") as staging:
        (staging / "a.txt").write_text("ours")
    assert (tmp_path / "out" / "a.txt").read_text() == "ours"
    assert (tmp_path / "out" / "b.txt").read_text() == "theirs"  # not ours to delete
    assert [path.name for path in tmp_path.iterdir()] == ["out"]


def test_keep_existing_lets_the_first_complete_writer_win(tmp_path, monkeypatch):
    _rename_after_another_writer(monkeypatch)
    with atomic_directory(tmp_path / "out", keep_existing=True) as staging:
        (staging / "a.txt").write_text("ours")
    assert (tmp_path / "out" / "a.txt").read_text() == "theirs"
    assert [path.name for path in tmp_path.iterdir()] == ["out"]


def test_replacing_never_shows_a_mix_of_old_and_new_files(tmp_path, monkeypatch):
    """Each rename leaves either the whole old folder or the whole new one at the path."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "config.json").write_text("old")
    (target / "weights").write_text("old")
    seen = []
    real_rename = os.rename

    def rename(source, destination):
        real_rename(source, destination)
        if target.is_dir():
            seen.append({path.name: path.read_text() for path in target.iterdir()})

    monkeypatch.setattr(os, "rename", rename)
    with atomic_directory(target) as staging:
        (staging / "config.json").write_text("new")
        (staging / "weights").write_text("new")
    assert all(set(files.values()) == {"new"} for files in seen) and seen


def test_new_folder_has_the_usual_permissions(tmp_path):
    with atomic_directory(tmp_path / "out") as staging:
        (staging / "a.txt").write_text("a")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~mask


def test_target_that_is_a_file_is_rejected(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        with atomic_directory(tmp_path / "out"):
            pass


def test_json_round_trip_and_errors(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert read_json(tmp_path / "a.json") == {"a": [1, 2], "b": 1}
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        read_json(tmp_path / "list.json")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_a_failed_file_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    """A write that fails part-way (here: the disk fills up at fsync) keeps the previous content, no temp file."""
    write_json(tmp_path / "results.json", {"points": [1, 2, 3]})

    def disk_full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_json(tmp_path / "results.json", {"points": [4, 5, 6]})
    assert read_json(tmp_path / "results.json") == {"points": [1, 2, 3]}
    assert [path.name for path in tmp_path.iterdir()] == ["results.json"]


def test_written_file_has_the_usual_permissions_and_its_folder_is_made(tmp_path):
    write_text(tmp_path / "new" / "a.md", "é\n")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "new" / "a.md").read_text(encoding="utf-8") == "é\n"
    assert (tmp_path / "new" / "a.md").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_folder_gets_the_modes_the_umask_gives_whatever_wrote_its_files(tmp_path, umask):
    """safetensors' save_file makes private (0600) files: adapter_model.safetensors was 0600 beside 0644 files."""
    with atomic_directory(tmp_path / "out") as staging:
        save_file({"x": torch.zeros(2)}, staging / "weights.safetensors")
        (staging / "sub").mkdir(mode=0o700)
        write_json(staging / "sub" / "config.json", {})
    entries = [tmp_path / "out", *(tmp_path / "out").rglob("*")]
    modes = {path.name: path.stat().st_mode & 0o777 for path in entries}
    assert modes == {"out": 0o777 & ~umask, "sub": 0o777 & ~umask} | {
        name: 0o666 & ~umask for name in ("weights.safetensors", "config.json")
    }


def test_a_file_gets_the_mode_the_umask_gives_when_its_writer_makes_it_anew(tmp_path, umask):
    with atomic_file(tmp_path / "logps.safetensors") as temporary:
        save_file({"x": torch.zeros(2)}, temporary)  # replaces the temporary file with a private one
    assert (tmp_path / "logps.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_replaced_entries_of_the_old_folder_are_not_carried_back(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale").mkdir()
    (target / "notes.txt").write_text("mine")
    with atomic_directory(target, replaces=["stale"]) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(path.name for path in target.iterdir()) == ["new.txt", "notes.txt"]


def test_the_umask_is_read_without_setting_it(monkeypatch):
    """os.umask(0) to read the mask would, for that moment, give files another thread creates mode 0666."""
    from panacea import _io

    previous = os.umask(0o027)
    try:
        calls = []
        monkeypatch.setattr(_io.os, "umask", lambda mask: calls.append(mask) or 0o027)
        assert _io._umask() == 0o027
        assert calls == []
    finally:
        monkeypatch.undo()
        os.umask(previous)


def test_a_file_digest_is_the_sha256_of_all_its_bytes_across_blocks(tmp_path):
    data = os.urandom((1 << 20) + 12345)  # more than one block
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
