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


def test_a_claim_left_on_a_finished_run_by_a_killed_process_is_swept(store):
    """A process killed after its result was in but before it released its claim leaves the claim behind;
    the next command's sweep removes it (and leaves live claims and claims of unfinished runs alone)."""
    done, pending = _spec(0), _spec(1)
    _save(store, done)
    for spec in (done, pending):
        store.claim_path(spec.folder_name).write_text(json.dumps(
            {"owner": "w", "host": socket.gethostname(), "pid": _dead_pid(), "token": "t"}))
    live = _spec(2)
    _save(store, live)
    claim = store.claim(live.folder_name, "me")
    store.sweep()
    assert not store.claim_path(done.folder_name).exists()
    assert store.claim_path(pending.folder_name).exists() and store.claim_path(live.folder_name).exists()
    claim.release()


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

    old = {k: v for k, v in _spec().to_dict().items() if k not in ("test_stride", "selection", "cost")}
    stored_id = hashlib.sha256(json.dumps(old, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]
    assert RunSpec.from_dict(old).run_id == stored_id
    assert RunSpec.from_dict({**old, "test_stride": 3}).run_id != stored_id
    # 0.8's selection model and minute budgets likewise: absent = the old id, present = another run
    assert RunSpec.from_dict({**old, "selection": "", "cost": {}}).run_id == stored_id
    assert RunSpec.from_dict({**old, "selection": "abc"}).run_id != stored_id
    minutes = RunSpec.from_dict({**old, "cost": {"name": "contours"}})
    assert minutes.run_id != stored_id and "__m" in minutes.folder_name


# -- claims that survive the filesystem (issue 19.5) ------------------------------------------------------------

def _stale_claim(store: RunStore, name: str) -> None:
    """A claim of a process on another node whose heartbeat stopped long ago."""
    path = store.claim_path(name)
    path.write_text(json.dumps({"owner": "w", "host": "node-17", "pid": 1, "token": "dead"}))
    old = time.time() - 3600
    os.utime(path, (old, old))


def test_a_take_over_never_leaves_two_holders_when_others_act_between_its_steps(store, monkeypatch):
    """The interleaving that gave two live holders in 0.6: A judges a claim stale; B takes it over; then (in
    0.6, between A's move aside and its link back) C creates a claim. Each other process acts at each step
    of A's take-over in turn; at every step, exactly one process may hold the run, and a process whose
    token is gone may write nothing."""
    import harness.store as store_module
    from harness.errors import ClaimLost

    for step in ("judged stale", "before replace", "replaced"):
        name = f"run-{step.replace(' ', '-')}"
        _stale_claim(store, name)
        others: dict[str, object] = {}

        def interleave(at: str, step=step, name=name, others=others) -> None:
            if at == step and not others:
                others["fired"] = None  # B and C themselves pass this step without interleaving
                others["B"] = RunStore(store.root, store.stale_after).claim(name, "B")  # takes over the stale claim
                others["C"] = RunStore(store.root, store.stale_after).claim(name, "C")  # creates one if it can

        monkeypatch.setattr(store_module, "_pause", interleave)
        a = store.claim(name, "A")
        monkeypatch.setattr(store_module, "_pause", lambda at: None)
        assert "fired" in others
        holders = {who: c for who, c in {"A": a, **others}.items() if c is not None and who != "fired"}
        live = []
        for who, claim in holders.items():
            try:
                claim.verify()
                live.append(who)
            except ClaimLost:
                pass
        assert len(live) == 1, (step, sorted(holders), live)
        assert json.loads(store.claim_path(name).read_text())["owner"] == live[0]
        for who, claim in holders.items():
            if who not in live:  # it lost the run: it may not write a result
                with pytest.raises(ClaimLost, match="taken over by another process"):
                    claim.verify()
            claim.release()


def test_a_holder_whose_claim_was_taken_over_cannot_write_its_result(store):
    from harness.errors import ClaimLost

    spec = _spec()
    claim = store.claim(spec.folder_name, "slow node")
    assert claim is not None
    path = store.claim_path(spec.folder_name)  # another process judged it stale and took it over
    path.write_text(json.dumps({"owner": "other", "host": "node-2", "pid": 7, "token": "theirs"}))
    with pytest.raises(ClaimLost, match="taken over by another process"):
        _save(store, spec)
    assert store.state(spec).state == "pending"  # nothing written
    claim.release()
    assert json.loads(path.read_text())["token"] == "theirs"  # and their claim left alone


def test_a_take_over_while_the_results_are_being_written_installs_nothing(store, monkeypatch):
    from harness.errors import ClaimLost

    spec = _spec()
    claim = store.claim(spec.folder_name, "slow node")
    real = pd.DataFrame.to_csv

    def taken_over_meanwhile(self, path=None, *args, **kwargs):
        if str(path).endswith("images.csv"):
            store.claim_path(spec.folder_name).write_text(json.dumps({"owner": "other", "token": "theirs"}))
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", taken_over_meanwhile)
    with pytest.raises(ClaimLost):
        _save(store, spec)
    assert store.state(spec).state == "pending"
    assert not [p for p in store.runs.iterdir() if p.name.startswith(".") and p.suffix == ".tmp"]
    claim.release()


def _failing_utime(monkeypatch, until: float) -> None:
    """os.utime raises ESTALE (a stale NFS handle) until time ``until``."""
    real = os.utime

    def utime(path, *args, **kwargs):
        if str(path).endswith(".claim") and time.time() < until:
            raise OSError(errno.ESTALE, "Stale file handle")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "utime", utime)


def test_a_heartbeat_that_fails_for_less_than_the_stale_time_keeps_the_claim(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "s", stale_after=4.0)
    store.prepare()
    _failing_utime(monkeypatch, time.time() + 1.5)  # well under the stale time
    claim = store.claim("r", "me")
    time.sleep(5.0)  # past the stale time: only the retries after the failures can have kept it
    assert claim.lost is None and not store.read_claim("r")["stale"]
    claim.verify()
    claim.release()


def test_a_claim_that_cannot_be_refreshed_for_longer_than_the_stale_time_stops_the_run(tmp_path, monkeypatch):
    """0.6 stopped its heartbeat at the first OSError and ran on while another process took the run over.
    Now the run stops once the claim has been unrefreshable for the stale time, writes nothing, and is
    left pending (a later command, or the process that takes it over, runs it)."""
    from harness.worker import RunContext, run_claimed

    store = RunStore(tmp_path / "s", stale_after=1.0)
    store.prepare()
    _failing_utime(monkeypatch, time.time() + 60)
    spec = _spec()
    steps = []

    def long_run(spec, context, on_step, on_total):
        for _ in range(100):  # 10 s of training steps, unless stopped
            time.sleep(0.1)
            on_step()
            steps.append(1)
        _save(context.store(), spec)

    context = RunContext(study=str(store.root), settings=None, dataset="", stale_after=1.0)
    assert run_claimed(spec, context, "me", run=long_run) == "lost"
    assert 5 <= len(steps) < 40  # stopped after about the stale time (1 s) plus a beat, not at the end
    assert store.state(spec).state == "pending" and store.read_claim(spec.folder_name) is None
    lost = [e for e in store.events() if e["event"] == "lost"]
    assert len(lost) == 1 and "could not be refreshed" in lost[0]["why"] and "Stale file handle" in lost[0]["why"]
