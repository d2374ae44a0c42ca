"""Build-time hooks of the documentation site: the CLI reference from the typer app, the audit's settings from
its configuration, the committed benchmark reports as pages of the site (never copied by hand, so none drifts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# What of benchmarks/results/ the site serves: the reports and the figures they show.
RESULT_SUFFIXES = (".md", ".png")


SETTINGS_MARK = "<!-- audit-settings: filled in from `gmint.audit.config.describe()` when the site is built -->"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Put every audit setting, with its default and documentation, where a page marks it."""
    if SETTINGS_MARK not in markdown:
        return markdown
    from gmint.audit.config import describe

    return markdown.replace(SETTINGS_MARK, f"```toml\n{describe()}```")


def on_files(files: Files, config: Any) -> Files:
    """Add the generated CLI reference and the benchmark reports (under results/) to the site's files."""
    from gmint_cli.app import app
    from gmint_cli.docs import cli_reference

    files.append(File.generated(config, "cli.md", content=cli_reference(app)))
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file() and path.suffix in RESULT_SUFFIXES:
            name = "results/" + path.relative_to(RESULTS).as_posix()
            if path.suffix == ".md":
                files.append(File.generated(config, name, content=path.read_text(encoding="utf-8")))
            else:
                files.append(File.generated(config, name, abs_src_path=str(path)))
    return files
