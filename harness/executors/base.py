"""What every executor does: run the given runs of a study, reporting progress through a ``Reporter``."""
from __future__ import annotations

import time
from collections.abc import Callable

from harness.progress import Reporter, Task
from harness.store import RunSpec, RunStore
from harness.worker import RunContext


class Executor:
    """Runs specs of one study; results land in the study's store. ``run`` returns when the runs are
    finished, or (where an executor can detach) when they are handed over."""

    name = "executor"

    @property
    def detaches(self) -> bool:
        """Whether ``run`` returns once the runs are handed over, before they finish."""
        return False

    def run(self, context: RunContext, specs: list[RunSpec], reporter: Reporter, retry_failed: bool = False) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


def watch(store: RunStore, specs: list[RunSpec], task: Task, running: Callable[[], bool],
          interval: float = 1.0) -> None:
    """Follow runs executed elsewhere through the store: advance ``task`` as they finish, until
    ``running()`` is false (the workers are gone) or every run is finished."""
    pending = {spec.folder_name for spec in specs}
    finished = 0
    while True:
        alive = running()
        for name in list(pending):
            if store.state(name, verify=False).state in ("done", "failed"):
                pending.discard(name)
                finished += 1
        held = sum(1 for name in pending if (claim := store.read_claim(name)) and not claim["stale"])
        task.update(completed=finished, description=f"study ({held} running)" if held else "study")
        if not pending or not alive:
            return
        time.sleep(interval)
