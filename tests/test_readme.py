"""The README's Python example runs as printed (with fewer epochs), so the first code a reader copies works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"## Python\n\n```python\n(.*?)```", text, re.S)
    assert found is not None, "the README has no Python example"
    code = found.group(1)
    assert "epochs=40" in code
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code.replace("epochs=40", "epochs=2"), "README.md", "exec"), namespace)  # noqa: S102
    result, split = namespace["result"], namespace["split"]
    held_out = set(split.holdout)  # type: ignore[attr-defined]
    members = len(held_out & set(split.members))  # type: ignore[attr-defined]
    assert result.rows.members == result.rows.external == min(members, len(held_out) - members)  # type: ignore[attr-defined]
    assert result.mint["auc"].value is not None and result.loss_threshold["auc"].value is not None  # type: ignore[attr-defined]
    assert (tmp_path / "audited.pt").is_file() and (tmp_path / "features.h5").is_file()
