"""The built-in sampling strategies: which labelled images of n subjects go into fine-tuning.

``subject_random`` and ``slice_stratified`` label, by default, as many images per subject as ``ed_es``
does (2 x the subject's slices), so the three compare at equal annotation cost.

Each also ranks the whole pool (``rank``): subjects in the run's subject order, each with the images it would
label; a budget of expert minutes takes the longest affordable start of that ranking (nested across budgets).
``ed_es`` reads ED/ES found from the labels: an oracle (``uses = {"labels"}``); the others read nothing of the
labels.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from harness.api import Pool, StrategyError


def per_subject(pool: Pool, n: int | None, choose: Callable[[pd.DataFrame], pd.Index]) -> pd.Index:
    """``choose(rows)`` for each of the first n subjects (n None: every subject, in the subject order), joined
    in that order. ``choose`` is called subject by subject in the same order whatever n is, so with the same
    rng the first n subjects' images are the same for every n (nested budgets)."""
    subjects = pool.subject_order if n is None else pool.subjects(n)
    chosen = [choose(pool.frames[pool.frames["subject"] == subject]) for subject in subjects]
    return chosen[0].append(chosen[1:]) if chosen else pd.Index([])


@dataclass(frozen=True)
class AllFramesStrategy:
    description: ClassVar[str] = "every labelled image (all slices, all frames) of the n subjects"
    uses: ClassVar[frozenset[str]] = frozenset()

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        return pool.frames_of(n).index

    def rank(self, pool: Pool, rng: np.random.Generator) -> pd.Index:
        return per_subject(pool, None, lambda rows: rows.index)


def phase_frames(rows: pd.DataFrame, column: str, name: str) -> pd.Index:
    """The rows of one subject whose ``column`` (phase or pred_phase) is ED or ES, ED first."""
    chosen = rows[rows[column].isin(["ED", "ES"])]
    if chosen.empty:
        raise StrategyError(f"{name}: subject '{rows['subject'].iloc[0]}' has no ED/ES frame in the pool")
    return chosen.sort_values([column, "slice"], key=lambda c: c.map({"ED": 0, "ES": 1}) if c.name == column
                              else c).index


@dataclass(frozen=True)
class EdEsStrategy:
    description: ClassVar[str] = ("oracle: end-diastolic and end-systolic frames (all slices) of the n subjects, "
                                  "ED/ES found from the labels")
    uses: ClassVar[frozenset[str]] = frozenset({"labels"})

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        return per_subject(pool, n, lambda rows: phase_frames(rows, "phase", "ed_es")).sort_values()

    def rank(self, pool: Pool, rng: np.random.Generator) -> pd.Index:
        return per_subject(pool, None, lambda rows: phase_frames(rows, "phase", "ed_es"))


def _budgeted_subjects(pool: Pool, n: int, per_subject: int | None) -> Iterator[tuple[pd.DataFrame, int]]:
    """Each of the n subjects' pool rows with its labelling budget: the ED/ES cost (2 x slices)
    unless ``per_subject`` is set, capped at the images the subject has."""
    for subject in pool.subjects(n):
        rows = pool.frames[pool.frames["subject"] == subject]
        yield rows, subject_budget(rows, per_subject)


def subject_budget(rows: pd.DataFrame, per_subject: int | None) -> int:
    """One subject's labelling budget in images: ``per_subject``, or the ED/ES cost (2 x its slices), capped
    at the images it has."""
    if per_subject is not None and per_subject < 1:
        raise StrategyError(f"per_subject must be at least 1, got {per_subject}")
    budget = per_subject if per_subject is not None else 2 * int(rows["slice"].nunique())
    return min(budget, len(rows))


@dataclass(frozen=True)
class SubjectRandomStrategy:
    description: ClassVar[str] = "per subject, a budget of images drawn at random from all its slices and frames"
    uses: ClassVar[frozenset[str]] = frozenset()
    per_subject: int | None = None

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        chosen: list[pd.Index] = []
        for rows, k in _budgeted_subjects(pool, n, self.per_subject):
            chosen.append(rows.index[np.sort(rng.choice(len(rows), size=k, replace=False))])
        return chosen[0].append(chosen[1:])

    def rank(self, pool: Pool, rng: np.random.Generator) -> pd.Index:
        """Subjects in order, each with its budget of images in random order (a budget that ends inside a
        subject gets a random part of it, not its basal slices)."""
        return per_subject(pool, None, lambda rows: rows.index[rng.choice(len(rows), size=subject_budget(
            rows, self.per_subject), replace=False)])


@dataclass(frozen=True)
class SliceStratifiedStrategy:
    description: ClassVar[str] = (
        "per subject, the same budget split equally over basal, mid and apical thirds; frames at random"
    )
    uses: ClassVar[frozenset[str]] = frozenset()
    per_subject: int | None = None

    def rank(self, pool: Pool, rng: np.random.Generator) -> pd.Index:
        """Subjects in order, each with its stratified images interleaved over the thirds (basal, mid, apical,
        basal, ...), so a budget that ends inside a subject is still spread over the stack."""
        def interleaved(rows: pd.DataFrame) -> pd.Index:
            chosen = pool.frames.loc[self.select(Pool(rows, (rows["subject"].iloc[0],)), 1, rng)]
            third = np.minimum((chosen["slice_pos"].to_numpy() * 3).astype(int), 2)
            turn = np.zeros(len(chosen), int)
            for t in range(3):
                turn[third == t] = rng.permutation((third == t).sum())  # random order within a third
            return chosen.index[np.lexsort((third, turn))]
        return per_subject(pool, None, interleaved)


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
