"""The sampling-strategy plug-in contract: everything a strategy author needs is in this file.

A strategy decides which labelled images of the training pool are used for fine-tuning. It is a pure
function of (pool, n, rng) -> selected rows: no I/O, no torch. Register it under the entry-point group
``harness.strategies`` in your package's ``pyproject.toml``::

    [project.entry-points."harness.strategies"]
    my_strategy = "my_package.module:MyStrategy"

The entry point names a class (usually a frozen dataclass whose fields are its parameters, all with
defaults) with a ``description`` and a ``select`` method; see ``SamplingStrategy``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from harness.errors import StrategyError

__all__ = ["FRAME_COLUMNS", "Pool", "SamplingStrategy", "StrategyError", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "harness.strategies"

#: Columns of the tidy frame index, one row per labelled 2D image.
#: subject (str), slice (int, 0 = most basal), frame (int), phase ("ED", "ES" or None),
#: slice_pos (float, 0 = base .. 1 = apex), lv_area (LV blood-pool pixels in the label),
#: spacing_mm (in-plane pixel spacing of the source image), n_slices and n_frames of the subject.
FRAME_COLUMNS = (
    "subject", "slice", "frame", "phase", "slice_pos", "lv_area", "spacing_mm", "n_slices", "n_frames",
)


@dataclass(frozen=True)
class Pool:
    """The labelled training images available to a run, and the order in which subjects are drawn.

    ``subject_order`` is drawn by the harness from the run's subset seed and is the same for every
    strategy at that seed, so strategies are compared on the same subjects (paired), and the first n
    subjects for n=2 are among the first n for n=5 (nested budgets).
    """

    frames: pd.DataFrame
    subject_order: tuple[str, ...]

    def subjects(self, n: int) -> tuple[str, ...]:
        """The n subjects a budget of n labelled subjects uses; StrategyError if the pool has fewer."""
        if n < 1:
            raise StrategyError(f"n must be at least 1 subject, got {n}")
        if n > len(self.subject_order):
            raise StrategyError(
                f"n={n} subjects requested but the training pool has only {len(self.subject_order)}; "
                f"use n <= {len(self.subject_order)} or add subjects"
            )
        return self.subject_order[:n]

    def frames_of(self, n: int) -> pd.DataFrame:
        """All pool rows of the first n subjects."""
        return self.frames[self.frames["subject"].isin(self.subjects(n))]


@runtime_checkable
class SamplingStrategy(Protocol):
    """A rule that picks the images to label from the first n subjects of a pool.

    ``select`` returns index labels of ``pool.frames``. It must be deterministic for a given rng state,
    return only rows of the pool, and use at most the n subjects that ``pool.subjects(n)`` returns, unless
    the class sets ``pool_wide = True``: then n is an annotation budget spread over the whole pool (the
    published r-subsets), and the run records every subject it used.
    """

    description: ClassVar[str]

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index: ...
