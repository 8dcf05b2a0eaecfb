import os

import pytest

from panacea._io import atomic_directory, read_json, write_json


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


def test_a_racing_writer_that_finished_first_is_not_an_error(tmp_path, monkeypatch):
    target = tmp_path / "out"
    real_rename = os.rename

    def rename_after_someone_else_won(source, destination):
        os.makedirs(destination, exist_ok=True)
        (destination / "a.txt").write_text("theirs")
        (destination / "b.txt").write_text("theirs")
        real_rename(source, destination)  # fails: destination is a non-empty folder

    monkeypatch.setattr(os, "rename", rename_after_someone_else_won)
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("ours")
    assert (target / "a.txt").read_text() == "ours" and (target / "b.txt").read_text() == "theirs"


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
