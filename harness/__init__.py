"""Data-efficiency benchmarks for transfer learning in cardiac cine MRI segmentation.

In a notebook: ``harness.open_study("studies/default")`` (or ``harness.open_results(files)`` for per-image results
made elsewhere) gives the runs, the per-image and per-subject tables and the report's analysis as DataFrames
(`harness.results.Results`).
"""
from __future__ import annotations

__version__ = "0.9.0"

__all__ = ["open_results", "open_study"]


def __getattr__(name: str):  # the results API imports pandas and the statistics only when asked for
    if name in __all__:
        from harness import results

        return getattr(results, name)
    raise AttributeError(f"module 'harness' has no attribute '{name}'")
