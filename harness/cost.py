"""Annotation cost models as plain data: what labelling an image costs an expert.

- ``images``: every image costs 1 (budgets are counted in images, as before 0.8).
- ``contours``: expert seconds per image by slice position (basal, mid, apical thirds of the stack) and what
  is drawn (LV endocardium and epicardium by default; RV endocardium where a study labels it). The defaults
  make a full ED + ES short-axis study of 10 slices with LV endo- and epicardium cost 13.8 minutes, within
  the 13-14 minutes reported for manual LV contouring of a short-axis study (the figure this project's
  issue 20 cites); basal slices (outflow tract, valve plane) and apical slices (partial volume) cost more
  than mid-ventricular ones. Measure your own lab's times and give them as a table.
- a table of yours (``.toml`` or ``.json``)::

      source = "our lab, 2026: 3 readers timed on 40 studies"
      draw = ["lv_endo", "lv_epi"]
      [seconds.lv_endo]
      basal = 30
      mid = 20
      apical = 25
      [seconds.lv_epi]
      basal = 20
      mid = 14
      apical = 18

Torch-free; the grid, the worker and the report use it.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import UsageError

REGIONS = ("basal", "mid", "apical")
CONTOURS_SOURCE = ("built-in defaults: seconds per contour by slice region, set so that a 10-slice ED + ES study "
                   "with LV endo- and epicardium costs 13.8 min (published manual LV contouring: about 13-14 min "
                   "per short-axis study); basal and apical slices cost more than mid slices")
CONTOURS_SECONDS = {
    "lv_endo": {"basal": 28.0, "mid": 19.0, "apical": 24.0},
    "lv_epi": {"basal": 20.0, "mid": 15.0, "apical": 18.0},
    "rv_endo": {"basal": 30.0, "mid": 18.0, "apical": 20.0},
}


@dataclass(frozen=True)
class CostModel:
    """Seconds per image by region and structure; ``unit`` "images" counts images instead."""

    name: str
    unit: str = "images"  # "images" or "minutes"
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)  # structure -> region -> seconds
    draw: tuple[str, ...] = ()
    source: str = ""

    def image_cost(self, frames: pd.DataFrame) -> np.ndarray:
        """Per row of ``frames`` (needs slice_pos): 1 for images, else expert minutes."""
        if self.unit == "images":
            return np.ones(len(frames))
        region = np.minimum((frames["slice_pos"].to_numpy(dtype=float) * 3).astype(int), 2)
        per_region = np.array([sum(self.seconds[s][r] for s in self.draw) for r in REGIONS]) / 60.0
        return per_region[region]

    def total(self, frames: pd.DataFrame) -> float:
        return float(self.image_cost(frames).sum())

    def per_region_seconds(self) -> dict[str, float]:
        return {r: sum(self.seconds[s][r] for s in self.draw) for r in REGIONS} if self.unit == "minutes" else {}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "seconds": self.seconds, "draw": list(self.draw),
                "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostModel:
        return cls(data["name"], data["unit"], data.get("seconds", {}), tuple(data.get("draw", ())),
                   data.get("source", ""))


IMAGES = CostModel("images", "images", source="one unit per labelled image")
CONTOURS = CostModel("contours", "minutes", CONTOURS_SECONDS, ("lv_endo", "lv_epi"), CONTOURS_SOURCE)


def parse_cost_model(text: str) -> CostModel:
    """``images``, ``contours`` (LV endo + epi), ``contours:lv_endo,lv_epi,rv_endo`` (what is drawn), or a
    .toml/.json table; every problem is one UsageError naming the file and the fix."""
    if text == "images":
        return IMAGES
    if text == "contours" or text.startswith("contours:"):
        draw = tuple(p.strip() for p in text.partition(":")[2].split(",") if p.strip()) or CONTOURS.draw
        if len(set(draw)) != len(draw):
            raise UsageError(f"--cost-model {text}: each structure once (it is drawn once per image)")
        unknown = [d for d in draw if d not in CONTOURS_SECONDS]
        if unknown:
            raise UsageError(f"--cost-model {text}: unknown structure {', '.join(unknown)}; contours can draw "
                             f"{', '.join(CONTOURS_SECONDS)}")
        return CostModel("contours", "minutes", CONTOURS_SECONDS, draw, CONTOURS_SOURCE)
    path = Path(text)
    if path.suffix.lower() not in (".toml", ".json"):
        raise UsageError(f"--cost-model '{text}': use images, contours, contours:lv_endo,lv_epi,rv_endo, or a .toml "
                         "or .json table (see `harness run --help`)")
    if not path.is_file():
        raise UsageError(f"--cost-model {path}: no such file" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--cost-model {path}: not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise UsageError(f"--cost-model {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--cost-model {path}: not valid {path.suffix[1:].upper()} ({exc})") from None
    seconds = data.get("seconds") if isinstance(data, dict) else None
    if not isinstance(seconds, dict) or not seconds:
        raise UsageError(f"--cost-model {path}: needs a [seconds.STRUCTURE] table with basal, mid and apical "
                         "seconds per image (see harness/cost.py)")
    clean: dict[str, dict[str, float]] = {}
    for structure, regions in seconds.items():
        if not isinstance(regions, dict) or set(regions) != set(REGIONS):
            raise UsageError(f"--cost-model {path}: seconds.{structure} must give exactly basal, mid and apical")
        if any(isinstance(regions[r], bool) or not isinstance(regions[r], (int, float)) for r in REGIONS):
            raise UsageError(f"--cost-model {path}: seconds.{structure} must be numbers of seconds, got "
                             f"{', '.join(repr(regions[r]) for r in REGIONS)}")
        clean[structure] = {r: float(regions[r]) for r in REGIONS}
        if any(not np.isfinite(v) or v <= 0 for v in clean[structure].values()):
            raise UsageError(f"--cost-model {path}: seconds.{structure} must be positive")
    draw = data.get("draw", list(clean))
    if (isinstance(draw, str) or not isinstance(draw, list) or not draw or any(d not in clean for d in draw)
            or len(set(draw)) != len(draw)):
        raise UsageError(f"--cost-model {path}: draw must list structures of its seconds table "
                         f"({', '.join(clean)}), each once, got {draw!r}")
    return CostModel(path.stem, "minutes", clean, tuple(draw), str(data.get("source", f"table {path.name}")))


def affordable(ranking: pd.Index, frames: pd.DataFrame, model: CostModel, budget: float) -> pd.Index:
    """The longest start of ``ranking`` (rows of ``frames``, most wanted first) whose cost is within
    ``budget``: a smaller budget's images are always among a larger one's (nested)."""
    cost = np.cumsum(model.image_cost(frames.loc[ranking]))
    return ranking[: int(np.searchsorted(cost, budget + 1e-9, side="right"))]
