"""Analysing a 400-run study (4 strategies x 5 budgets x 5 seeds x 4 folds, 24 test subjects, 100 images
per subject and run): reading every run folder, all statistics and both reports.
Run: ``pytest bench --benchmark-only -s``."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.grid import StudySettings, stream_seeds
from harness.store import RunSpec, RunStore
from harness.reports.render import render

STRATEGIES = ("all_frames", "ed_es", "slice_stratified", "subject_random")
NS = (1, 2, 4, 7, 10)
SEEDS, FOLDS, SUBJECTS, IMAGES = 5, 4, 24, 100


def _images(rng: np.random.Generator, subjects: list[str], quality: float) -> pd.DataFrame:
    rows = len(subjects) * IMAGES
    ref_lv = rng.integers(0, 900, rows)
    ref_my = rng.integers(0, 600, rows)
    frame = pd.DataFrame({"subject": np.repeat(subjects, IMAGES), "slice": np.tile(np.arange(IMAGES) // 20, len(subjects)),
                          "frame": np.tile(np.arange(IMAGES) % 20, len(subjects)), "phase": None})
    for name, ref in (("lv", ref_lv), ("my", ref_my)):
        inter = (ref * np.clip(rng.normal(quality, 0.05, rows), 0, 1)).astype(int)
        frame[f"{name}_inter"], frame[f"{name}_ref"] = inter, ref
        frame[f"{name}_pred"] = inter + rng.integers(0, 80, rows)
    return frame


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("bench") / "study"
    store = RunStore(root)
    store.prepare()
    subjects = [f"s{i:02d}" for i in range(SUBJECTS)]
    splits = [{"test": subjects[f::FOLDS], "validation": [], "pool": []} for f in range(FOLDS)]
    settings = StudySettings(strategies=STRATEGIES, ns=NS, seeds=SEEDS, folds=FOLDS)
    common = {"params": {}, "dataset": "bench", "init": "source", "init_fingerprint": "bench", "train": {}}
    selection = pd.DataFrame({"subject": ["x"], "slice": [0], "frame": [0], "phase": [None]})
    configs = [("base", 0, 0)] + [(s, n, seed) for s in STRATEGIES for n in NS for seed in range(SEEDS)]
    names = []
    for strategy, n, seed in configs:
        for fold in range(FOLDS):
            spec = RunSpec(strategy=strategy, n=n, seed=seed, fold=fold, streams=stream_seeds(seed, fold),
                           split=splits[fold], **common)
            quality = 0.75 + 0.1 * np.log1p(n) / np.log(11)
            store.save_run(spec, selection, _images(rng, splits[fold]["test"], quality), pd.DataFrame(), {})
            names.append(spec.folder_name)
    store.write_study({**settings.to_dict(), "split": splits[0], "splits": splits, "init_names": ["source"],
                       "dataset": "bench", "dataset_name": "bench", "runs": names})
    return root


def test_analyse_400_run_study(benchmark, study):
    runs = len(list((study / "runs").iterdir()))
    assert runs == 4 + len(STRATEGIES) * len(NS) * SEEDS * FOLDS == 404
    md, _ = benchmark.pedantic(render, args=(study,), rounds=1, iterations=1)
    seconds = benchmark.stats.stats.mean
    benchmark.extra_info["runs"] = runs
    print(f"\nanalysed {runs} runs ({runs * 6 * IMAGES} image rows) and wrote both reports in {seconds:.1f} s")
    assert "Non-inferiority to the reference" in md.read_text()
