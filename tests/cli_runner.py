"""Running the `gmint` app in-process as a user would, for the CLI tests."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from typer.testing import CliRunner

from gmint_cli.app import app

_runner = CliRunner()


class Outcome(NamedTuple):
    """Exit code and the two streams of one `gmint` call."""

    code: int
    stdout: str
    stderr: str


def run(*args: object) -> Outcome:
    """`gmint ARGS` with stdout and stderr apart, both as a pipe (not a terminal) would receive them; an
    unexpected exception (a bug, not a user error) is re-raised."""
    result = _runner.invoke(app, [str(a) for a in args], env={"GMINT_NO_PROGRESS": "1"})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr)


def invoke(*args: object) -> tuple[int, str]:
    """(exit code, stdout and stderr as one text) of `gmint ARGS`."""
    outcome = run(*args)
    return outcome.code, outcome.stdout + outcome.stderr


def snapshot(folder: Path) -> dict[Path, tuple[bytes, int]]:
    """Bytes and modification time of every file under `folder`: equal snapshots mean nothing was written,
    replaced, created or deleted there."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def import_state_dict(state: Path, arch: str, out: Path, *, mean: str = "0.5", std: str = "0.5",
                      image_size: int = 8) -> Path:
    """`gmint model import` of a plain state dict, as a user describes a model from outside before auditing it
    (the digits models of the tests take 8x8 images normalised as gmint's zoo is)."""
    done = run("model", "import", state, "--arch", arch, "--image-size", image_size, "--channels", 1, "--mean", mean,
               "--std", std, "--out", out)
    assert done.code == 0, done.stderr
    return out
