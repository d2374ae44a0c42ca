"""The documentation site builds with every link and reference checked, and its CLI page lists every command."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from gmint_cli.app import app

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("mkdocs", reason="the documentation tools (the docs extra) are not installed")


def _every_command() -> list[tuple[str, list[str]]]:
    """(full name, option strings) of every command, walked from the typer app independently of cli/docs.py."""
    found = []

    def walk(name: str, command: object) -> None:
        found.append((name, [o for p in command.params if not p.hidden for o in p.opts if o.startswith("-")]))
        if hasattr(command, "list_commands"):
            context = command.context_class(command, info_name=name)
            for sub in command.list_commands(context):
                walk(f"{name} {sub}", command.get_command(context, sub))

    walk("gmint", typer.main.get_command(app))
    return found


@pytest.mark.slow
def test_the_site_builds_strictly_and_its_cli_page_lists_every_command_and_option(tmp_path: Path) -> None:
    site = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    page = html.unescape((site / "cli" / "index.html").read_text(encoding="utf-8"))
    commands = _every_command()
    assert len(commands) > 15
    for name, opts in commands:
        heading = re.search(rf"<h[234][^>]*><code>{re.escape(name)}</code>", page)
        assert heading is not None, name
        start = heading.end()
        ends = [i for i in (page.find(f"<h{level}", start) for level in (2, 3, 4)) if i >= 0]
        section = page[start:min(ends, default=len(page))]
        for opt in opts:
            assert f"<code>{opt}</code>" in section, f"{name} {opt}"
    for page_name in ("index.html", "own-model/index.html", "results/grid-cpu/index.html", "api/features/index.html"):
        assert (site / page_name).stat().st_size > 2000, page_name
