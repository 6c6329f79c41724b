"""The results API for notebooks (issue 22.2): what `harness.open_results` and `harness.open_study` give is what
the report is made from."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import harness
from harness.cli import main


def _results_file(tmp_path):
    rng = np.random.default_rng(4)
    rows = []
    for subject in range(8):
        for image in range(6):
            level = rng.normal(0.8, 0.05)
            for method, shift in (("a", 0.0), ("b", 0.03), ("base", -0.2)):
                rows.append({"image": f"{subject}_slice{image:03d}_frame000", "method": method,
                             "dice_lv": min(level + shift + rng.normal(0, 0.02), 1.0),
                             "dice_my": min(level - 0.1 + shift + rng.normal(0, 0.02), 1.0)})
    path = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_open_results_gives_the_tables_harness_analyze_writes(tmp_path):
    path = _results_file(tmp_path)
    results = harness.open_results(path, base="base")
    assert len(results.images) == 8 * 6 * 3 and results.runs.empty
    assert set(results.subjects["strategy"]) == {"a", "b", "base"} and len(results.subjects) == 8 * 3
    subject_means = results.images.groupby(["strategy", "subject"])["dice_lv"].mean()
    assert results.subjects.set_index(["strategy", "subject"])["dice_lv"].loc[subject_means.index].to_numpy() == \
        pytest.approx(subject_means.to_numpy())
    analysis = results.analysis()
    assert analysis is results.analysis() and analysis is not results.analysis(margin=0.05)  # once per options
    tables = analysis.tables()
    assert {"summary", "strategies", "versus_base", "noninferiority", "subjects", "images"} <= set(tables)
    assert main(["analyze", str(path), "--base", "base", "--out", str(tmp_path / "out")]) == 0
    for name in ("summary", "strategies", "versus_base"):  # the same numbers as the report's CSV tables
        written = pd.read_csv(tmp_path / "out" / "tables" / f"{name}.csv")
        numeric = [c for c in written if pd.api.types.is_float_dtype(written[c])]
        ours = tables[name][numeric].apply(pd.to_numeric, errors="coerce")  # '' (no value) is NaN in the CSV
        assert numeric and np.allclose(ours.to_numpy(float), written[numeric].to_numpy(float), rtol=1e-8,
                                       equal_nan=True), name
    b_minus_a = tables["strategies"].query("metric == 'dice_lv'")
    assert len(b_minus_a) == 1 and b_minus_a["difference"].iloc[0] == pytest.approx(-0.03, abs=0.015)  # a − b


def test_open_results_and_open_study_errors_are_the_cli_s(tmp_path):
    from harness.errors import StoreError, UsageError

    with pytest.raises(UsageError, match="does not exist"):
        harness.open_results(tmp_path / "missing.csv")
    with pytest.raises((StoreError, UsageError), match="study.json|no study"):
        harness.open_study(tmp_path)
    with pytest.raises(AttributeError, match="no attribute 'open_everything'"):
        harness.open_everything  # noqa: B018
