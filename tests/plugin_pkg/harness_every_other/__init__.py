from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from harness.api import Pool


@dataclass(frozen=True)
class EveryOtherStrategy:
    description: ClassVar[str] = "every k-th frame (default every other), all slices, of the n subjects"
    step: int = 2

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        rows = pool.frames_of(n)
        return rows.index[rows["frame"] % self.step == 0]
