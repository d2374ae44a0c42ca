"""atomic_write: the target is the old file or the new one, never half of one, and no temporary file stays."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gmint.files import atomic_write


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_clean_write_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    path.write_bytes(b"old")
    with atomic_write(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".m.pt.") and tmp.read_bytes() == b""
        tmp.write_bytes(b"new")
        assert path.read_bytes() == b"old"  # nothing visible until the block ends
    assert path.read_bytes() == b"new" and _listing(tmp_path) == ["m.pt"]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "interrupted"])
def test_a_failure_mid_write_leaves_the_old_file_whole(tmp_path: Path, error: BaseException) -> None:
    path = tmp_path / "m.pt"
    old = os.urandom(4096)
    path.write_bytes(old)
    with pytest.raises(type(error)), atomic_write(path) as tmp:
        tmp.write_bytes(old[:100] + b"half of the new file")
        raise error
    assert path.read_bytes() == old and _listing(tmp_path) == ["m.pt"]


def test_a_failed_rename_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "split.json"
    path.write_text("{}")

    def refuse(*_: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError), atomic_write(path) as tmp:
        tmp.write_text('{"seed": 1}')
    assert path.read_text() == "{}" and _listing(tmp_path) == ["split.json"]


def test_a_failed_first_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError), atomic_write(tmp_path / "new.h5"):
        raise ValueError("layout refused")
    assert _listing(tmp_path) == []


def test_the_data_reaches_the_disk_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(f"replace {Path(b).name}"), real_replace(a, b))[1])
    with atomic_write(tmp_path / "entry.npz") as tmp:
        tmp.write_bytes(b"x")
    assert events == ["fsync", "replace entry.npz", "fsync"]  # the file's data, the rename, the folder entry


def test_the_new_file_gets_the_usual_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "m.pt") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "m.pt").stat().st_mode & 0o777 == 0o644
