"""Preparing a real dataset once and reading it back from the cache: ACDC (100 subjects).
Run: ``pytest bench --benchmark-only -s``; the speed-up is printed and stored in extra_info."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.data.sources import load_dataset

ACDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "acdc"
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def acdc() -> Path:
    if not ACDC.exists():
        pytest.skip(f"real data not present: {ACDC}")
    return ACDC


def test_first_load_reads_and_prepares(benchmark, acdc, tmp_path):
    def fresh():
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)
        return load_dataset(acdc, cache_dir=tmp_path / "cache")

    data = benchmark.pedantic(fresh, rounds=2, iterations=1)
    TIMES["first"] = benchmark.stats.stats.mean
    benchmark.extra_info["images"] = len(data.index)


def test_second_load_from_cache(benchmark, acdc, tmp_path):
    load_dataset(acdc, cache_dir=tmp_path / "cache")
    benchmark.pedantic(lambda: load_dataset(acdc, cache_dir=tmp_path / "cache"), rounds=5, iterations=1)
    TIMES["cached"] = benchmark.stats.stats.mean
    if "first" in TIMES:
        speedup = TIMES["first"] / TIMES["cached"]
        benchmark.extra_info["speedup"] = round(speedup, 1)
        print(f"\nACDC: first load {TIMES['first']:.2f} s, cached {TIMES['cached']:.3f} s, {speedup:.0f}x faster")
