"""The built-in sampling strategies: which labelled images of n subjects go into fine-tuning.

``subject_random`` and ``slice_stratified`` label, by default, as many images per subject as ``ed_es``
does (2 x the subject's slices), so the three compare at equal annotation cost.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from harness.api import Pool, StrategyError


@dataclass(frozen=True)
class AllFramesStrategy:
    description: ClassVar[str] = "every labelled image (all slices, all frames) of the n subjects"

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        return pool.frames_of(n).index


@dataclass(frozen=True)
class EdEsStrategy:
    description: ClassVar[str] = "end-diastolic and end-systolic frames (all slices) of the n subjects"

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        rows = pool.frames_of(n)
        chosen = rows[rows["phase"].isin(["ED", "ES"])]
        missing = sorted(set(rows["subject"]) - set(chosen["subject"]))
        if missing:
            raise StrategyError(f"ed_es: subjects {missing} have no ED/ES frame in the pool")
        return chosen.index


def _budgeted_subjects(pool: Pool, n: int, per_subject: int | None) -> Iterator[tuple[pd.DataFrame, int]]:
    """Each of the n subjects' pool rows with its labelling budget: the ED/ES cost (2 x slices)
    unless ``per_subject`` is set, capped at the images the subject has."""
    if per_subject is not None and per_subject < 1:
        raise StrategyError(f"per_subject must be at least 1, got {per_subject}")
    for subject in pool.subjects(n):
        rows = pool.frames[pool.frames["subject"] == subject]
        budget = per_subject if per_subject is not None else 2 * int(rows["slice"].nunique())
        yield rows, min(budget, len(rows))


@dataclass(frozen=True)
class SubjectRandomStrategy:
    description: ClassVar[str] = "per subject, a budget of images drawn at random from all its slices and frames"
    per_subject: int | None = None

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        chosen: list[pd.Index] = []
        for rows, k in _budgeted_subjects(pool, n, self.per_subject):
            chosen.append(rows.index[np.sort(rng.choice(len(rows), size=k, replace=False))])
        return chosen[0].append(chosen[1:])


@dataclass(frozen=True)
class SliceStratifiedStrategy:
    description: ClassVar[str] = (
        "per subject, the same budget split equally over basal, mid and apical thirds; frames at random"
    )
    per_subject: int | None = None

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        chosen: list[pd.Index] = []
        for rows, budget in _budgeted_subjects(pool, n, self.per_subject):
            third = np.minimum((rows["slice_pos"].to_numpy() * 3).astype(int), 2)
            groups = [rows.index[third == t] for t in range(3)]
            for group, k in zip(groups, _equal_shares(budget, [len(g) for g in groups], rng)):
                chosen.append(group[np.sort(rng.choice(len(group), size=k, replace=False))])
        return chosen[0].append(chosen[1:])


def _equal_shares(budget: int, capacity: list[int], rng: np.random.Generator) -> list[int]:
    """Split a budget as evenly as the groups' sizes allow; leftover units go to random groups."""
    shares = [0] * len(capacity)
    remaining = budget
    while remaining > 0:
        open_groups = [g for g in range(len(capacity)) if shares[g] < capacity[g]]
        each, extra = divmod(remaining, len(open_groups))
        lucky = set(rng.choice(open_groups, size=extra, replace=False).tolist()) if extra else set()
        for g in open_groups:
            shares[g] += min(each + (g in lucky), capacity[g] - shares[g])
        remaining = budget - sum(shares)
    return shares
