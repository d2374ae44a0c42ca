"""Rich progress bars for every loop over data; silent when disabled (library use, tests)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


class Bar:
    """One task's bar; `advance` also updates the free-text status (loss, accuracy, ...)."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1, status: str = "") -> None:
        """Move the bar `n` steps on and show `status` beside it (a no-op for a disabled bar).

        Args:
            n: steps done since the last call.
            status: free text shown after the bar, replacing the previous one.
        """
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=n, status=status)


@contextmanager
def progress_bar(description: str, total: int, *, enabled: bool = True, completed: int = 0) -> Iterator[Bar]:
    """A bar for `total` steps (starting at `completed`, for resumed runs); off under $GMINT_NO_PROGRESS."""
    if not enabled or os.environ.get("GMINT_NO_PROGRESS"):
        yield Bar(None, None)
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                  console=console, transient=False) as progress:
        yield Bar(progress, progress.add_task(description, total=total, completed=completed, status=""))
