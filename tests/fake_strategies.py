"""Strategies that break on purpose, for tests of how the grid handles failures."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from harness.api import StrategyError


@dataclass(frozen=True)
class FailsAtTwoStrategy:
    description: ClassVar[str] = "works for n=1, refuses n=2"

    def select(self, pool, n, rng):
        if n == 2:
            raise StrategyError("this strategy refuses n=2")
        return pool.frames_of(n).index[:4]


@dataclass(frozen=True)
class ReversedEdEsStrategy:
    """The images ed_es selects, returned in reverse order: the same training set in another row order."""

    description: ClassVar[str] = "ed_es's images in reverse order"

    def select(self, pool, n, rng):
        frames = pool.frames_of(n)
        return frames.index[frames["phase"].isin(["ED", "ES"])][::-1]
