"""Study folders: one sub-folder per run, written atomically, so a study survives a crash and resumes.

    <study>/study.json                         the study's settings (what `run` was asked for)
    <study>/runs/<strategy>__<init>__n<N>__s<seed>__f<fold>__<id>/   (m<N> for a budget of N expert minutes)
        spec.json       everything needed to re-run this run
        selection.csv   the training images it used
        images.csv      per-image pixel counts and Dice on the test subjects
        subjects.csv    per test subject: mean image Dice and 3D Dice over all its images
        train.csv       the training record: step, stage, epoch, images seen, learning rate, training loss and
                        validation Dice at the start and every check, the kept check marked (0.9 and later)
        status.json     done (with the checksums of the files above) or failed (reason, traceback), timings
    <study>/runs/<run>.claim                   who is running it (owner, host, pid); its mtime is the heartbeat
    <study>/events.jsonl                       claims, take-overs and results, one JSON line each

A run folder is written under a temporary name and renamed into place when complete (an old folder is first
renamed aside, never deleted before the new one is in), so a crash leaves either the old or the new run.
Before a process starts a run it claims it with an exclusively created claim file, so two commands, or
hundreds of array tasks, on one study never do the same run twice; a claim whose heartbeat stopped (or
whose process on this host is gone) is taken over. A finished run whose files no longer match their
checksums is reported as corrupt and run again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import __version__
from harness.errors import ClaimLost, StoreError


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run's result. Its id is a hash of its canonical JSON."""

    strategy: str
    n: int
    seed: int
    fold: int
    params: dict[str, Any]
    streams: dict[str, int]  # independent seeds for subset draw, selection, weight init, data order, augmentation
    dataset: str  # fingerprint of the prepared dataset
    split: dict[str, list[str]]  # pool, validation and test subjects
    init: str  # where fine-tuning starts: source, ckpt-<name>, imagenet or random (harness.inits)
    init_fingerprint: str  # identity of the initial weights (for a checkpoint: the hash of its tensors)
    train: dict[str, Any]
    test_stride: int = 1  # test images scored: every labelled frame (1) or ED, ES and every k-th (evaluate.test_frames)
    version: str = field(default=__version__)
    selection: str = ""  # fingerprint of the selection model whose view the strategy reads ("" = none)
    cost: dict[str, Any] = field(default_factory=dict)  # the cost model when n is a budget of expert minutes

    @property
    def budget_unit(self) -> str:
        """What n counts: "subjects" (or the strategy's own unit), or "minutes" of expert time."""
        return "minutes" if self.cost else "subjects"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def run_id(self) -> str:
        fields = self.to_dict()
        if fields["test_stride"] == 1:  # added in 0.5; specs written before it (stride 1) keep their ids
            del fields["test_stride"]
        for name in ("selection", "cost"):  # added in 0.8, likewise
            if not fields[name]:
                del fields[name]
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]

    @property
    def folder_name(self) -> str:
        # a plug-in may name its strategy anything; the folder keeps letters, digits and ._+- of it (the id
        # keeps folders of two such names apart)
        strategy = re.sub(r"[^A-Za-z0-9._+-]", "_", self.strategy)
        budget = f"m{self.n}" if self.cost else f"n{self.n}"
        return f"{strategy}__{self.init}__{budget}__s{self.seed}__f{self.fold}__{self.run_id}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**data)


#: Columns of a run's train.csv, in order ("kept": the check whose weights the run kept).
TRAINING_COLUMNS = ["step", "stage", "epoch", "images_seen", "lr", "loss", "val_dice_lv", "val_dice_my",
                    "val_score", "kept"]


def method_label(strategy: str, init: str, study_inits: list[str], base: str = "base") -> str:
    """How a run is named in the statistics: the strategy alone when the study has one init, else
    'strategy+init'. The first init with a base model gives the plain 'base'; others 'base+init'."""
    if strategy == base:
        with_base = [i for i in study_inits if i == "source" or i.startswith("ckpt-")]
        return base if not with_base or init == with_base[0] else f"{base}+{init}"
    return strategy if len(study_inits) <= 1 else f"{strategy}+{init}"


_UMASK = os.umask(0)
os.umask(_UMASK)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a temporary file in the same folder, flushed to disk, then renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; others on a shared cluster read studies
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@dataclass(frozen=True)
class RunState:
    """Where a run stands in the store: pending, done, failed or corrupt (a finished run whose files do not
    match the checksums it recorded, or cannot be read); ``reason`` says why for the last two."""

    state: str
    reason: str = ""


def _pause(step: str) -> None:
    """A point between the steps of a take-over; tests replace it to interleave processes deterministically."""


def _token(path: Path) -> str | None:
    """The token in a claim file (None: gone); OSError and ValueError when it cannot be read now."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if not isinstance(data, dict):
        raise ValueError("not a claim")
    return data.get("token")


def _gone(token: str | None) -> str:
    """Why a holder lost its claim, from the token the claim file now holds."""
    return "its claim was taken over by another process" if token else "its claim file was removed"


_HELD: dict[tuple[str, int], Claim] = {}  # claims this process holds, by (claim file, thread)


class Claim:
    """An exclusive claim on one run: a file holding this holder's token, kept fresh by a heartbeat thread.

    The holder is whoever's token the file holds: a take-over replaces the file in one rename, so the claim
    is never absent while it changes hands, and a process whose token is gone has lost the run. The
    heartbeat checks the token at every beat; a refresh that fails (a stale NFS handle, say) is retried
    with back-off, and only when none has succeeded for longer than the stale time is the claim given up.
    ``check()`` (every training step) and ``verify()`` (before any result is written) raise ClaimLost then.
    """

    def __init__(self, path: Path, info: dict[str, Any], interval: float, stale_after: float):
        self.path, self.info, self.stale_after = path, info, stale_after
        self.lost: str | None = None  # why, once lost
        self.last_ok = time.monotonic()  # the last time the claim was known to be ours and fresh
        self._stop = threading.Event()
        self._key = (os.path.realpath(path), threading.get_ident())
        _HELD[self._key] = self
        self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True)
        self._thread.start()

    def _beat(self, interval: float) -> None:
        delay, failures = interval, 0
        while not self._stop.wait(delay):
            try:
                token = _token(self.path)
                if token != self.info["token"]:
                    self._lose(_gone(token))
                    return
                os.utime(self.path)  # now, by the clock of the filesystem's server, which every reader compares with
                self.last_ok, delay, failures = time.monotonic(), interval, 0
            except (OSError, ValueError) as exc:  # transient on a network filesystem: retry soon, then less often
                silent = time.monotonic() - self.last_ok
                if silent > self.stale_after:
                    self._lose(f"its claim could not be refreshed for {silent:.0f} s (stale after "
                               f"{self.stale_after:.0f} s): {exc.__class__.__name__}: {exc}")
                    return
                failures += 1
                delay = min(interval, 0.25 * 2 ** min(failures - 1, 16), max(0.05, self.stale_after - silent))

    def _lose(self, why: str) -> None:
        self.lost = why
        self._stop.set()

    def check(self) -> None:
        """Raise ClaimLost once the heartbeat has found the claim lost (no I/O: cheap at every step)."""
        if self.lost:
            raise ClaimLost(f"run {self.path.stem}: {self.lost}; stopped without writing a result")

    def verify(self) -> None:
        """Read the claim file now: raise ClaimLost unless it still holds this holder's token. A read that
        fails (a transient network-filesystem error) is retried with back-off until the stale time since the
        claim was last known fresh; only another token, or no claim file, is a loss at once."""
        self.check()
        wait = 0.25
        while True:
            try:
                token = _token(self.path)
                break
            except (OSError, ValueError) as exc:
                if time.monotonic() - self.last_ok + wait > self.stale_after:
                    raise ClaimLost(f"run {self.path.stem}: its claim cannot be read ({exc}); stopped without "
                                    "writing a result") from None
                time.sleep(wait)
                wait = min(2 * wait, 5.0)
        if token != self.info["token"]:
            self._lose(_gone(token))
            self.check()
        self.last_ok = time.monotonic()

    def release(self) -> None:
        self._stop.set()
        _HELD.pop(self._key, None)
        try:
            if _token(self.path) == self.info["token"]:
                self.path.unlink()
        except (OSError, ValueError):
            pass


class RunStore:
    """Reads and writes the runs of one study folder; claims runs so that no run is done twice.

    ``stale_after``: seconds without a heartbeat after which a claim counts as abandoned (a claim of a
    process on this host that no longer exists is abandoned at once).
    """

    def __init__(self, root: Path, stale_after: float = 600.0):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.stale_after = float(stale_after)

    def prepare(self) -> None:
        """Create the study folder, or fail with one clear line when it cannot be written."""
        try:
            self.runs.mkdir(parents=True, exist_ok=True)
            probe = self.runs / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise StoreError(
                f"cannot write study folder '{self.root}': {exc.strerror or exc}; choose another --out"
            ) from None

    def write_study(self, settings: dict[str, Any]) -> None:
        self._guard(lambda: write_json(self.root / "study.json", settings), "the study's settings")

    def read_study(self) -> dict[str, Any]:
        path = self.root / "study.json"
        if not path.exists():
            raise StoreError(f"'{self.root}' is not a study folder (no study.json); run `harness run --out` first")
        return json.loads(path.read_text())

    def folder(self, spec: RunSpec | str) -> Path:
        return self.runs / (spec if isinstance(spec, str) else spec.folder_name)

    # -- reading ---------------------------------------------------------------------------------------

    def state(self, spec: RunSpec | str, verify: bool = True) -> RunState:
        """The run's state; with ``verify`` a done run's files are checked against their checksums."""
        folder = self.folder(spec)
        try:
            status = json.loads((folder / "status.json").read_text())
        except FileNotFoundError:
            return RunState("pending")
        except (OSError, ValueError) as exc:
            return RunState("corrupt", f"status.json cannot be read ({exc})")
        if status.get("state") == "failed":
            return RunState("failed", status.get("reason", "unknown"))
        if status.get("state") != "done":
            return RunState("corrupt", f"status.json has no known state ({status.get('state')!r})")
        if verify:
            for name, digest in status.get("files", {}).items():
                try:
                    if _digest(folder / name) != digest:
                        return RunState("corrupt", f"{name} does not match its recorded checksum")
                except OSError:
                    return RunState("corrupt", f"{name} is missing")
        return RunState("done")

    def status(self, spec: RunSpec | str) -> dict[str, Any]:
        return json.loads((self.folder(spec) / "status.json").read_text())

    def images(self, spec: RunSpec, label: str | None = None) -> pd.DataFrame:
        """Per-image metrics of a finished run, with the run's identity columns added. ``label`` names the
        method in the statistics (default: the strategy; see ``method_label`` above)."""
        frame = pd.read_csv(self.folder(spec) / "images.csv", dtype={"subject": str})
        return frame.assign(strategy=label or spec.strategy, n=spec.n, seed=spec.seed, fold=spec.fold,
                            init=spec.init, run_id=spec.run_id, **self.cost(spec))

    def training(self, spec: RunSpec) -> pd.DataFrame:
        """A finished run's training record (train.csv; empty for runs written before 0.9 and base-model runs)."""
        path = self.folder(spec) / "train.csv"
        return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=TRAINING_COLUMNS)

    def cost(self, spec: RunSpec) -> dict[str, float]:
        """A finished run's labelling cost: images, and expert minutes as it recorded them (runs before 0.8:
        under the built-in contours model from its selection's slice positions, NaN where it has none)."""
        from harness.cost import CONTOURS

        selection = pd.read_csv(self.folder(spec) / "selection.csv")
        try:
            minutes = float(json.loads((self.folder(spec) / "status.json").read_text())["cost"]["minutes"])
        except (OSError, ValueError, KeyError, TypeError):
            minutes = CONTOURS.total(selection) if "slice_pos" in selection else float("nan")
        return {"labelled_images": len(selection), "expert_minutes": minutes}

    # -- writing ---------------------------------------------------------------------------------------

    def _guard(self, write: Callable[[], None], what: str) -> None:
        """Run a write; an OSError (full disk, lost permission) becomes one StoreError naming the folder."""
        try:
            write()
        except OSError as exc:
            raise StoreError(f"cannot write {what} in '{self.root}': {exc.strerror or exc}; finished runs are "
                             "kept: fix this (free space, permissions) and run the same command again") from None

    def _install(self, spec: RunSpec, fill: Callable[[Path], None]) -> None:
        """Write a run's files into a temporary folder, then swap it in for the old folder (if any) by renames
        only: at every moment the run's folder is either the complete old one, absent, or the complete new one.
        Where this thread holds the run's claim, it must still hold it when the files are complete (ClaimLost
        otherwise, and nothing is swapped in)."""
        final = self.folder(spec)
        tmp = Path(tempfile.mkdtemp(dir=self.runs, prefix=f".{spec.folder_name}.", suffix=".tmp"))
        try:
            os.chmod(tmp, 0o777 & ~_UMASK)
            fill(tmp)
            self._verify_claim(spec)
            if final.exists():
                old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def save_run(self, spec: RunSpec, selection: pd.DataFrame, images: pd.DataFrame, subjects: pd.DataFrame,
                 status: dict[str, Any], examples: dict[str, np.ndarray] | None = None,
                 record: pd.DataFrame | None = None) -> None:
        """Write a finished run: all files and their checksums into a temporary folder, then swap it in.
        ``examples`` (arrays of a few test images, see evaluate.examples) go to examples.npz, the training
        ``record`` to train.csv."""
        def fill(tmp: Path) -> None:
            write_json(tmp / "spec.json", spec.to_dict())
            selection.to_csv(tmp / "selection.csv", index=False)
            images.to_csv(tmp / "images.csv", index=False)
            subjects.to_csv(tmp / "subjects.csv", index=False)
            names = ["spec.json", "selection.csv", "images.csv", "subjects.csv"]
            if record is not None:
                record.to_csv(tmp / "train.csv", index=False)
                names.append("train.csv")
            if examples:
                with open(tmp / "examples.npz", "wb") as handle:
                    np.savez_compressed(handle, **examples)
                names.append("examples.npz")
            files = {name: _digest(tmp / name) for name in names}
            write_json(tmp / "status.json", {"state": "done", **status, "files": files})

        self._guard(lambda: self._install(spec, fill), f"the results of run {spec.folder_name}")
        self.log("done", spec.folder_name)

    def save_failure(self, spec: RunSpec, reason: str, details: str | None = None,
                     status: dict[str, Any] | None = None) -> None:
        """Record a failed run: its reason (one line or a few), the traceback where there is one."""
        def fill(tmp: Path) -> None:
            write_json(tmp / "spec.json", spec.to_dict())
            write_json(tmp / "status.json", {**(status or {}), "state": "failed", "reason": reason,
                                             "traceback": details})

        self._guard(lambda: self._install(spec, fill), f"the failure of run {spec.folder_name}")
        self.log("failed", spec.folder_name, reason=reason.strip().splitlines()[-1] if reason.strip() else "")

    def _verify_claim(self, spec: RunSpec) -> None:
        """Before a result is written: where this thread claimed the run, it must still hold the claim
        (ClaimLost otherwise). Writes outside a claim (tests, recording a run SLURM ended) are not checked."""
        claim = _HELD.get((os.path.realpath(self.claim_path(spec.folder_name)), threading.get_ident()))
        if claim is not None:
            claim.verify()

    def log(self, event: str, run: str, **fields: Any) -> None:
        """Append one line to events.jsonl (claims, reclaims, results): the study's history, for `status`."""
        line = json.dumps({"time": round(time.time(), 3), "event": event, "run": run, "host": socket.gethostname(),
                           "pid": os.getpid(), **fields}, default=str) + "\n"
        try:
            with open(self.root / "events.jsonl", "a") as handle:
                handle.write(line)
        except OSError:  # the history is a convenience; results and claims are what must not be lost
            pass

    def events(self) -> list[dict[str, Any]]:
        path = self.root / "events.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut short by a crash
                continue
        return out

    # -- claims ----------------------------------------------------------------------------------------

    def claim_path(self, name: str) -> Path:
        return self.runs / f"{name}.claim"

    def claim(self, name: str, owner: str) -> Claim | None:
        """Claim run ``name`` for ``owner``, or None when another live process holds it. An abandoned claim
        (no heartbeat for ``stale_after`` s, or its process on this host is gone) is taken over."""
        path = self.claim_path(name)
        info = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
                "started": time.time()}
        interval = max(0.5, min(30.0, self.stale_after / 5))
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = self.read_claim(name)
                if held is None:  # released meanwhile: try again
                    continue
                if not held["stale"]:
                    return None
                taken = self._take_over(name, held, info)
                if taken is None:  # released meanwhile: try to create it again
                    continue
                return Claim(path, info, interval, self.stale_after) if taken else None
            except OSError as exc:
                raise StoreError(f"cannot claim run {name} in '{self.root}': {exc.strerror or exc}; "
                                 "check that the study folder is writable") from None
            with os.fdopen(fd, "w") as handle:
                json.dump(info, handle)
            self.log("claimed", name, owner=owner)
            return Claim(path, info, interval, self.stale_after)
        return None

    def _take_over(self, name: str, held: dict[str, Any], info: dict[str, Any]) -> bool | None:
        """Replace an abandoned claim by ours in one rename (the claim file never disappears, so no third
        process can create one in between), if it still holds the token judged stale; then read it back.
        Two processes that judged the same claim stale in the same instant may both rename: the last one
        holds it, and the other finds another token in the file at its next heartbeat or before writing
        anything (Claim.verify), and stops. None: the claim was released meanwhile (create it instead)."""
        path = self.claim_path(name)
        tmp = path.with_name(f".{path.name}.{info['token'][:8]}.tmp")
        try:
            tmp.write_text(json.dumps(info))
            _pause("judged stale")
            now = self.read_claim(name)  # still abandoned, by the same holder?
            if now is None:
                return None
            if not now["stale"] or now.get("token") != held.get("token"):
                return False
            _pause("before replace")
            os.replace(tmp, path)
            _pause("replaced")
            if _token(path) != info["token"]:
                return False
        except OSError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        self.log("reclaimed", name, owner=info["owner"],
                 previous=f"{held.get('owner')} on {held.get('host')} pid {held.get('pid')}", why=held["why"])
        return True

    def read_claim(self, name: str) -> dict[str, Any] | None:
        """The claim on run ``name`` with ``heartbeat`` (s since), ``stale`` and ``why``; None if unclaimed."""
        path = self.claim_path(name)
        try:
            beat = path.stat().st_mtime
            info = json.loads(path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # cut short while being written, or garbage: judge by its age only
            info = {}
            beat = path.stat().st_mtime if path.exists() else time.time()
        age = time.time() - beat
        why = ""
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) and not _alive(info["pid"]):
            why = f"process {info['pid']} on this host is gone"
        elif age > self.stale_after:
            why = f"no heartbeat for {age:.0f} s (stale after {self.stale_after:.0f} s)"
        elif not info and age > 5:
            why = "unreadable claim file"
        return {**info, "heartbeat": age, "stale": bool(why), "why": why}

    def sweep(self) -> None:
        """Remove temporary folders and files that a killed process left behind (never a run's own folder),
        and the abandoned claims of finished runs (a process killed after its result was in, before it
        released its claim)."""
        for path in self.runs.glob("*.claim"):
            name = path.name[: -len(".claim")]
            held = self.read_claim(name)
            if held and held["stale"] and self.state(name, verify=False).state in ("done", "failed"):
                try:
                    if _token(path) == held.get("token"):
                        path.unlink()
                except (OSError, ValueError):
                    pass
        now = time.time()
        for path in self.runs.glob(".*"):
            if path.name.startswith(".write-test"):
                continue
            try:
                old = now - path.stat().st_mtime > max(60.0, self.stale_after)
            except OSError:
                continue
            if path.suffix in (".tmp", ".old", ".stale") and (old or path.suffix == ".old"):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def finished_runs(store: RunStore) -> tuple[list[RunSpec], list[tuple[str, str]]]:
    """The study's runs (as listed in study.json) that finished, and (folder, reason) of those that did not:
    failed, corrupt, or not run yet."""
    done, failed = [], []
    for name in store.read_study()["runs"]:
        state = store.state(name)
        if state.state == "done":
            done.append(RunSpec.from_dict(json.loads((store.folder(name) / "spec.json").read_text())))
        elif state.state == "pending":
            failed.append((name, "not run yet"))
        else:
            reason = state.reason.strip().splitlines()[-1] if state.reason.strip() else "unknown"
            failed.append((name, reason if state.state == "failed" else f"corrupt result: {reason}"))
    return done, failed
