"""The sampling-strategy plug-in contract: everything a strategy author needs is in this file.

A strategy decides which labelled images of the training pool are used for fine-tuning. It is a pure
function of (pool, n, rng) -> selected rows: no I/O, no torch. Register it under the entry-point group
``harness.strategies`` in your package's ``pyproject.toml``::

    [project.entry-points."harness.strategies"]
    my_strategy = "my_package.module:MyStrategy"

The entry point names a class (usually a frozen dataclass whose fields are its parameters, all with
defaults) with a ``description`` and a ``select`` method; see ``SamplingStrategy``.

What a strategy may read is what a lab has before anything is contoured, plus what it declares in ``uses``:

- always: ``KNOWN_COLUMNS`` (subject, slice, frame, slice position, pixel spacing, stack size, trigger time
  and RR interval where the data carry them, ED/ES named by metadata);
- ``"labels"``: ``LABEL_COLUMNS`` (ED/ES found from the labels, LV area of the label). A strategy that
  reads labels is an *oracle*: a baseline no lab can run before labelling, named so in every report;
- ``"predictions"``: ``PREDICTION_COLUMNS``, the selection model's view of each image (predicted LV and
  MY area, predictive entropy, disagreement under flips, ED/ES predicted from the predicted LV volume);
- ``"embeddings"``: ``Pool.embeddings``, the selection model's encoder features, one row per image.

The harness hands a strategy only what it declares; reading an undeclared column is a StrategyError. A
strategy that declares nothing is taken to read labels (an oracle), as strategies written before 0.8 may.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from harness.errors import StrategyError

__all__ = ["ENTRY_POINT_GROUP", "FRAME_COLUMNS", "KNOWN_COLUMNS", "LABEL_COLUMNS", "PREDICTION_COLUMNS", "USES",
           "Pool", "SamplingStrategy", "StrategyError", "is_oracle", "pool_for", "undeclared_read", "uses_of"]

ENTRY_POINT_GROUP = "harness.strategies"

#: Columns of the tidy frame index, one row per labelled 2D image.
#: subject (str), slice (int, 0 = most basal), frame (int), phase ("ED", "ES" or None),
#: slice_pos (float, 0 = base .. 1 = apex), lv_area (LV blood-pool pixels in the label),
#: spacing_mm (in-plane pixel spacing of the source image), n_slices and n_frames of the subject,
#: trigger_ms (the image's time after the R wave: DICOM TriggerTime, or frame x the time step of a 4D NIfTI whose
#: header sets its time axis; NaN where the data do not say it, as ACDC's frame files and PNG) and rr_ms (the cardiac cycle the image was acquired in: DICOM NominalInterval, per slice as
#: each slice is its own breath-hold, else the slice's frame spacing times its frames; NaN where unknown).
FRAME_COLUMNS = (
    "subject", "slice", "frame", "phase", "slice_pos", "lv_area", "spacing_mm", "n_slices", "n_frames",
    "trigger_ms", "rr_ms",
)

#: Known before labelling: every strategy gets them. phase_hint: "ED"/"ES" where the dataset's metadata name
#: them (ACDC's Info.cfg; None elsewhere, and where ED/ES could only be found from the labels).
KNOWN_COLUMNS = ("subject", "slice", "frame", "slice_pos", "spacing_mm", "n_slices", "n_frames", "trigger_ms",
                 "rr_ms", "phase_hint")
#: Come from the labels (uses "labels"): phase = ED/ES found from the labelled LV area, lv_area of the label.
LABEL_COLUMNS = ("phase", "lv_area")
#: The selection model's view (uses "predictions"): predicted LV and MY pixels at the training size, mean
#: predictive entropy (0..1, of the softmax averaged over test-time flips, per pixel, normalised by log of
#: the classes), flip disagreement (0..1: pixels where the flipped predictions differ, over pixels any of them
#: calls LV or MY), pred_phase ("ED"/"ES"/None: largest / smallest predicted LV volume of the subject's frames).
PREDICTION_COLUMNS = ("pred_lv_area", "pred_my_area", "entropy", "disagreement", "pred_phase")
#: What a strategy may declare in ``uses``.
USES = frozenset({"labels", "predictions", "embeddings"})


@dataclass(frozen=True)
class Pool:
    """The labelled training images available to a run, and the order in which subjects are drawn.

    ``subject_order`` is drawn by the harness from the run's subset seed and is the same for every
    strategy at that seed, so strategies are compared on the same subjects (paired), and the first n
    subjects for n=2 are among the first n for n=5 (nested budgets).
    """

    frames: pd.DataFrame
    subject_order: tuple[str, ...]
    embeddings: np.ndarray | None = None  # uses "embeddings": row i belongs to frames.iloc[i]

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
    # uses: ClassVar[frozenset[str]], a subset of USES (optional, so not a protocol member; absent = an oracle)

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index: ...


def uses_of(strategy: object) -> frozenset[str]:
    """What a strategy (instance or class) declares it reads; undeclared = {"labels"}. StrategyError for a
    declaration outside USES."""
    declared = getattr(strategy, "uses", None)
    if declared is None:
        return frozenset({"labels"})
    if isinstance(declared, str) or not all(isinstance(u, str) for u in declared):
        raise StrategyError(f"uses must be a set of {sorted(USES)}, got {declared!r}")
    unknown = set(declared) - USES
    if unknown:
        raise StrategyError(f"uses names {sorted(unknown)}; a strategy may declare {sorted(USES)}")
    return frozenset(declared)


def is_oracle(strategy: object) -> bool:
    """Whether a strategy reads labels nobody has drawn when frames are chosen (a baseline, not a choice)."""
    return "labels" in uses_of(strategy)


def pool_for(strategy: object, frames: pd.DataFrame, subject_order: tuple[str, ...],
             embeddings: np.ndarray | None = None) -> Pool:
    """The pool a strategy is handed: KNOWN_COLUMNS plus the columns (and embeddings) it declares in ``uses``.
    ``frames`` must hold every column the strategy declares (the harness adds the selection model's view)."""
    uses = uses_of(strategy)
    if "phase_hint" not in frames:  # a pool made before 0.8 (or by hand): no metadata hints
        frames = frames.assign(phase_hint=None)
    for column in ("trigger_ms", "rr_ms"):  # nor timing
        if column not in frames:
            frames = frames.assign(**{column: np.nan})
    columns = list(KNOWN_COLUMNS) + [c for c in LABEL_COLUMNS if "labels" in uses]
    columns += [c for c in PREDICTION_COLUMNS if "predictions" in uses]
    missing = [c for c in columns if c not in frames]
    if missing:
        raise StrategyError(f"the pool lacks {missing}, which the strategy declares in uses")
    if "embeddings" in uses and (embeddings is None or len(embeddings) != len(frames)):
        raise StrategyError("the strategy declares uses 'embeddings' but the pool has none for its images")
    return Pool(frames=frames[columns], subject_order=subject_order,
                embeddings=embeddings if "embeddings" in uses else None)


def undeclared_read(exc: Exception, strategy: object) -> str | None:
    """If ``exc`` (a KeyError; the NameError of ``DataFrame.query``; the AttributeError of ``rows.phase``) is a
    strategy reading a column it did not declare, the message saying so and the fix; None for any other error."""
    import re

    named = [exc.args[0]] if exc.args and isinstance(exc.args[0], str) else []
    named += re.findall(r"['\"]([A-Za-z_]+)['\"]", str(exc))
    for needs, group in (("labels", LABEL_COLUMNS), ("predictions", PREDICTION_COLUMNS)):
        column = next((c for c in named if c in group and needs not in uses_of(strategy)), None)
        if column is not None:
            return (f"read column '{column}' without declaring it: add \"{needs}\" to its uses "
                    f"(uses = frozenset({{{', '.join(repr(u) for u in sorted(uses_of(strategy) | {needs}))}}}))"
                    + ("; a strategy that reads labels is an oracle" if needs == "labels" else ""))
    return None
