"""The terminal side of the engine's progress callbacks: rich bars with elapsed time and ETA."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.progress import Reporter, Task


def bars(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)


class _RichTask(Task):
    def __init__(self, progress: Progress, task_id) -> None:
        self.progress, self.id = progress, task_id

    def advance(self, k: int = 1) -> None:
        self.progress.advance(self.id, k)

    def update(self, *, completed: int | None = None, total: int | None = None,
               description: str | None = None) -> None:
        fields = {k: v for k, v in (("completed", completed), ("total", total), ("description", description))
                  if v is not None}
        self.progress.update(self.id, **fields)


class RichReporter(Reporter):
    """Messages on the console; nested tasks share one live display."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._depth = 0

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def warn(self, text: str) -> None:
        self.console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False)

    @contextmanager
    def task(self, description: str, total: int | None, completed: int = 0) -> Iterator[Task]:
        if self._progress is None:
            self._progress = bars(self.console)
            self._progress.start()
        self._depth += 1
        task_id = self._progress.add_task(escape(description), total=total, completed=completed)
        try:
            yield _RichTask(self._progress, task_id)
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._progress.stop()
                self._progress = None
            else:
                self._progress.remove_task(task_id)
