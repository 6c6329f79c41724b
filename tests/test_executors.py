"""Executors for real, through the command line in subprocesses: the same results in this process, in local
workers and on SLURM; workers killed with SIGKILL at random moments and two commands on one study never
leave a run done twice or a result damaged; a full disk and a read-only study folder give a clear error and
keep what was finished."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.store import RunStore

pytestmark = pytest.mark.slow

# 19 fast runs: the base model, then 2 strategies x n 1,2,3 x 3 seeds, one optimiser step per stage at 32 px
STUDY = ["--size", "32", "--pretrain-steps", "4", "--source-subjects", "3", "--target-subjects", "8",
         "--test-subjects", "2", "--val-subjects", "1", "--folds", "1", "--seeds", "3", "--n", "1,2,3",
         "--strategy", "ed_es,all_frames", "--steps", "1"]
RUNS = 19


def harness(out: Path, cache: Path, *extra: str, wait: bool = True, timeout: float = 600):
    command = [sys.executable, "-m", "harness", "run", *STUDY, "--out", str(out), "--cache-dir", str(cache), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def results(out: Path) -> dict[str, str]:
    """images.csv of every run folder (not the temporary folder a killed worker may leave; see RunStore.sweep)."""
    return {p.parent.name: p.read_text() for p in sorted((out / "runs").glob("*/images.csv"))
            if not p.parent.name.startswith(".")}


def check_complete(out: Path, reference: dict[str, str]) -> Counter:
    """Every run done once, intact (checksums) and equal to the reference; returns done events per run."""
    store = RunStore(out)
    names = store.read_study()["runs"]
    assert len(names) == RUNS
    states = {name: store.state(name) for name in names}
    assert all(s.state == "done" for s in states.values()), {n: s for n, s in states.items() if s.state != "done"}
    assert results(out) == reference
    done = Counter(e["run"] for e in store.events() if e["event"] == "done")
    assert max(done.values()) == 1, [name for name, k in done.items() if k > 1]
    assert not list(store.runs.glob("*.claim")), "a claim outlived its run"
    return done


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("executor-cache")


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("inprocess") / "study"
    done = harness(out, cache, "--executor", "inprocess")
    assert done.returncode == 0, done.stdout + done.stderr
    found = results(out)
    assert len(found) == RUNS
    return found


def test_local_workers_give_the_same_results_as_one_process(reference, cache, tmp_path):
    out = tmp_path / "local"
    done = harness(out, cache, "--executor", "local", "--workers", "2", "--devices", "7,9")
    assert done.returncode == 0, done.stdout + done.stderr
    check_complete(out, reference)
    statuses = [json.loads(p.read_text()) for p in (out / "runs").glob("*/status.json")]
    assert len({s["pid"] for s in statuses}) == 2, "both workers should have run some runs"
    # each worker sees only its GPU (here none exists, so the runs fall back to the CPU)
    assert {s["devices"] for s in statuses} == {"7", "9"} and {s["device"] for s in statuses} == {"cpu"}


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _workers(pid: int) -> list[int]:
    """Worker processes of a `run --executor local` command (spawned children that run harness code)."""
    found = []
    for child in _children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(child)
    return found


def test_killed_workers_lose_nothing_and_do_nothing_twice(reference, cache, tmp_path):
    """10 trials: SIGKILL one local worker at a random point of the study (after a random number of its 19
    runs finished, so the kill lands while work is left however fast the machine is), let the command end,
    run it again."""
    rng = random.Random(11)
    kills = []
    for trial in range(10):
        out = tmp_path / f"trial{trial}"
        process = harness(out, cache, "--executor", "local", "--workers", "2", wait=False)
        started = time.monotonic()
        finished_before_kill = rng.randint(0, 16)
        victim = None
        while process.poll() is None and (not (out / "events.jsonl").exists() or sum(
                e["event"] == "done" for e in RunStore(out).events()) < finished_before_kill):
            time.sleep(0.05)
        delay = time.monotonic() - started
        workers = _workers(process.pid) if process.poll() is None else []
        if workers:
            victim = rng.choice(workers)
            os.kill(victim, signal.SIGKILL)
        first = process.communicate(timeout=600)[0]
        store = RunStore(out)
        finished_first = sum(store.state(n, verify=False).state == "done" for n in store.read_study()["runs"])
        second = harness(out, cache, "--executor", "local", "--workers", "2")
        assert second.returncode == 0, first + second.stdout + second.stderr
        done = check_complete(out, reference)
        kills.append({"trial": trial, "after_s": round(delay, 1), "killed": victim is not None,
                      "done_before_resume": finished_first, "done_events": sum(done.values()),
                      "reclaimed": sum(e["event"] == "reclaimed" for e in RunStore(out).events())})
    print(json.dumps(kills, indent=1))
    assert sum(k["killed"] for k in kills) >= 8, kills  # the kills really happened while workers ran


def test_two_commands_on_one_study_never_run_the_same_run(reference, cache, tmp_path):
    out = tmp_path / "twice"
    first, second = (harness(out, cache, wait=False) for _ in range(2))
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    done = check_complete(out, reference)
    assert sum(done.values()) == RUNS


def _sinfo() -> bool:
    return shutil.which("sinfo") is not None and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _sinfo(), reason="no SLURM reachable (`sinfo` fails); .ci/slurm-up starts a single-node one")
def test_a_study_through_slurm_gives_the_same_results(reference, cache, tmp_path):
    out = tmp_path / "slurm"
    started = time.perf_counter()
    slurm = ["--executor", "slurm", "--slurm-cpus", "1", "--slurm-mem", "2", "--slurm-time", "10", "--max-parallel", "4"]
    done = harness(out, cache, *slurm)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"SLURM study of {RUNS} runs: {time.perf_counter() - started:.0f} s")
    check_complete(out, reference)
    owners = {e.get("owner", "") for e in RunStore(out).events() if e["event"] == "claimed"}
    assert all(o.startswith("slurm ") for o in owners), owners


@pytest.mark.skipif(not _sinfo(), reason="no SLURM reachable (`sinfo` fails); .ci/slurm-up starts a single-node one")
def test_a_detached_slurm_study_is_picked_up_by_a_later_command(reference, cache, tmp_path):
    out = tmp_path / "detached"
    slurm = ["--executor", "slurm", "--slurm-cpus", "1", "--slurm-mem", "2", "--max-parallel", "4"]
    queued = harness(out, cache, *slurm, "--detach", timeout=120)
    assert queued.returncode == 0 and "queued on SLURM" in queued.stderr, queued.stderr
    status = [sys.executable, "-m", "harness", "status", str(out), "--json"]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        rows = json.loads(subprocess.run(status, capture_output=True, text=True, check=True).stdout)
        if all(r["state"] == "done" for r in rows):
            break
        time.sleep(2)
    again = harness(out, cache, "--executor", "inprocess")  # the same study, here: nothing left to run
    assert again.returncode == 0 and f"0 runs done, {RUNS} already finished" in again.stderr, again.stderr
    check_complete(out, reference)


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: room for a few runs only (needs root to mount; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_and_a_read_only_folder_stop_with_a_clear_error_and_keep_finished_runs(reference, cache,
                                                                                          small_disk):
    out = small_disk / "study"
    full = harness(out, cache)
    assert full.returncode == 2, full.stdout + full.stderr
    assert "No space left on device" in full.stderr and "finished runs are kept" in full.stderr
    assert "Traceback" not in full.stderr
    store = RunStore(out)
    kept = {name: store.state(name).state for name in store.read_study()["runs"]}
    finished = [name for name, state in kept.items() if state == "done"]
    assert finished and set(kept.values()) <= {"done", "pending"}, kept  # nothing half-written or failed
    assert not [p for p in store.runs.iterdir() if p.name.startswith(".") and p.suffix == ".tmp"]
    before = {name: (out / "runs" / name / "images.csv").read_text() for name in finished}

    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    readonly = harness(out, cache)
    assert readonly.returncode == 2 and "Read-only file system" in readonly.stderr, readonly.stderr
    subprocess.run(["mount", "-o", "remount,rw,size=16m", str(small_disk)], check=True)
    assert all((out / "runs" / name / "images.csv").read_text() == text for name, text in before.items())

    resumed = harness(out, cache)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check_complete(out, reference)


def test_mps_hint_only_when_workers_share_a_gpu_without_mps(tmp_path):
    from harness.executors.local import mps_hint

    assert mps_hint(8, 0, str(tmp_path)) is None  # no GPU
    assert mps_hint(1, 1, str(tmp_path)) is None  # one worker per GPU: nothing to share
    hint = mps_hint(8, 1, str(tmp_path))
    assert hint and "8 workers share 1 GPU" in hint and "nvidia-cuda-mps-control -d" in hint
    (tmp_path / "control").touch()  # the MPS daemon's control pipe: MPS is running
    assert mps_hint(8, 1, str(tmp_path)) is None
