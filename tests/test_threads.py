"""Thread settings: never more intra-op threads than the cores the process may use, passive OpenMP waiting
for the command line unless the user chose a policy, and exact thread counts inside `torch_threads`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from gmint import threads


def test_threads_are_fitted_to_the_cores_the_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    try:
        torch.set_num_threads(2)
        assert threads.available_cores() == 1
        assert threads.fit_threads_to_cores() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_torch_threads_sets_and_restores() -> None:
    before = torch.get_num_threads()
    with threads.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_command_line_waits_passively_unless_told_otherwise(given: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env |= {"OMP_WAIT_POLICY": given} if given else {}
    shown = subprocess.run([sys.executable, "-c", "import gmint_cli, os; print(os.environ['OMP_WAIT_POLICY'])"],
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert shown == expected
