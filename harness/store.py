"""Study folders: one sub-folder per run, written atomically, so a study survives a crash and resumes.

    <study>/study.json                         the study's settings (what `run` was asked for)
    <study>/runs/<strategy>__<init>__n<N>__s<seed>__f<fold>__<id>/
        spec.json       everything needed to re-run this run
        selection.csv   the training images it used
        images.csv      per-image pixel counts and Dice on the test subjects
        subjects.csv    per test subject: mean image Dice and 3D Dice over all its images
        status.json     done or failed (with the reason), timings, training summary

A run folder is first written under a temporary name and renamed when complete; ``status.json`` with
state "done" marks a finished run, which a later identical command skips.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness import __version__
from harness.errors import StoreError


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
    version: str = field(default=__version__)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def run_id(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]

    @property
    def folder_name(self) -> str:
        return f"{self.strategy}__{self.init}__n{self.n}__s{self.seed}__f{self.fold}__{self.run_id}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**data)


def method_label(strategy: str, init: str, study_inits: list[str], base: str = "base") -> str:
    """How a run is named in the statistics: the strategy alone when the study has one init, else
    'strategy+init'. The first init with a base model gives the plain 'base'; others 'base+init'."""
    if strategy == base:
        with_base = [i for i in study_inits if i == "source" or i.startswith("ckpt-")]
        return base if not with_base or init == with_base[0] else f"{base}+{init}"
    return strategy if len(study_inits) <= 1 else f"{strategy}+{init}"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a temporary file in the same folder, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


class RunStore:
    """Reads and writes the runs of one study folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.runs = self.root / "runs"

    def prepare(self) -> None:
        """Create the study folder, or fail with one clear line when it cannot be written."""
        try:
            self.runs.mkdir(parents=True, exist_ok=True)
            probe = self.runs / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise StoreError(
                f"cannot write study folder '{self.root}': {exc.strerror or exc}; choose another --out"
            ) from None

    def write_study(self, settings: dict[str, Any]) -> None:
        write_json(self.root / "study.json", settings)

    def read_study(self) -> dict[str, Any]:
        path = self.root / "study.json"
        if not path.exists():
            raise StoreError(f"'{self.root}' is not a study folder (no study.json); run `harness run --out` first")
        return json.loads(path.read_text())

    def folder(self, spec: RunSpec) -> Path:
        return self.runs / spec.folder_name

    def is_done(self, spec: RunSpec) -> bool:
        status = self.folder(spec) / "status.json"
        return status.exists() and json.loads(status.read_text()).get("state") == "done"

    def save_run(self, spec: RunSpec, selection: pd.DataFrame, images: pd.DataFrame, subjects: pd.DataFrame,
                 status: dict[str, Any]) -> None:
        """Write a finished run: all files into a temporary folder, then one rename."""
        final = self.folder(spec)
        tmp = Path(tempfile.mkdtemp(dir=self.runs, prefix=f".{spec.folder_name}."))
        write_json(tmp / "spec.json", spec.to_dict())
        selection.to_csv(tmp / "selection.csv", index=False)
        images.to_csv(tmp / "images.csv", index=False)
        subjects.to_csv(tmp / "subjects.csv", index=False)
        write_json(tmp / "status.json", {"state": "done", **status})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)

    def save_failure(self, spec: RunSpec, reason: str) -> None:
        final = self.folder(spec)
        final.mkdir(parents=True, exist_ok=True)
        write_json(final / "spec.json", spec.to_dict())
        write_json(final / "status.json", {"state": "failed", "reason": reason})

    def status(self, spec: RunSpec) -> dict[str, Any]:
        return json.loads((self.folder(spec) / "status.json").read_text())

    def images(self, spec: RunSpec, label: str | None = None) -> pd.DataFrame:
        """Per-image metrics of a finished run, with the run's identity columns added. ``label`` names the
        method in the statistics (default: the strategy; see ``harness.inits.method_label``)."""
        frame = pd.read_csv(self.folder(spec) / "images.csv", dtype={"subject": str})
        labelled = len(pd.read_csv(self.folder(spec) / "selection.csv"))
        return frame.assign(strategy=label or spec.strategy, n=spec.n, seed=spec.seed, fold=spec.fold,
                            init=spec.init, run_id=spec.run_id, labelled_images=labelled)


def finished_runs(store: RunStore) -> tuple[list[RunSpec], list[tuple[str, str]]]:
    """The study's runs (as listed in study.json) that finished, and (folder, reason) of those that failed."""
    done, failed = [], []
    for name in store.read_study()["runs"]:
        folder = store.runs / name
        if not (folder / "status.json").exists():
            failed.append((name, "not run yet"))
            continue
        status = json.loads((folder / "status.json").read_text())
        if status.get("state") == "done":
            done.append(RunSpec.from_dict(json.loads((folder / "spec.json").read_text())))
        else:
            failed.append((name, status.get("reason", "unknown").strip().splitlines()[-1]))
    return done, failed
