from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# A study small enough to train in seconds on 2 CPU cores; the numbers mean nothing, the plumbing is real.
# in this process, so that tests' monkeypatches reach the runs (the executors have tests of their own)
TINY_RUN = ["--executor", "inprocess", "--size", "64", "--steps", "3", "--pretrain-steps", "4",
            "--target-subjects", "6", "--source-subjects", "3", "--test-subjects", "2", "--seeds", "2",
            "--folds", "1"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """No network, and never the user's ~/.cache: commands without --cache-dir use a temporary one."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CINE_HARNESS_CACHE", str(tmp_path_factory.getbasetemp() / "default-cache"))


@pytest.fixture
def cache(tmp_path_factory) -> Path:
    """A per-session cache so tests never read or write the user's ~/.cache."""
    return tmp_path_factory.getbasetemp() / "cache"


def shared(*parts: str) -> Path:
    """A path in ../shared/data, or a skip naming what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present: {path} (see ../shared/data/README.md)")
    return path
