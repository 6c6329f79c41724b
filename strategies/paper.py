"""The published study's subset family (Ankenbrand et al. 2021) as strategies, and replay of fixed subsets.

- ``paper_v``: all images of n subjects (the published v7/v3/v1).
- ``paper_r``: as many images as ``paper_v`` at that n, drawn at random from all images of all pool subjects
  (r7/r3/r1).
- ``paper_esed``: ED/ES frames (all slices) of n subjects (esed is this at n = all 14 pool subjects).
- ``paper_r_esed``: as many images as ``paper_esed`` at that n, drawn at random from all images of all pool
  subjects. The published r_esed is 448 random images of all frames: only 7% of them are ED/ES frames in
  ``image_subsets.tsv``, the share expected by chance, so the draw is from all images, not from ED/ES ones.
- ``subsets_file``: replays subsets from a table in the published format (one row per image, one boolean
  column per subset), so a published selection re-runs exactly.

``paper_esed``, ``paper_r_esed`` and ``subsets_file`` are oracles (``uses = {"labels"}``): ED/ES found from the
labels, and subsets chosen by someone who had the labels.

The r-strategies spread the images over the whole pool (``pool_wide``): n sets the annotation budget, not
which subjects are used. As published, they are nested (r1 within r3 within r7): one random order of the
pool's images, drawn from the harness's subject order for the run's seed, is cut at each budget.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from harness.api import Pool, StrategyError
from harness.strategies.builtin import AllFramesStrategy, EdEsStrategy


def _nested_draw(pool: Pool, candidates: pd.Index, count: int) -> pd.Index:
    """The first ``count`` of one random order of ``candidates``; the order depends on the run's subject
    order only (not on n), so smaller budgets are subsets of larger ones."""
    if count > len(candidates):
        raise StrategyError(f"{count} images asked for but the pool has only {len(candidates)}")
    key = hashlib.sha256(",".join(pool.subject_order).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(key[:8], "little"))
    order = rng.permutation(len(candidates))
    return candidates[np.sort(order[:count])]


@dataclass(frozen=True)
class PaperVStrategy(AllFramesStrategy):
    description: ClassVar[str] = "published v-subsets: all images of n subjects"


@dataclass(frozen=True)
class PaperEsedStrategy(EdEsStrategy):
    description: ClassVar[str] = "published esed: ED/ES frames (all slices) of n subjects"


@dataclass(frozen=True)
class PaperRStrategy:
    description: ClassVar[str] = "published r-subsets: as many images as paper_v at n, at random from the whole pool"
    uses: ClassVar[frozenset[str]] = frozenset()
    pool_wide: ClassVar[bool] = True

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        budget = len(pool.frames_of(n))
        return _nested_draw(pool, pool.frames.index, budget)


@dataclass(frozen=True)
class PaperREsedStrategy:
    description: ClassVar[str] = ("published r_esed: as many images as paper_esed at n, at random from all images "
                                  "of the whole pool")
    uses: ClassVar[frozenset[str]] = frozenset({"labels"})  # its budget counts the ED/ES frames found from labels
    pool_wide: ClassVar[bool] = True

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        budget = len(EdEsStrategy().select(pool, n, rng))
        return _nested_draw(pool, pool.frames.index, budget)


@dataclass(frozen=True)
class SubsetsFileStrategy:
    """Rows flagged TRUE in one column of a table with one row per image: subject (``Id`` or ``subject``),
    ``slice`` and ``frame`` (or a ``file``/``image`` name like ``17_slice003_frame012-image.png``).
    ``column`` may hold ``{n}``: ``v{n}`` replays v1, v3, v7 at n = 1, 3, 7."""

    description: ClassVar[str] = "replays fixed subsets from a table (published image_subsets.tsv format)"
    uses: ClassVar[frozenset[str]] = frozenset({"labels"})  # a table chosen by someone who saw the labels
    pool_wide: ClassVar[bool] = True
    path: str = ""
    column: str = "v{n}"
    table_sha256: str = field(default="", compare=False)  # content of the table: a changed file is a new run

    def __post_init__(self) -> None:
        if self.path:
            digest = hashlib.sha256(Path(self.path).read_bytes()).hexdigest()[:12] if Path(self.path).is_file() else ""
            object.__setattr__(self, "table_sha256", digest)

    def table(self) -> pd.DataFrame:
        if not self.path:
            raise StrategyError("subsets_file needs its table: --strategy-param subsets_file.path=FILE.tsv "
                                "(and subsets_file.column=v{n}, the subset column; {n} is the budget)")
        path = Path(self.path)
        if not path.is_file():
            raise StrategyError(f"subsets_file: table '{path}' does not exist")
        table = pd.read_csv(path, sep=None, engine="python", dtype=str)
        if "slice" not in table or "frame" not in table or not ({"Id", "subject"} & set(table)):
            names = table.get("file", table.get("image"))
            if names is None:
                raise StrategyError(f"subsets_file: '{path}' needs columns Id (or subject), slice and frame, or "
                                    f"file names like 17_slice003_frame012-image.png; it has {', '.join(table)}")
            parts = names.str.extract(r"^(?P<subject>.+)_slice(?P<slice>\d+)_frame(?P<frame>\d+)")
            table = pd.concat([table.drop(columns=[c for c in ("slice", "frame") if c in table]), parts], axis=1)
        subject = table["subject"] if "subject" in table else table["Id"]
        return pd.DataFrame({"subject": subject.astype(str), "slice": table["slice"].astype(int),
                             "frame": table["frame"].astype(int)}).join(table.drop(columns=["subject", "slice",
                                                                                           "frame"], errors="ignore"))

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        table = self.table()
        column = self.column.format(n=n)
        if column not in table:
            subsets = [c for c in table.columns if c not in ("subject", "slice", "frame", "Id", "file", "image")]
            raise StrategyError(f"subsets_file: no subset column '{column}' for n={n} in '{self.path}'; it has "
                                f"{', '.join(subsets)}")
        flags = table[column].astype(str).str.strip().str.upper().isin(["TRUE", "1", "YES", "T"])
        wanted = table.loc[flags, ["subject", "slice", "frame"]]
        frames = pool.frames.reset_index().merge(wanted, on=["subject", "slice", "frame"], how="inner")
        if len(frames) < len(wanted):
            missing = wanted.merge(pool.frames[["subject", "slice", "frame"]], how="left", indicator=True)
            missing = missing[missing["_merge"] == "left_only"]
            first = missing.iloc[0]
            raise StrategyError(f"subsets_file: {len(missing)} images of subset '{column}' are not in the training "
                                f"pool (first: subject {first['subject']}, slice {first['slice']}, frame "
                                f"{first['frame']}); the table and the data or split disagree")
        return pd.Index(frames["index"])
