"""The package as built lists every package of the source tree (a missing one installs nowhere but here)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_of_the_tree_is_listed_for_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gmint").rglob("__init__.py")}
    found |= {"gmint_cli"} if (ROOT / "cli" / "__init__.py").exists() else set()
    found |= {"gmint.serve.static"}  # data only: the page's files
    assert found - listed == set(), "packages missing from pyproject.toml"
    assert listed - found == set(), "pyproject.toml lists packages that do not exist"


def test_the_bundled_files_are_package_data() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]
    assert "*.toml" in data["gmint.audit"] and (ROOT / "gmint" / "audit" / "demo.toml").is_file()
    assert "py.typed" in data["gmint"] and (ROOT / "gmint" / "py.typed").is_file()
