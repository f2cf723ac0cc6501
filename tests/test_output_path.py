"""Output checks made before any work: the same file as an input, and writability."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ddsp_pd import output_path
from ddsp_pd.errors import OutputError
from ddsp_pd.output_path import check_writable, file_in_the_way, same_file


def test_same_file_through_paths_and_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    original = tmp_path / "in.wav"
    original.write_bytes(b"RIFF")
    (tmp_path / "sub").mkdir()
    os.symlink(original, tmp_path / "link.wav")
    os.link(original, tmp_path / "hard.wav")
    for other in ("in.wav", "./in.wav", "sub/../in.wav", tmp_path / "link.wav", "hard.wav"):
        assert same_file(other, original), other
        assert same_file(original, other), other
    (tmp_path / "copy.wav").write_bytes(b"RIFF")
    assert not same_file("copy.wav", original)
    assert not same_file("missing.wav", original)
    assert same_file("missing.wav", tmp_path / "sub" / ".." / "missing.wav")


def test_file_in_the_way(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert file_in_the_way(blocker) == blocker
    assert file_in_the_way(blocker / "a" / "b") == blocker
    assert file_in_the_way(tmp_path / "new" / "deeper") is None
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    assert file_in_the_way(tmp_path / "dangling" / "x") == tmp_path / "dangling"


def test_check_writable_accepts_new_and_existing_files_and_leaves_nothing(tmp_path: Path):
    (tmp_path / "old.wav").write_bytes(b"old")
    assert check_writable(tmp_path / "old.wav") == tmp_path / "old.wav"
    check_writable(tmp_path / "new.wav")
    check_writable(tmp_path / "not" / "yet" / "there.wav")  # folders made on writing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.wav"]
    assert (tmp_path / "old.wav").read_bytes() == b"old"


def test_check_writable_parent_is_a_file(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target in (blocker / "out.wav", blocker / "missing" / "out.wav"):
        with pytest.raises(OutputError) as excinfo:
            check_writable(target)
        message = str(excinfo.value)
        assert f"{blocker} is not a folder" in message and str(target) in message
        assert "File exists" not in message


def test_check_writable_refuses_a_folder(tmp_path: Path):
    with pytest.raises(OutputError, match="is a folder"):
        check_writable(tmp_path)


def test_check_writable_reports_a_folder_that_refuses_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    real_open = os.open

    def refusing(path, *args, **kwargs):
        if ".ddsp-pd-probe." in os.fspath(path):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(output_path.os, "open", refusing)
    with pytest.raises(OutputError) as excinfo:
        check_writable(tmp_path / "missing" / "out.wav")
    message = str(excinfo.value)
    assert "Permission denied" in message and str(tmp_path) in message
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_check_writable_read_only_folder(tmp_path: Path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            check_writable(folder / "out.wav")
    finally:
        folder.chmod(0o755)
