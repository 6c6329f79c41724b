"""Wall time of one small phantom study (10 runs of the default model, 30 + 30 steps) through each executor,
in one session so the ratios compare like with like: in this process with 1 and with 2 CPU threads per run,
and 2 local worker processes with 1 thread each. The phantom and base model are made first (cached), so only
the runs are timed. Run: ``pytest bench/test_executor_speed.py --benchmark-only -s``."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

STUDY = ["--n", "2,5", "--seeds", "2", "--folds", "2", "--steps", "30"]
WALL: dict[str, float] = {}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    _run(tmp_path_factory.mktemp("warm") / "study", path, "--n", "2", "--seeds", "1", "--folds", "2", "--steps", "1")
    return path


def _run(out, cache, *args) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(out), "--cache-dir", str(cache),
                           *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return time.perf_counter() - started


@pytest.mark.parametrize("name,extra", [
    ("inprocess, 1 thread", ["--threads", "1"]),
    ("inprocess, 2 threads", ["--threads", "2"]),
    ("local, 2 workers x 1 thread", ["--threads", "1", "--executor", "local", "--workers", "2"]),
])
def test_study_wall_time(benchmark, cache, tmp_path, name, extra):
    counter = iter(range(100))
    seconds = benchmark.pedantic(lambda: _run(tmp_path / f"s{next(counter)}", cache, *STUDY, *extra),
                                 rounds=1, iterations=1)
    WALL[name] = seconds
    benchmark.extra_info.update({"wall_s": round(seconds, 1), "runs": 10, "cpus": os.cpu_count()})
    base = WALL.get("inprocess, 1 thread")
    if base:
        print(f"\n{name}: {seconds:.1f} s for 10 runs ({base / seconds:.2f}x the speed of inprocess, 1 thread; "
              f"{os.cpu_count()} CPUs)")
