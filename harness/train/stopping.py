"""The stopping rule: when a fine-tune has learned what its data can teach, as a pure function of its scores.

A run is checked on its validation subjects before its first step (check 0: the starting weights) and then
every ``StoppingRule.interval_epochs(images)`` epochs of its training subset. ``decide`` reads the sequence
of validation scores so far and says whether to stop, why, and which check's weights to keep:

- **plateau**: no score has exceeded the last improvement's by more than ``min_delta`` for ``patience`` checks, or
  for ``patience_fraction`` of the checks it took to reach that best, whichever is more (a run that needed
  20 checks to get somewhere is given 10 to improve again: the rule is the same at every pace, from a
  pre-trained start that peaks in two checks to a random one that stays flat for five). The first
  ``reductions`` plateaus do not stop the run: each multiplies the learning rate by ``reduce_factor`` and
  starts a new phase, counted from that check (Keras' ReduceLROnPlateau); the next plateau stops it. A
  constant rate creeps up long after its gains fall below ``min_delta`` a check; a lower rate harvests that
  creep in a few checks, so the last plateau is one that more patience does not move;
- **cap**: ``max_checks`` checks were made while it was still improving (the run is *not converged*);
- **diverged**: a score is not finite (the training loss became NaN/inf or exploded).

The weights kept are those of the best score, the starting weights included, so fine-tuning never ends
below where it started on validation. The rule knows nothing about strategies, budgets or inits: every
run of a study is stopped by the same rule. ``stop_point`` applies it to a whole log, e.g. a published
study's validation Dice per epoch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from harness.errors import UsageError

REASONS = ("plateau", "cap", "diverged")


@dataclass(frozen=True)
class StoppingRule:
    """Checks spaced in epochs of the training subset; patience and minimum improvement in checks and Dice."""

    patience: int = 5  # at least this many checks without an improvement of more than min_delta before stopping
    min_delta: float = 0.002  # validation Dice (mean of LV and MY) an improvement must exceed
    patience_fraction: float = 0.5  # ... and at least this share of the checks the last improvement took
    max_checks: int = 40  # the cap: checks after the start; each is at least one epoch, so it grows with the subset
    check_images: int = 160  # a check comes after at least this many training images, in whole epochs
    reductions: int = 0  # plateaus that lower the learning rate (by reduce_factor) instead of stopping
    reduce_factor: float = 0.2

    def __post_init__(self):
        if self.patience < 1 or self.max_checks < 1 or self.check_images < 1:
            raise UsageError(f"stopping rule {self.text()}: patience, cap and images between checks must be at "
                             "least 1")
        if not 0 <= self.min_delta < 1:
            raise UsageError(f"stopping rule: minimum improvement {self.min_delta:g} must lie in [0, 1)")
        if self.reductions < 0 or not 0 < self.reduce_factor < 1:
            raise UsageError(f"stopping rule: {self.reductions} reductions by {self.reduce_factor:g}: reductions must be "
                             "at least 0 and the factor lie in (0, 1)")
        if not 0 <= self.patience_fraction <= 10:
            raise UsageError(f"stopping rule: patience fraction {self.patience_fraction:g} must lie in [0, 10]")

    def interval_epochs(self, images: int) -> int:
        """Whole epochs of a subset of ``images`` between checks: one, or more where an epoch is short."""
        return max(1, math.ceil(self.check_images / max(images, 1)))

    def text(self) -> str:
        plateau = (f"max({self.patience}, {self.patience_fraction:g} × the phase's checks to its last improvement) "
                   f"checks without an improvement above {self.min_delta:g} Dice")
        if self.reductions:
            return (f"a check every max(1 epoch, {self.check_images} images) of the training subset; a plateau "
                    f"({plateau}) multiplies the learning rate by {self.reduce_factor:g} the first {self.reductions} "
                    f"time(s) and stops the run the next; cap {self.max_checks} checks")
        return (f"a check every max(1 epoch, {self.check_images} images) of the training subset, stop after "
                f"{plateau}, cap {self.max_checks} checks")

    def patience_at(self, improved: int) -> int:
        """Checks without an improvement that end a phase whose last improvement came ``improved`` checks after
        the phase began (the start, or the last reduction of the learning rate)."""
        return max(self.patience, math.ceil(self.patience_fraction * improved))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> StoppingRule:
        data = data or {}
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Decision:
    stop: bool
    reason: str | None  # plateau, cap, diverged; None while training goes on
    best: int  # the check whose weights are kept (0: the starting weights)
    since: int  # checks since the last improvement above min_delta, or since the phase began where that is later
    needed: int = 0  # checks without an improvement that end the phase at this point (StoppingRule.patience_at)
    reduce: bool = False  # the last check ended a phase: lower the learning rate and go on
    reduced_at: tuple[int, ...] = ()  # the checks at which the learning rate was lowered

    @property
    def converged(self) -> bool:
        """Stopped because validation stopped improving (not at the cap, not diverged)."""
        return self.reason == "plateau"


def decide(scores: Sequence[float], rule: StoppingRule) -> Decision:
    """Whether to stop after the checks ``scores`` (``scores[0]``: the starting weights), and the weights to
    keep: the first check with the best score. An improvement is a score more than ``min_delta`` above the
    last improvement's score (as Keras' EarlyStopping counts), so a slow creep of tiny gains ends in a plateau,
    not at the cap; the kept check may lie after the last improvement by less than ``min_delta``. The phases
    (where the rule lowered the learning rate) are replayed from the scores, so this stays a function of them."""
    if not scores:
        raise ValueError("decide needs at least the starting weights' score")
    best, reference, improved, phase, reduced = None, -math.inf, 0, 0, []
    for i, score in enumerate(scores):
        if not math.isfinite(score):
            needed = rule.patience_at(improved - phase)
            return Decision(True, "diverged", best if best is not None else 0, i - improved, needed, False,
                            tuple(reduced))
        if best is None or score > scores[best]:
            best = i
        if score > reference + (rule.min_delta if i else 0.0):
            reference, improved = score, i
        ended = i - improved >= rule.patience_at(improved - phase)
        if ended and len(reduced) < rule.reductions and i < rule.max_checks:  # no reduction at the cap: it stops
            reduced.append(i)
            phase = improved = i
    last = len(scores) - 1
    since, needed = last - improved, rule.patience_at(improved - phase)
    if reduced and reduced[-1] == last:
        return Decision(False, None, best, since, needed, True, tuple(reduced))
    if since >= needed and len(reduced) == rule.reductions:  # the last phase's plateau; an earlier one is the cap's
        return Decision(True, "plateau", best, since, needed, False, tuple(reduced))
    if last >= rule.max_checks:
        return Decision(True, "cap", best, since, needed, False, tuple(reduced))
    return Decision(False, None, best, since, needed, False, tuple(reduced))


def stop_point(scores: Sequence[float], rule: StoppingRule) -> tuple[int, Decision]:
    """Where the rule stops on a complete log of scores (one per check, the start first): the index of the
    check it stops at and its decision there. A log that ends first is cut at its end (reason 'cap' if it
    was still improving, i.e. the log is too short to tell)."""
    for end in range(1, len(scores) + 1):
        decision = decide(scores[:end], rule)
        if decision.stop:
            return end - 1, decision
    decision = decide(scores, rule)
    return len(scores) - 1, Decision(True, "cap", decision.best, decision.since, decision.needed, False,
                                     decision.reduced_at)
