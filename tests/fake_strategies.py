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
