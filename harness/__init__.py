"""Data-efficiency benchmarks for transfer learning in cardiac cine MRI segmentation."""
from __future__ import annotations

__version__ = "0.8.0"
