"""report.html in a real headless Chromium (tests/browser.py): no console errors, no failed or outside
requests, every figure drawn with a size, the guideline box visible without scrolling, no wider than a
laptop window, and user-provided text (a strategy named `<script>alert(1)</script>`) shown as text. Each
test saves a screenshot under $HARNESS_ARTIFACTS (default: artifacts/ in the repository). CI installs
Chromium (.ci/browser-up); elsewhere the tests skip and say why."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness import registry
from harness.cli import main
from tests import browser
from tests.conftest import TINY_RUN, shared

pytestmark = [pytest.mark.slow, pytest.mark.skipif(browser.missing() is not None,
                                                   reason=f"no browser check: {browser.missing()}")]
HOSTILE = "<script>alert(1)</script>"
ARTIFACTS = Path(os.environ.get("HARNESS_ARTIFACTS", Path(__file__).parents[1] / "artifacts"))


def _checked(html: Path, name: str) -> dict:
    shot = ARTIFACTS / f"report-{name}.png"
    found = browser.check(html, shot)
    assert browser.problems(found) == [], browser.problems(found)
    assert shot.stat().st_size > 10_000  # a screenshot with something on it
    print(f"\nscreenshot: {shot}")
    return found


def test_phantom_study_report_in_a_browser_shows_a_hostile_strategy_name_as_text(tmp_path, monkeypatch):
    # a plug-in package that registers the built-in ED/ES strategy under a hostile name
    installed = registry.discover
    hostile = registry.StrategyEntry(HOSTILE, "hostile-plugin", "harness.strategies.builtin:EdEsStrategy")
    monkeypatch.setattr(registry, "discover", lambda: {**installed(), HOSTILE: hostile})
    out = tmp_path / "study"
    assert main(["run", "--strategy", f"ed_es,{HOSTILE}", "--n", "1,2", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), *TINY_RUN]) == 0
    found = _checked(out / "report.html", "phantom")
    assert HOSTILE in found["text"]  # escaped: shown, not run (no alert, no script element)
    # both read labels (the plug-in is ed_es under another name): both are named oracles
    assert f"{HOSTILE} (oracle) and ed_es (oracle) selected exactly the same training images" in found["text"]
    assert "Methods (ready to paste)" in found["text"] and "Runs" in found["text"]
    md = (out / "report.md").read_text()  # the markdown report shows it as text too
    assert "&lt;script>alert(1)&lt;/script> (oracle) and ed_es (oracle) selected exactly the same training images" in md
    assert "<script" not in re.sub(r"`[^`\n]*`", "", md)


def test_published_tables_report_in_a_browser(tmp_path):
    tables = shared("cmr-seg-tl", "confusion_tables")
    folder = tmp_path / "tables"
    folder.mkdir()
    for name in ("doubleTransferLearn", "doubleTL-esed", "base", "TR"):
        (folder / f"confusion_WS_{name}.tsv").symlink_to(tables / f"confusion_WS_{name}.tsv")
    out = tmp_path / "published"
    assert main(["analyze", str(folder), "--reference", "doubleTransferLearn", "--base", "baseModel",
                 "--out", str(out)]) == 0
    found = _checked(out / "report.html", "published")
    assert "No guideline from this study" in found["text"]


def test_real_data_study_report_in_a_browser(tmp_path):
    acdc = shared("acdc", "training")
    data = tmp_path / "acdc8"
    data.mkdir()
    for number in range(1, 9):
        (data / f"patient{number:03d}").symlink_to(acdc / f"patient{number:03d}")
    out = tmp_path / "real"
    assert main(["run", "--data", str(data), "--strategy", "ed_es,all_frames", "--n", "1,2", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), *TINY_RUN, "--test-subjects", "3"]) == 0
    found = _checked(out / "report.html", "real-data")
    # on ACDC only ED and ES are labelled: the two strategies are one, and the report says so
    assert "all_frames and ed_es (oracle) selected exactly the same training images" in found["text"]
