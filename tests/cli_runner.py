"""Running the `gmint` app in-process as a user would, for the CLI tests."""

from __future__ import annotations

from typer.testing import CliRunner

from gmint_cli.app import app

_runner = CliRunner()


def invoke(*args: object) -> tuple[int, str]:
    """(exit code, output) of `gmint ARGS`; an unexpected exception (a bug, not a user error) is re-raised."""
    result = _runner.invoke(app, [str(a) for a in args], env={"GMINT_NO_PROGRESS": "1", "COLUMNS": "300"})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output
