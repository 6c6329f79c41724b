"""K worker processes on this machine, each pulling unclaimed runs from the study until none is left.

``devices`` spreads the workers over GPUs (worker i sees GPU devices[i % len(devices)]; several workers may
share one). Workers are spawned (never forked: a forked torch with threads or CUDA state misbehaves), so
each imports torch afresh and reads the prepared dataset from the cache.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import socket
import sys
from pathlib import Path

from harness.errors import StoreError, UsageError
from harness.executors.base import Executor, watch
from harness.progress import Reporter
from harness.store import RunSpec
from harness.worker import RunContext, local_worker


def default_workers() -> int:
    """One worker per CPU core this process may use (each run uses 1 thread by default), at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 8))


def mps_hint(workers: int, gpus: int, pipe_dir: str | None = None) -> str | None:
    """A line for when several workers will share a GPU without CUDA MPS: then the GPU runs one process's
    kernels at a time: on an H200, 16 concurrent fine-tunes gave 3.2x one alone without MPS, 11.9x with it."""
    if gpus < 1 or workers <= gpus:
        return None
    pipe = Path(pipe_dir or os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps")
    if (pipe / "control").exists():
        return None
    return (f"{workers} workers share {gpus} GPU{'s' if gpus > 1 else ''} without CUDA MPS, so the GPU runs one "
            "worker's kernels at a time; start MPS (`nvidia-cuda-mps-control -d`) before the study: 2-3x the "
            "throughput, the same results")


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, workers: int = 2, devices: tuple[str, ...] = ()):
        if workers < 1:
            raise UsageError(f"--workers {workers}: need at least 1 worker process")
        self.workers, self.devices = workers, tuple(devices)
        self.exit_codes: list[int | None] = []

    def describe(self) -> str:
        on = f" on GPUs {','.join(self.devices)}" if self.devices else ""
        return f"local, {self.workers} worker process{'es' if self.workers > 1 else ''}{on}"

    def run(self, context: RunContext, specs: list[RunSpec], reporter: Reporter, retry_failed: bool = False) -> None:
        torch = sys.modules.get("torch")  # imported by now where a model was loaded; never imported here
        gpus = len(set(self.devices)) if self.devices else (
            torch.cuda.device_count() if torch is not None and torch.cuda.is_available() else 0)
        hint = mps_hint(min(self.workers, len(specs)), gpus)
        if hint:
            reporter.say(hint)
        spawn = multiprocessing.get_context("spawn")
        errors = spawn.Queue()
        payload = [spec.to_dict() for spec in specs]
        processes = []
        for i in range(min(self.workers, len(specs))):
            env = {"CUDA_VISIBLE_DEVICES": self.devices[i % len(self.devices)]} if self.devices else {}
            owner = f"local-{i} {socket.gethostname()}"
            process = spawn.Process(target=local_worker, args=(context, payload, owner, retry_failed, errors),
                                    name=f"harness-worker-{i}", daemon=False)
            with _environment(env):  # a spawned child takes the parent's environment at start
                process.start()
            processes.append(process)
        try:
            with reporter.task("study", total=len(specs)) as grid:
                watch(context.store(), specs, grid, lambda: any(p.is_alive() for p in processes))
        finally:
            for process in processes:
                process.join()
            self.exit_codes = [p.exitcode for p in processes]
        died = [(p.name, p.exitcode) for p in processes if p.exitcode not in (0, 3)]
        for name, code in died:
            reporter.warn(f"{name} ended with {'signal ' + str(-code) if code and code < 0 else 'exit code ' + str(code)}"
                          "; its unfinished run is taken over by the next command on this study")
        try:
            message = errors.get_nowait()
        except queue.Empty:
            return
        raise StoreError(message)


class _environment:
    def __init__(self, values: dict[str, str]):
        self.values, self.saved = values, {}

    def __enter__(self) -> None:
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
