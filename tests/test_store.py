"""The store's promises, without training: exclusive claims, take-over of abandoned ones, atomic swaps,
checksums that catch a corrupt result, and clear errors when a write fails."""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from harness.errors import StoreError
from harness.store import RunSpec, RunStore


def _spec(seed: int = 0) -> RunSpec:
    return RunSpec(strategy="ed_es", n=1, seed=seed, fold=0, params={}, streams={"subset": 1}, dataset="d",
                   split={"pool": ["a"], "validation": [], "test": ["b"]}, init="source", init_fingerprint="x",
                   train={})


def _save(store: RunStore, spec: RunSpec, dice: float = 0.9) -> None:
    store.save_run(spec, pd.DataFrame({"subject": ["a"], "slice": [0], "frame": [0], "phase": ["ED"]}),
                   pd.DataFrame({"subject": ["b"], "dice_lv": [dice]}), pd.DataFrame({"subject": ["b"]}), {})


@pytest.fixture
def store(tmp_path) -> RunStore:
    s = RunStore(tmp_path / "study", stale_after=600)
    s.prepare()
    return s


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_claim_is_exclusive_until_released(store):
    first = store.claim("r1", "a")
    assert first is not None and store.claim("r1", "b") is None
    held = store.read_claim("r1")
    assert held["owner"] == "a" and held["pid"] == os.getpid() and not held["stale"]
    first.release()
    assert store.read_claim("r1") is None and store.claim("r1", "b") is not None


def test_many_threads_racing_for_runs_get_one_claim_each(store):
    names = [f"r{i}" for i in range(40)]
    winners: dict[str, list[int]] = {name: [] for name in names}
    barrier = threading.Barrier(8)

    def race(k: int) -> None:
        barrier.wait()
        for name in names:
            if store.claim(name, f"thread-{k}") is not None:
                winners[name].append(k)

    threads = [threading.Thread(target=race, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(w) == 1 for w in winners.values()), {n: w for n, w in winners.items() if len(w) != 1}


def test_a_dead_local_process_or_a_stopped_heartbeat_gives_up_its_claim(store):
    path = store.claim_path("dead")
    path.write_text(json.dumps({"owner": "w", "host": socket.gethostname(), "pid": _dead_pid(), "token": "t"}))
    assert store.read_claim("dead")["stale"] and "is gone" in store.read_claim("dead")["why"]
    assert store.claim("dead", "me") is not None

    remote = store.claim_path("remote")
    remote.write_text(json.dumps({"owner": "w", "host": "node-17", "pid": 1, "token": "t2"}))
    assert store.claim("remote", "me") is None  # fresh heartbeat on another host: still held
    old = time.time() - 601
    os.utime(remote, (old, old))
    assert "no heartbeat" in store.read_claim("remote")["why"]
    assert store.claim("remote", "me") is not None
    events = [e for e in store.events() if e["event"] == "reclaimed"]
    assert [e["run"] for e in events] == ["dead", "remote"]


def test_the_heartbeat_keeps_a_long_run_claimed(tmp_path):
    store = RunStore(tmp_path / "s", stale_after=1.0)
    store.prepare()
    claim = store.claim("long", "me")
    time.sleep(2.0)  # twice the stale time: only the heartbeat (every 0.5 s) keeps it
    assert not store.read_claim("long")["stale"]
    claim.release()


def test_a_new_result_replaces_a_failure_by_renames_and_corruption_is_caught(store):
    spec = _spec()
    store.save_failure(spec, "diverged", "Traceback ...")
    assert store.state(spec).state == "failed" and store.status(spec)["traceback"] == "Traceback ..."
    _save(store, spec)
    assert store.state(spec).state == "done"
    assert not [p for p in store.runs.iterdir() if p.name.startswith(".")], "a temporary folder was left"
    images = store.folder(spec) / "images.csv"
    images.write_text(images.read_text()[:10])  # cut short, as by a full disk
    state = store.state(spec)
    assert state.state == "corrupt" and "images.csv" in state.reason
    (store.folder(spec) / "status.json").write_text('{"state": "do')
    assert store.state(spec).state == "corrupt"


def test_a_failing_write_keeps_what_was_there_and_says_what_to_do(store, monkeypatch):
    done, failing = _spec(0), _spec(1)
    _save(store, done)
    store.save_failure(failing, "first try failed")
    real = pd.DataFrame.to_csv

    def full_disk(self, path=None, *args, **kwargs):
        if str(path).endswith("images.csv"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    with pytest.raises(StoreError, match="No space left on device.*finished runs are kept.*run the same command"):
        _save(store, failing)
    assert store.state(done).state == "done"
    assert store.state(failing).state == "failed" and store.state(failing).reason == "first try failed"
    assert not [p for p in store.runs.iterdir() if p.name.startswith(".")], "a temporary folder was left"


def test_files_are_readable_by_the_group_like_any_other_file(store):
    spec = _spec()
    _save(store, spec)
    mode = (store.folder(spec) / "status.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~_umask()
    assert store.folder(spec).stat().st_mode & 0o777 == 0o777 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_spec_written_before_test_stride_keeps_its_run_id():
    """Specs of 0.4 studies have no test_stride (they scored every frame): read back, their folder name must
    be the one they were stored under, so `report` still finds their results; another stride is another run."""
    import hashlib

    old = {k: v for k, v in _spec().to_dict().items() if k != "test_stride"}
    stored_id = hashlib.sha256(json.dumps(old, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]
    assert RunSpec.from_dict(old).run_id == stored_id
    assert RunSpec.from_dict({**old, "test_stride": 3}).run_id != stored_id
