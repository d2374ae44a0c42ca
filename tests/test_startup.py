"""Start-up: the package and the command line's help load no torch (benchmarks/startup.py times them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gmint_cli.app import VERBS, app


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `code`."""
    done = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
                          capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_package_and_version_import_no_torch() -> None:
    loaded = _modules_after("import gmint, gmint.version")
    assert "gmint" in loaded and "torch" not in loaded


def test_root_help_imports_no_torch_nor_any_verb() -> None:
    loaded = _modules_after("import sys\nfrom gmint_cli.app import app\nsys.argv = ['gmint', '--help']\n"
                            "try:\n    app()\nexcept SystemExit:\n    pass")
    assert "gmint_cli.app" in loaded
    assert "torch" not in loaded
    assert not {f"gmint_cli.{verb.module}" for verb in VERBS.values()} & loaded


def test_public_names_load_on_first_use() -> None:
    import gmint
    from gmint.data.split import MembershipSplit

    assert gmint.MembershipSplit is MembershipSplit
    assert set(gmint.__all__) == {*gmint._EXPORTS, "__version__"}  # every listed name is reachable
    assert {name for name in gmint.__all__ if name != "__version__"} <= set(dir(gmint))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        gmint.nonexistent  # noqa: B018


@pytest.mark.parametrize("name", list(VERBS))
def test_listed_help_is_the_verbs_own(name: str) -> None:
    """The line `gmint --help` shows without loading a verb is the one the loaded verb has."""
    command = VERBS[name].command(name)
    assert command.help is not None
    assert " ".join(command.help.split("\n\n")[0].split()) == VERBS[name].help
    assert app.registered_commands == []  # every verb is reached through VERBS alone
