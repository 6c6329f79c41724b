"""SLURM job arrays through submitit: one array task per run, at most ``max_parallel`` at once.

Each task claims its run in the study folder before it starts (so re-submitting a study, or a task that
SLURM requeues, never does a run twice) and writes its result there: the study folder and the cache must be
on a filesystem the nodes share. The submitting process waits and follows the results; with ``detach`` it
returns once the array is queued, and a later `status`, `run` or `report` picks the results up.
"""
from __future__ import annotations

import logging
import re
import shutil
import time
from dataclasses import dataclass, field

from harness.errors import UsageError
from harness.executors.base import Executor, watch
from harness.progress import Reporter
from harness.store import RunSpec, write_json
from harness.worker import RunContext, array_task

#: sbatch options the harness sets itself, or that would move a task's log or job script: not --slurm-option
RESERVED = {"output", "o", "error", "e", "input", "i", "array", "a", "wrap", "chdir", "D", "job-name", "J",
            "parsable", "wait", "W", "open-mode"}


def parse_option(item: str) -> tuple[str, str]:
    """One --slurm-option KEY=VALUE, refused (one line) where it could change more than one sbatch line."""
    key, sep, value = item.partition("=")
    key, value = key.strip().lstrip("-"), value.strip()
    if not sep or not key:
        raise UsageError(f"--slurm-option {item!r}: give KEY=VALUE, e.g. account=lab")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key) or any(c in value for c in "\n\r\0"):
        raise UsageError(f"--slurm-option {item!r}: keys are letters, digits, - and _, and values one line "
                         "(no newline): each option is one #SBATCH line of the job script")
    long_key = key.replace("_", "-")
    if key in RESERVED or any(len(long_key) > 1 and len(r) > 1 and r.startswith(long_key) for r in RESERVED):
        # sbatch also takes any unambiguous beginning of a long option: 'out' is --output
        raise UsageError(f"--slurm-option {key}: the harness sets it (logs go to the study's slurm/ folder); "
                         "leave it out")
    return key, value


def require_slurm() -> None:
    """Fail with one line, before any work, where this machine has no SLURM client to submit with."""
    missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
    if missing:
        raise UsageError(f"--executor slurm: SLURM was not found on this machine ({' and '.join(missing)} not on "
                         "PATH); submit from a SLURM login node, or use --executor local to run here")


FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE", "INTERRUPTED", "FINISHED"}


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus: int = 0  # GPUs per task
    cpus: int = 2  # CPUs per task
    mem_gb: float = 8.0
    time_min: int = 60
    max_parallel: int = 20
    options: dict[str, str] = field(default_factory=dict)  # extra sbatch options, e.g. {"account": "lab"}
    detach: bool = False


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, options: SlurmOptions = SlurmOptions()):
        self.options = options
        self.jobs: list = []

    @property
    def detaches(self) -> bool:
        return self.options.detach

    def describe(self) -> str:
        o = self.options
        where = f"partition {o.partition}" if o.partition else "the default partition"
        return (f"SLURM array on {where}, {o.gpus} GPU(s), {o.cpus} CPUs, {o.mem_gb:g} GB, {o.time_min} min per "
                f"task, at most {o.max_parallel} at once")

    def _executor(self, folder):
        try:
            import submitit
        except ImportError:
            raise UsageError("--executor slurm needs submitit: pip install submitit") from None
        executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster="slurm")  # require_slurm checked srun
        o = self.options
        params = {"slurm_job_name": "harness", "timeout_min": o.time_min, "cpus_per_task": o.cpus,
                  "mem_gb": o.mem_gb, "slurm_array_parallelism": o.max_parallel, "tasks_per_node": 1, "nodes": 1}
        if o.partition:
            params["slurm_partition"] = o.partition
        if o.gpus:
            params["gpus_per_node"] = o.gpus
        if o.options:
            params["slurm_additional_parameters"] = dict(o.options)
        executor.update_parameters(**params)
        return executor

    def run(self, context: RunContext, specs: list[RunSpec], reporter: Reporter, retry_failed: bool = False) -> None:
        store = context.store()
        folder = store.root / "slurm"
        folder.mkdir(exist_ok=True)
        executor = self._executor(folder)
        try:
            self.jobs = executor.map_array(array_task, [context] * len(specs), [s.to_dict() for s in specs],
                                           [retry_failed] * len(specs))
        except Exception as exc:  # submitit raises plain exceptions for sbatch errors
            raise UsageError(f"SLURM refused the job array: {str(exc).strip().splitlines()[-1]}; "
                             "check --slurm-partition, --slurm-time and --slurm-option against `sinfo`") from None
        record = {"submitted": time.time(), "jobs": {s.folder_name: j.job_id for s, j in zip(specs, self.jobs)}}
        write_json(folder / f"array-{self.jobs[0].job_id.split('_')[0]}.json", record)
        reporter.say(f"submitted SLURM array {self.jobs[0].job_id.split('_')[0]} with {len(specs)} tasks "
                     f"(logs in {folder})")
        if self.options.detach:
            reporter.say(f"detached: `python -m harness status {store.root}` follows it; `run` or `report` with "
                         "the same --out picks the results up")
            return
        # without SLURM accounting (sacct) submitit warns on every poll; the store says what finished
        logging.getLogger("submitit").setLevel(logging.ERROR)
        with reporter.task("study", total=len(specs)) as grid:
            watch(store, specs, grid, lambda: not all(_finished(job) for job in self.jobs), interval=2.0)
        self._record_lost(context, specs)

    def _record_lost(self, context: RunContext, specs: list[RunSpec]) -> None:
        """A task that SLURM ended (time limit, memory, node failure) before its run wrote a result: record
        the run as failed with SLURM's reason and where its log is. A task that gave its run up because it
        lost the claim (logged as lost) is not a failure: the run stays pending."""
        store = context.store()
        last = {e["run"]: e["event"] for e in store.events()}
        for spec, job in zip(specs, self.jobs):
            if store.state(spec, verify=False).state in ("done", "failed"):
                continue
            claim = store.read_claim(spec.folder_name)
            if claim and not claim["stale"]:
                continue
            if last.get(spec.folder_name) == "lost":  # it gave its run up (claim lost): left for a later command
                continue
            state = _state(job)
            log = getattr(job.paths, "stderr", "")
            store.save_failure(spec, f"SLURM task {job.job_id} ended {state} without a result (log: {log})",
                               status={"slurm_job": job.job_id, "slurm_state": state})


def _state(job) -> str:
    try:
        return str(job.state).upper()
    except Exception:  # sacct missing or slow: submitit raises
        return "UNKNOWN"


def _finished(job) -> bool:
    try:
        return job.done()
    except Exception:
        return _state(job).split()[0] in FINAL
