"""The terminal side of the engine's progress callbacks: rich bars with elapsed time and ETA."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

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
        self.console.print(text, highlight=False, markup=False)  # paths and names are text, never markup

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


class _LogTask(Task):
    """A task as log lines: at every tenth of its total and at its end, with elapsed time."""

    def __init__(self, reporter: LogReporter, description: str, total: int | None, completed: int,
                 nested: bool) -> None:
        self.reporter, self.description, self.total, self.completed = reporter, description, total, completed
        self.started, self.logged, self.nested = time.monotonic(), -1, nested

    def advance(self, k: int = 1) -> None:
        self.update(completed=self.completed + k)

    def update(self, *, completed: int | None = None, total: int | None = None,
               description: str | None = None) -> None:
        self.total = total if total is not None else self.total
        self.description = description if description is not None else self.description
        if completed is None:
            return
        self.completed = completed
        if self.total and not self.nested:  # a run's steps inside the study: only its end is logged
            tenth = int(10 * self.completed / self.total)
            if tenth > self.logged:
                self.logged = tenth
                self.log()

    def log(self) -> None:
        total = f"/{self.total}" if self.total else ""
        self.reporter.say(f"{self.description}: {self.completed}{total} after {time.monotonic() - self.started:.0f} s")


class LogReporter(Reporter):
    """--quiet: no live bars; plain lines a log file or a SLURM output keeps readable."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._depth = 0

    def say(self, text: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} {text}", highlight=False, markup=False, soft_wrap=True)

    def warn(self, text: str) -> None:
        self.say(f"warning: {text}")

    @contextmanager
    def task(self, description: str, total: int | None, completed: int = 0) -> Iterator[Task]:
        task = _LogTask(self, description, total, completed, nested=self._depth > 0)
        self._depth += 1
        try:
            yield task
        finally:
            self._depth -= 1
            if task.total is None or task.logged < 10:
                task.log()


def summary_table(tables_dir) -> Table:
    """The study's mean Dice per strategy and n, with 95% CIs, for the end of a run (from tables/*.csv)."""
    frames = [pd.read_csv(tables_dir / name) for name in ("base.csv", "summary.csv")
              if (tables_dir / name).exists() and (tables_dir / name).stat().st_size > 1]
    table = Table(title="Mean subject Dice (95% CI)", title_justify="left")
    for column in ("strategy", "n", "labelled images", "LV", "MY"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if rows.empty:
        return table
    for (strategy, n), group in rows.groupby(["strategy", "n"], sort=False):
        cells = {}
        for r in group.itertuples():
            cells[r.metric] = f"{r.mean:.3f} ({r.ci_low:.3f}-{r.ci_high:.3f})" if r.ci_low == r.ci_low else f"{r.mean:.3f}"
        images = group["labelled_images"].iloc[0] if "labelled_images" in group else float("nan")
        table.add_row(escape(str(strategy)), str(n), "–" if images != images else f"{images:.0f}",
                      cells.get("dice_lv", "–"), cells.get("dice_my", "–"))
    return table
