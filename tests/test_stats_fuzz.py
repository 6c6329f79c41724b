"""Property test: random small studies, degenerate ones included, through every statistic and the report.

Whatever the table (1-3 folds, 1-3 seeds, 2-30 subjects, 1-5 budgets, zero variance, identical
configurations, NaN metrics, a strategy that never scored), the report must never print an absurd number:
no infinite or huge interval, no 'nan' in prose, every non-inferiority row a verdict or a reason, and a
guideline section that says something.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.reports.guideline import guideline
from harness.analysis import Options, analyse_images
from harness.reports.tables import tables

MODES = ("noisy", "zero_variance", "identical_configs", "nan_metric", "nan_strategy", "constant_subjects", "outlier")


@st.composite
def studies(draw) -> pd.DataFrame:
    folds = draw(st.integers(1, 3))
    subjects = draw(st.integers(max(2, folds), 30))
    seeds = draw(st.integers(1, 3))
    budgets = sorted(draw(st.sets(st.sampled_from([1, 2, 3, 5, 7, 10, 14]), min_size=1, max_size=5)))
    strategies = draw(st.sets(st.sampled_from(["ed_es", "all_frames", "subject_random"]), min_size=1, max_size=3))
    mode = draw(st.sampled_from(MODES))
    with_base = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    level = 0.85 + rng.normal(0, 0.05, subjects)
    fold = np.arange(subjects) * folds // subjects
    rows = []
    configs = [(s, n) for s in sorted(strategies) for n in budgets] + ([("base", 0)] if with_base else [])
    for k, (strategy, n) in enumerate(configs):
        for seed in range(1 if strategy == "base" else seeds):
            if mode == "zero_variance":
                value = np.full(subjects, 0.8)
            elif mode == "identical_configs":
                value = level.copy()
            elif mode == "constant_subjects":
                value = np.full(subjects, 0.8 + 0.01 * k + 0.001 * seed)
            else:
                value = level - 0.3 / (n + 1) + rng.normal(0, 0.02, subjects) + rng.normal(0, 0.01)
            if mode == "outlier":
                value[0] += rng.choice([-0.3, 0.3])
            my = value - 0.1
            if mode == "nan_metric" and k % 2 == 0:
                my = np.full(subjects, np.nan)
            if mode == "nan_strategy" and strategy == sorted(strategies)[0]:
                value = np.full(subjects, np.nan)
            rows.append(pd.DataFrame({"strategy": strategy, "n": n, "seed": seed, "fold": fold,
                                      "subject": [f"s{i:02d}" for i in range(subjects)],
                                      "image": [f"s{i:02d}_0" for i in range(subjects)],
                                      "dice_lv": np.clip(value, 0, 1), "dice_my": np.clip(my, 0, 1),
                                      "labelled_images": np.nan if n == 0 else 10.0 * n}))
    return pd.concat(rows, ignore_index=True)


DIFFERENCE_TABLES = ("noninferiority", "versus_base", "budgets", "strategies")


@settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(studies())
def test_no_study_makes_the_report_print_an_absurd_answer(images):
    analysis = analyse_images(images, {"kind": "table"}, Options())
    for name in DIFFERENCE_TABLES:
        table = getattr(analysis, name)
        if len(table):
            bounds = table[["ci_low", "ci_high"]].to_numpy(float)
            finite = bounds[np.isfinite(bounds)]
            assert (np.abs(finite) <= 2).all(), (name, finite)
            assert not np.isinf(bounds).any(), name
    ni = analysis.noninferiority
    if len(ni):
        # every row a verdict or a stated reason
        assert (ni["tested"] | (ni["reason"] != "")).all()
        tested = ni[ni["tested"]]
        assert ((tested["ci_low"] > -tested["margin"]) == tested["non_inferior"]).all()
    for name in ("versus_base", "budgets", "strategies"):
        table = getattr(analysis, name)
        if len(table):
            assert ((table["p"] == table["p"]) | (table["reason"] != "")).all(), name
    sentences = guideline(analysis)
    assert sentences and all(s.strip() for s in sentences)
    prose = " ".join(sentences)
    table_text = " ".join(" ".join(row) for t in tables(analysis) for row in t.rows)
    for text in (prose, table_text):
        lowered = text.lower().replace("n/a", "")
        at = lowered.find("nan")
        assert at < 0, text[max(0, at - 300):at + 100]
        assert re.search(r"(?<![a-z])inf(?!erior)", lowered) is None, text
        for match in re.finditer(r"-?\d+\.\d+", text):
            assert abs(float(match.group())) < 1e4, text[max(0, match.start() - 300):match.end() + 50]
    assert "nan%" not in prose
