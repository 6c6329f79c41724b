"""Where runs happen: in this process, in local worker processes, or as SLURM array tasks (submitit).

Every executor hands runs to ``harness.worker``, which claims each one in the store before it starts, so
executors only decide placement; what a run computes does not depend on them.
"""
from __future__ import annotations

from harness.executors.base import Executor
from harness.executors.inprocess import InProcessExecutor
from harness.executors.local import LocalExecutor
from harness.executors.slurm import SlurmExecutor, SlurmOptions

EXECUTORS: dict[str, type[Executor]] = {"inprocess": InProcessExecutor, "local": LocalExecutor,
                                        "slurm": SlurmExecutor}

__all__ = ["EXECUTORS", "Executor", "InProcessExecutor", "LocalExecutor", "SlurmExecutor", "SlurmOptions"]
