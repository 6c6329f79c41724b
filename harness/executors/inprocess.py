"""Runs one after another in this process, with a bar for the current run's optimiser steps."""
from __future__ import annotations

import os
import socket

from harness.executors.base import Executor
from harness.progress import Reporter
from harness.store import RunSpec
from harness.worker import RunContext, work


class InProcessExecutor(Executor):
    name = "inprocess"

    def run(self, context: RunContext, specs: list[RunSpec], reporter: Reporter, retry_failed: bool = False) -> None:
        done = 0
        with reporter.task("study", total=len(specs)) as grid, reporter.task("run", total=None) as current:
            def start(spec: RunSpec) -> None:
                current.update(description=spec.folder_name, completed=0, total=None)

            def end(spec: RunSpec, outcome: str) -> None:
                nonlocal done
                done += 1
                grid.update(completed=done)

            work(context, specs, f"inprocess {socket.gethostname()}:{os.getpid()}", retry_failed,
                 on_start=start, on_end=end, on_step=current.advance,
                 on_total=lambda total: current.update(total=total))
