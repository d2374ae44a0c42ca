"""`gmint serve` against a hostile or changing machine: bad audit files refused in one line while the others are
served, limits bounded, server faults answered without the server's paths, and upload folders of killed
servers swept at the next start."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gmint.data.base import ImageSet
from gmint.errors import InputError, StoreMismatchError
from gmint.serve.audits import MANIFEST, MANIFEST_BYTES, PublishedAudit, find_audits, json_depth, read_manifest
from gmint.serve.limits import Limits
from gmint_cli.serving import process_start, sweep_upload_folders
from tests.cli_runner import run

with warnings.catch_warnings():  # starlette's note about its httpx client, not about gmint
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from gmint.serve.app import CHANGED, FAULT, create_app  # noqa: E402

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and locks with flock")


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory: pytest.TempPathFactory, publish_audit: Callable[..., Path]) -> Path:
    """One good audit folder (DIR/digits) over the session's audited model and store."""
    return publish_audit(tmp_path_factory.mktemp("published"))


def _copy(audit_dir: Path, root: Path, name: str) -> Path:
    folder = root / name
    shutil.copytree(audit_dir, folder)
    return folder


def _fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _find_in_time(root: Path, seconds: float) -> tuple[dict[str, PublishedAudit], list[str], float]:
    """`find_audits(root)` in a thread: a start-up that blocks (on a FIFO) fails the test instead of hanging it."""
    found: list[tuple[dict[str, PublishedAudit], list[str]]] = []
    start = time.monotonic()
    worker = threading.Thread(target=lambda: found.append(find_audits(root)), daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    assert found, f"find_audits did not return within {seconds} s"
    return *found[0], time.monotonic() - start


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------
# 1. Bad audit files: one line each, and the good audits are served


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_deep_large_and_fifo_audit_files_are_one_line_each_and_the_rest_served(tmp_path: Path,
                                                                               audit_dir: Path) -> None:
    _copy(audit_dir, tmp_path, "good")
    (_copy(audit_dir, tmp_path, "deep") / MANIFEST).write_text("[" * 200_000 + "]" * 200_000)
    (_copy(audit_dir, tmp_path, "nested") / MANIFEST).write_text('{"title": ' + "[" * 5000 + "]" * 5000 + "}")
    _fifo(_copy(audit_dir, tmp_path, "fifo-manifest") / MANIFEST)
    for key, file in (("model", "audited.pt"), ("mint", "mint.pt"), ("store", "features.h5")):
        _fifo(_copy(audit_dir, tmp_path, f"fifo-{key}") / file)
    audits, problems, seconds = _find_in_time(tmp_path, 20)
    assert list(audits) == ["good"] and seconds < 5
    expected = {
        "deep": f"is over {MANIFEST_BYTES:,} bytes; a manifest is a few short fields",
        "fifo-manifest": f"{tmp_path / 'fifo-manifest' / MANIFEST} is a FIFO, not a regular file",
        "fifo-mint": f"MINT classifier {tmp_path / 'fifo-mint' / 'mint.pt'} is a FIFO, not a regular file",
        "fifo-model": f"audited model {tmp_path / 'fifo-model' / 'audited.pt'} is a FIFO, not a regular file",
        "fifo-store": f"feature store {tmp_path / 'fifo-store' / 'features.h5'} is a FIFO, not a regular file",
        "nested": "is nested more than 2 deep; a manifest is one flat JSON object",
    }
    assert len(problems) == len(expected) and all("\n" not in p for p in problems)
    for (name, message), line in zip(sorted(expected.items()), problems, strict=True):
        assert line.startswith(f"{tmp_path / name / MANIFEST}: ") and line.endswith(message), (name, line)
    # Without the good audit, every refusal still comes back at once (nothing waits on a FIFO).
    shutil.rmtree(tmp_path / "good")
    audits, problems, seconds = _find_in_time(tmp_path, 10)
    assert audits == {} and len(problems) == 6 and seconds < 2


def test_the_cli_serves_the_good_audits_beside_the_bad_ones(tmp_path: Path, audit_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    _copy(audit_dir, tmp_path, "good")
    (_copy(audit_dir, tmp_path, "deep") / MANIFEST).write_text("[" * 200_000 + "]" * 200_000)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: None)  # start up, then stop at once
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    done = run("serve", "--audits", tmp_path, "--port", _free_port())
    assert done.code == 0, done.stderr
    assert done.stderr == (f"error: {tmp_path / 'deep' / MANIFEST}: {tmp_path / 'deep' / MANIFEST} is over "
                           f"{MANIFEST_BYTES:,} bytes; a manifest is a few short fields\n")
    assert "audit good: Digits — 10 classes" in done.stdout and "serving the page at" in done.stdout


def test_manifests_are_read_bounded(tmp_path: Path) -> None:
    assert json_depth('{"a": "[[[{{{\\"]]]", "b": [1, [2]]}') == 3
    assert json_depth("[" * 100_000, stop=2) == 3  # stops counting once past the bound
    payload = {"format": "gmint-audit/1", "model": "m.pt", "mint": "c.pt", "store": "s.h5",
               "title": "[{brackets}] and \"quotes\"", "description": "é" * 2000}
    (tmp_path / MANIFEST).write_text(json.dumps(payload))  # \u00e9 escapes: the largest manifest still fits
    assert read_manifest(tmp_path / MANIFEST).title == "[{brackets}] and \"quotes\""
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(InputError, match=r"folder.json is a folder, not a regular file$"):
        read_manifest(tmp_path / "folder.json")


# ---------------------------------------------------------------------------------------------------------
# 2. Limits: finite, in a range that lets one image through


@pytest.mark.parametrize(("args", "message"), [
    (["--max-file-mib", "inf"], "--max-file-mib must be a number of MiB from 0.001 to 1024, got inf"),
    (["--max-file-mib", "nan"], "--max-file-mib must be a number of MiB from 0.001 to 1024, got nan"),
    (["--max-file-mib", str(1 / 2**20)], "--max-file-mib must be a number of MiB from 0.001 to 1024, got "
                                         "9.5367431640625e-07"),  # one byte
    (["--max-file-mib", "-1"], "--max-file-mib must be above 0, got -1.0: a number of MiB from 0.001 to 1024"),
    (["--max-request-mib", "1e400"], "--max-request-mib must be a number of MiB from 0.001 to 1024, got inf"),
    (["--max-request-mib", "2048"], "--max-request-mib must be a number of MiB from 0.001 to 1024, got 2048.0"),
    (["--max-file-mib", "8", "--max-request-mib", "4"],
     "--max-file-mib (8) is above --max-request-mib (4); no request could carry such a file"),
    (["--max-files", "0"], "Invalid value for '--max-files'"),
    (["--max-files", "100000"], "Invalid value for '--max-files'"),
    (["--max-pixels", "1"], "Invalid value for '--max-pixels'"),
    (["--max-pixels", "10000000000"], "Invalid value for '--max-pixels'"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_limit_options_are_bounded_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = run("serve", "--audits", tmp_path, *args)  # refused before any audit is read
    assert done.code != 0 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_the_help_states_the_bounds() -> None:
    text = " ".join(run("serve", "--help").stdout.split())
    for bound in ("0.001 to 1024", "1<=x<=4096", "64<=x<=89478485"):
        assert bound in text.replace("│ ", "").replace(" │", "")


# ---------------------------------------------------------------------------------------------------------
# 3. Server faults: a 5xx with a generic line, the cause in the server's log, the other audits served


@pytest.fixture
def two_audits(tmp_path: Path, audit_dir: Path) -> tuple[Path, TestClient]:
    root = tmp_path / "audits"
    root.mkdir()
    _copy(audit_dir, root, "digits")
    _copy(audit_dir, root, "other")
    audits, problems = find_audits(root)
    assert problems == [] and list(audits) == ["digits", "other"]
    return root, TestClient(create_app(audits, Limits(), tmp_root=tmp_path))


def _post(client: TestClient, digits: ImageSet, name: str) -> tuple[int, dict[str, Any], str]:
    files = [("files", (f"d{i}.png", png(digits.images[i, :, :, 0]), "image/png")) for i in range(3)]
    response = client.post(f"/api/audits/{name}/score", files=files, data={"labels": ["predicted"]})
    return response.status_code, response.json(), response.text


@pytest.mark.parametrize("change", ["replaced", "rewritten", "deleted", "fifo"])
def test_a_store_changed_while_serving_is_a_503_without_server_paths(
        two_audits: tuple[Path, TestClient], digits: ImageSet, caplog: pytest.LogCaptureFixture, change: str) -> None:
    root, client = two_audits
    store = root / "digits" / "features.h5"
    if change == "replaced":  # same bytes, another file: what a publisher's `cp new.h5 features.h5` via rename does
        shutil.copy(store, store.with_suffix(".new"))
        os.replace(store.with_suffix(".new"), store)
    elif change == "rewritten":
        with store.open("ab") as fh:
            fh.write(b"\0")
    elif change == "deleted":
        store.unlink()
    else:
        _fifo(store)
    with caplog.at_level(logging.ERROR, logger="gmint.serve"):
        code, body, text = _post(client, digits, "digits")
    assert (code, body) == (503, {"detail": CHANGED.format(name="digits")}) and "\n" not in body["detail"]
    assert str(root) not in text and "/" not in text
    assert str(store) in caplog.text  # the server's log says which file, and what happened to it
    code, body, _ = _post(client, digits, "other")
    assert code == 200 and body["verdict"]["n_candidates"] == 3
    assert [a["name"] for a in client.get("/api/audits").json()["audits"]] == ["digits", "other"]


def test_a_fault_while_scoring_is_a_500_without_server_paths(two_audits: tuple[Path, TestClient], digits: ImageSet,
                                                             caplog: pytest.LogCaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import gmint.serve.app as app_module

    root, client = two_audits
    secret = root / "digits" / "features.h5"
    real = app_module.score_uploads
    faults = iter([StoreMismatchError(f"{secret} does not match the classifier"), RuntimeError(f"a bug in {secret}")])

    def faulty(audit: PublishedAudit, *args: Any, **kwargs: Any) -> Any:
        if audit.name == "other":
            return real(audit, *args, **kwargs)
        raise next(faults)

    monkeypatch.setattr(app_module, "score_uploads", faulty)
    with caplog.at_level(logging.ERROR, logger="gmint.serve"):
        for _ in range(2):
            code, body, text = _post(client, digits, "digits")
            assert (code, body) == (500, {"detail": FAULT}) and str(root) not in text
    assert f"{secret} does not match the classifier" in caplog.text
    assert "Traceback" in caplog.text and f"a bug in {secret}" in caplog.text  # a bug's traceback is kept
    code, body, _ = _post(client, digits, "other")
    assert code == 200


# ---------------------------------------------------------------------------------------------------------
# 4. Upload folders of killed servers are swept at the next start; a live server's never are


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_HOLDER = ("import fcntl, os, sys, time\n"
           "fd = os.open(sys.stdin.readline().strip(), os.O_RDWR | os.O_CREAT)\n"
           "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)\n")


@LINUX
def test_a_killed_servers_folder_is_swept_and_a_live_ones_kept(tmp_path: Path) -> None:
    # A process that holds its folder's lock, as a server does, then is killed with SIGKILL.
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        killed = tmp_path / f"gmint-serve-{holder.pid}-{process_start(holder.pid)}-abc123"
        killed.mkdir()
        (killed / "images").mkdir()
        (killed / "images" / "0.png").write_bytes(b"upload")
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write(f"{killed / '.lock'}\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "locked"
        assert sweep_upload_folders(tmp_path) == 0 and killed.is_dir()  # alive: kept
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    me, start = os.getpid(), process_start(os.getpid())
    live = tmp_path / f"gmint-serve-{me}-{start}-live00"  # this process: a live server
    reused = tmp_path / f"gmint-serve-{me}-1-reused"  # this pid, but a process started at another time
    old = tmp_path / "gmint-serve-k2j3h4g5"  # an older server's name: whose, no one can tell
    namespace = tmp_path / f"gmint-serve-{holder.pid}-1-other0"  # dead pid here, lock held: another pid namespace
    for folder in (live, reused, old, namespace):
        folder.mkdir()
    (tmp_path / f"gmint-serve-{holder.pid}-1-file").write_text("not a folder")
    import fcntl

    fd = os.open(namespace / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert sweep_upload_folders(tmp_path) == 2
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, old.name, namespace.name, f"gmint-serve-{holder.pid}-1-file"])


@LINUX
def test_gmint_serve_sweeps_at_start_and_removes_its_own_folder(tmp_path: Path, audit_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "pass"])
    holder.wait()
    stale = scratch / f"gmint-serve-{holder.pid}-{12345}-zz9"
    (stale / "gmint-serve-request" / "images").mkdir(parents=True)
    seen: list[list[str]] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: seen.append(sorted(p.name for p in scratch.iterdir())))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    done = run("serve", "--audits", audit_dir, "--port", _free_port())
    assert done.code == 0, done.stderr
    assert f"removed 1 upload folder left in {scratch} by servers that were killed" in done.stdout
    (own,) = seen[0]
    assert own.startswith(f"gmint-serve-{os.getpid()}-{process_start(os.getpid())}-")
    assert list(scratch.iterdir()) == []
