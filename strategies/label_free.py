"""Strategies a lab can run before anything is contoured: they read the images' geometry and timing and the
selection model's view of them (``uses = {"predictions"}`` / ``{"embeddings"}``), never the labels.

Each labels, per subject, as many images as ``ed_es`` does (2 x the subject's slices; ``per_subject`` sets
another number), so they compare with it and with ``subject_random`` at equal cost in images; under
``--budget-minutes`` the harness cuts each strategy's ranking of the pool (subjects in the run's subject
order, each with its chosen images in order of preference) at the same expert time.

- ``ed_es_predicted``: ED and ES predicted from the selection model's LV volume curve, all slices.
- ``ed_es_timing``: ED and ES from the cine's trigger times alone (ED nearest the R wave, ES a QT interval
  after it): what a lab can pick with no model at all.
- ``foreground_random``: random images among those where the selection model predicts LV (nnActive's strong
  baseline, adapted to cine).
- ``uncertain``: the images of highest predictive entropy (or flip disagreement), at most ``per_slice`` per
  slice and frames of one slice at least ``min_gap`` of the cycle apart, so that it does not take ten
  neighbouring frames.
- ``foreground_random`` and ``uncertain`` with ``scope=pool``: the same rule over the whole pool (like the
  published r-subsets): at n, as many images as ``ed_es`` labels on n subjects, spread over every pool subject;
  one ranking of the pool per run's subject order, so smaller budgets are nested in larger ones.
- ``typical``: the subject's images clustered on the selection model's embeddings (k-means, k = the budget),
  the most typical image of each cluster (TypiClust's rule: the smallest mean distance to its nearest
  neighbours in the cluster), larger clusters first.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from harness.api import Pool, StrategyError
from harness.strategies.builtin import per_subject, phase_frames, subject_budget


@dataclass(frozen=True)
class EdEsPredictedStrategy:
    description: ClassVar[str] = ("ED and ES frames (all slices) of the n subjects, predicted from the selection "
                                  "model's LV volume curve (no labels)")
    uses: ClassVar[frozenset[str]] = frozenset({"predictions"})

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        return self.rank_of(pool, n).sort_values()

    def rank(self, pool: Pool, rng: np.random.Generator) -> pd.Index:
        return self.rank_of(pool, None)

    def rank_of(self, pool: Pool, n: int | None) -> pd.Index:
        return per_subject(pool, n, lambda rows: phase_frames(rows, "pred_phase", "ed_es_predicted"))


def cycle_position(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """One subject's rows -> (each image's position in its cardiac cycle, 0 = the R wave .. 1 = the next; each
    image's cycle in ms). From trigger_ms and rr_ms where the data carry them (each slice is its own
    breath-hold, with its own cycle); a cycle not given is the subject's frame spacing times its frames; without
    trigger times, frames spread evenly over the cycle and a cycle not given is 1000 ms (60 /min).
    StrategyError for a stack size that cannot hold its frames."""
    frame = rows["frame"].to_numpy(dtype=float)
    n_frames = pd.to_numeric(rows["n_frames"], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(n_frames).all() or (n_frames < 1).any() or (frame >= n_frames).any() or (frame < 0).any():
        raise StrategyError(f"subject '{rows['subject'].iloc[0]}': frames {int(frame.min())}-{int(frame.max())} do "
                            f"not fit a cine of n_frames = {rows['n_frames'].iloc[0]}")
    def numbers(column: str, low: float, high: float) -> np.ndarray:
        values = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float) if column in rows \
            else np.full(len(rows), np.nan)
        return np.where((values >= low) & (values <= high), values, np.nan)
    times, cycles = numbers("trigger_ms", 0.0, 5000.0), numbers("rr_ms", 200.0, 3000.0)
    known = np.isfinite(times)
    if np.isnan(cycles).any() and known.sum() > 1:  # the subject's frame spacing (ms per frame) x its frames
        slices = rows["slice"].to_numpy() if "slice" in rows else np.zeros(len(rows))
        steps = []
        for where in (known & (slices == s) for s in np.unique(slices[known])):  # within a slice: its own timing
            order = np.argsort(frame[where], kind="stable")
            f, t = frame[where][order], times[where][order]
            apart = np.diff(f)
            step = np.diff(t)[apart > 0] / apart[apart > 0]
            steps.extend(step[np.isfinite(step) & (step > 0)])
        if steps:
            cycles = np.where(np.isnan(cycles), np.median(steps) * n_frames, cycles)
    cycles = np.where(np.isnan(cycles), 1000.0, cycles)
    position = np.where(known, times / cycles, frame / n_frames)
    return np.mod(position, 1.0), cycles


def nearest_frame(rows: pd.DataFrame, distance: np.ndarray, avoid: int | None = None) -> int:
    """The frame whose images lie nearest their target (median over its slices; ties: the earlier frame),
    other than ``avoid`` where there is another."""
    per_frame = pd.Series(distance, index=rows["frame"].to_numpy()).groupby(level=0).median()
    if avoid is not None and len(per_frame) > 1:
        per_frame = per_frame.drop(avoid)
    return int(per_frame.idxmin())


def cyclic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of two positions on the cycle (0..1)."""
    gap = np.mod(np.abs(a - b), 1.0)
    return np.minimum(gap, 1 - gap)


@dataclass(frozen=True)
class EdEsTimingStrategy:
    description: ClassVar[str] = ("ED and ES frames (all slices) of the n subjects from the cine's timing alone: "
                                  "ED the frame nearest the R wave, ES the frame nearest the QT interval after it "
                                  "(Bazett, QTc 400 ms); no labels, no model")
    uses: ClassVar[frozenset[str]] = frozenset()
    qtc_ms: float = 400.0  # Bazett's corrected QT: end-systole at qtc_ms x sqrt(RR in s) after the R wave

    def phases(self, rows: pd.DataFrame) -> pd.Index:
        if not 100 <= self.qtc_ms <= 700:
            raise StrategyError(f"ed_es_timing: qtc_ms must be between 100 and 700, got {self.qtc_ms}")
        position, cycle = cycle_position(rows)
        ed = nearest_frame(rows, cyclic(position, 0.0))
        es = nearest_frame(rows, cyclic(position, self.qtc_ms * np.sqrt(cycle / 1000) / cycle), avoid=ed)
        order = [ed] if es == ed else [ed, es]
        return pd.Index([i for frame in order for i in rows.index[rows["frame"] == frame].sort_values()])

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        return per_subject(pool, n, self.phases).sort_values()

    def rank(self, pool: Pool, rng: np.random.Generator) -> pd.Index:
        return per_subject(pool, None, self.phases)


SCOPES = ("subject", "pool")


def order_rng(pool: Pool) -> np.random.Generator:
    """A generator that depends on the run's subject order only (not on n): pool-wide rankings drawn from it
    are the same at every budget of a run's seed and fold, so budgets are nested."""
    key = hashlib.sha256(("label-free:" + ",".join(pool.subject_order)).encode()).digest()
    return np.random.default_rng(int.from_bytes(key[:8], "little"))


def pool_budget(pool: Pool, n: int, per_subject: int | None) -> int:
    """Images a pool-wide strategy labels at n: what the first n subjects' per-subject budgets add up to."""
    return sum(subject_budget(pool.frames[pool.frames["subject"] == s], per_subject) for s in pool.subjects(n))


def check_scope(name: str, scope: str) -> None:
    if scope not in SCOPES:
        raise StrategyError(f"{name}: scope must be subject or pool, got '{scope}'")


class Scoped:
    """``select`` and ``rank`` of a rule ``choose(rows, rng, budget=None)`` that labels a budget of images per
    subject (scope "subject") or spreads the same number of images over the whole pool (scope "pool")."""

    name: ClassVar[str]

    @property
    def pool_wide(self) -> bool:
        return self.scope == "pool"

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        check_scope(self.name, self.scope)
        if self.scope == "pool":
            return self.rank(pool, rng)[:pool_budget(pool, n, self.per_subject)].sort_values()
        return per_subject(pool, n, lambda rows: self.choose(rows, rng)).sort_values()

    def rank(self, pool: Pool, rng: np.random.Generator) -> pd.Index:
        check_scope(self.name, self.scope)
        if self.scope == "pool":
            return self.choose(pool.frames, order_rng(pool), len(pool.frames))
        return per_subject(pool, None, lambda rows: self.choose(rows, rng))


@dataclass(frozen=True)
class ForegroundRandomStrategy(Scoped):
    name: ClassVar[str] = "foreground_random"
    description: ClassVar[str] = ("per subject, the ed_es number of images at random among those where the "
                                  "selection model predicts LV (no labels)")
    uses: ClassVar[frozenset[str]] = frozenset({"predictions"})
    per_subject: int | None = None
    min_lv_pixels: int = 1  # an image counts as foreground when the model predicts at least this many LV pixels
    scope: str = "subject"  # or "pool": the budget spread over every pool subject

    def choose(self, rows: pd.DataFrame, rng: np.random.Generator, budget: int | None = None) -> pd.Index:
        budget = subject_budget(rows, self.per_subject) if budget is None else budget
        foreground = rows.index[rows["pred_lv_area"].to_numpy() >= self.min_lv_pixels]
        if len(foreground) < budget:  # too few: every foreground image, the rest at random from the others
            others = rows.index.difference(foreground)
            extra = others[rng.permutation(len(others))[:budget - len(foreground)]]
            return foreground[rng.permutation(len(foreground))].append(extra)
        return foreground[rng.permutation(len(foreground))[:budget]]



def spread_order(rows: pd.DataFrame, score: np.ndarray, per_slice: int, min_gap: float) -> pd.Index:
    """``rows`` by descending ``score``, skipping an image while its slice (of its subject) has ``per_slice`` chosen or a chosen
    frame closer than ``min_gap`` of the cycle (cyclic); skipped images follow, by score, once the rule leaves
    nothing else."""
    order = np.argsort(-score, kind="stable")
    keys = list(zip(rows["subject"], rows["slice"])) if "subject" in rows else list(rows["slice"])
    frames, cycles = rows["frame"].to_numpy(), np.maximum(rows["n_frames"].to_numpy(dtype=int), 1)
    taken: dict[object, list[int]] = {}
    first, later = [], []
    for i in order:
        chosen = taken.setdefault(keys[i], [])
        cycle = cycles[i]
        near = any(min(abs(frames[i] - f), cycle - abs(frames[i] - f)) < min_gap * cycle for f in chosen)
        if len(chosen) < per_slice and not near:
            chosen.append(int(frames[i]))
            first.append(i)
        else:
            later.append(i)
    return rows.index[np.array(first + later, dtype=int)]


@dataclass(frozen=True)
class UncertainStrategy(Scoped):
    name: ClassVar[str] = "uncertain"
    description: ClassVar[str] = ("per subject, the ed_es number of images of highest predictive entropy (or flip "
                                  "disagreement), spread over slices and the cycle (no labels)")
    uses: ClassVar[frozenset[str]] = frozenset({"predictions"})
    per_subject: int | None = None
    score: str = "entropy"  # or "disagreement"
    per_slice: int = 2  # at most this many images of one slice before any slice gets more
    min_gap: float = 0.25  # frames of one slice at least this fraction of the cycle apart
    scope: str = "subject"  # or "pool": the budget spread over every pool subject

    def choose(self, rows: pd.DataFrame, rng: np.random.Generator | None = None,
               budget: int | None = None) -> pd.Index:
        if self.score not in ("entropy", "disagreement"):
            raise StrategyError(f"uncertain: score must be entropy or disagreement, got '{self.score}'")
        if self.per_slice < 1 or not 0 <= self.min_gap < 1:
            raise StrategyError(f"uncertain: per_slice must be at least 1 and min_gap in [0, 1), got "
                                f"{self.per_slice} and {self.min_gap}")
        budget = subject_budget(rows, self.per_subject) if budget is None else budget
        return spread_order(rows, rows[self.score].to_numpy(dtype=float), self.per_slice, self.min_gap)[:budget]



def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 30) -> np.ndarray:
    """Cluster labels (0..k-1) of ``points`` by Lloyd's k-means from a k-means++ start."""
    n = len(points)
    centres = [points[rng.integers(n)]]
    for _ in range(1, k):
        dist = np.min([((points - c) ** 2).sum(1) for c in centres], axis=0)
        total = dist.sum()
        centres.append(points[rng.choice(n, p=dist / total)] if total > 0 else points[rng.integers(n)])
    centre = np.array(centres)
    labels = np.zeros(n, int)
    for _ in range(iterations):
        new = ((points[:, None, :] - centre[None]) ** 2).sum(-1).argmin(1)
        if _ and np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            if (labels == c).any():
                centre[c] = points[labels == c].mean(0)
    return labels


def most_typical(points: np.ndarray, neighbours: int = 5) -> int:
    """The point of smallest mean distance to its ``neighbours`` nearest others (TypiClust's typicality)."""
    if len(points) <= 2:
        return 0
    dist = np.sqrt(((points[:, None, :] - points[None]) ** 2).sum(-1))
    k = min(neighbours, len(points) - 1)
    nearest = np.sort(dist, axis=1)[:, 1:k + 1]
    return int(np.argmin(nearest.mean(1)))


@dataclass(frozen=True)
class TypicalStrategy:
    description: ClassVar[str] = ("per subject, its images clustered on the selection model's embeddings (k = the "
                                  "ed_es number of images) and the most typical image of each cluster (no labels)")
    uses: ClassVar[frozenset[str]] = frozenset({"embeddings"})
    per_subject: int | None = None

    def choose(self, pool: Pool, rows: pd.DataFrame, rng: np.random.Generator) -> pd.Index:
        if pool.embeddings is None or len(pool.embeddings) != len(pool.frames):
            raise StrategyError("typical needs the selection model's embeddings of every pool image")
        budget = subject_budget(rows, self.per_subject)
        points = pool.embeddings[pool.frames.index.get_indexer(rows.index)].astype(np.float64)
        scale = points.std(0)
        points = (points - points.mean(0)) / np.where(scale > 0, scale, 1)
        labels = kmeans(points, budget, rng)
        clusters = sorted(set(labels.tolist()), key=lambda c: (-(labels == c).sum(), c))
        picks = [np.flatnonzero(labels == c)[most_typical(points[labels == c])] for c in clusters]
        if len(picks) < budget:  # empty clusters: the rest by distance from what is picked, farthest first
            rest = np.setdiff1d(np.arange(len(rows)), picks)
            far = ((points[rest][:, None] - points[picks][None]) ** 2).sum(-1).min(1)
            picks += rest[np.argsort(-far, kind="stable")][:budget - len(picks)].tolist()
        return rows.index[np.array(picks, dtype=int)]

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        return per_subject(pool, n, lambda rows: self.choose(pool, rows, rng)).sort_values()

    def rank(self, pool: Pool, rng: np.random.Generator) -> pd.Index:
        return per_subject(pool, None, lambda rows: self.choose(pool, rows, rng))
