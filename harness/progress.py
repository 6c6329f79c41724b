"""How the engine tells a caller what it is doing: messages and tasks with a total, through callbacks.

The engine never draws on the terminal; the CLI passes a reporter that does (``harness.cli.console``).
The base ``Reporter`` is silent, so library use and tests need nothing.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class Task:
    """One bar: advance it, or set what it has done, its total and its description."""

    def advance(self, k: int = 1) -> None:
        pass

    def update(self, *, completed: int | None = None, total: int | None = None,
               description: str | None = None) -> None:
        pass


class Reporter:
    """Silent reporter; subclasses show messages, warnings and tasks."""

    def say(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass

    @contextmanager
    def task(self, description: str, total: int | None, completed: int = 0) -> Iterator[Task]:
        yield Task()
