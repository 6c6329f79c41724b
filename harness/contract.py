"""A reusable contract check for sampling strategies: run it on yours in your own tests.

    from harness.contract import check_strategy
    def test_my_strategy():
        check_strategy(MyStrategy())

Every strategy registered in an environment is run through it by the harness's own test suite.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.api import (FRAME_COLUMNS, PREDICTION_COLUMNS, Pool, SamplingStrategy, StrategyError, pool_for,
                         undeclared_read, uses_of)


def example_pool(subjects: int = 6, slices: int = 9, frames: int = 20, seed: int = 0) -> Pool:
    """A frame index shaped like a real cine pool (ED/ES marked, varied stacks), without images, with a
    selection model's view of it (PREDICTION_COLUMNS, embeddings): every column a strategy may declare."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(subjects):
        n_slices = int(slices + rng.integers(-1, 2))
        n_frames = int(frames + rng.integers(-2, 3))
        ed, es = int(rng.integers(0, 4)), int(rng.integers(7, 11))
        rr = float(rng.integers(650, 1100)) if s % 3 else float("nan")  # every third subject: timing unknown
        pred_ed, pred_es = (ed + int(rng.integers(0, 2))) % n_frames, es + int(rng.integers(-1, 2))
        for sl in range(n_slices):
            for fr in range(n_frames):
                area = 0 if sl == n_slices - 1 else int(300 - 150 * np.sin(np.pi * ((fr - ed) % n_frames) / n_frames))
                rows.append({"subject": f"sub-{s:02d}", "slice": sl, "frame": fr,
                             "phase": "ED" if fr == ed else "ES" if fr == es else None,
                             "slice_pos": sl / (n_slices - 1), "lv_area": 100, "spacing_mm": 1.5,
                             "n_slices": n_slices, "n_frames": n_frames, "rr_ms": rr,
                             "trigger_ms": round(fr * rr / n_frames + sl * 0.5, 3),
                             "pred_lv_area": area, "pred_my_area": area // 2, "entropy": float(rng.uniform(0, 0.2)),
                             "disagreement": float(rng.uniform(0, 0.5)),
                             "pred_phase": "ED" if fr == pred_ed else "ES" if fr == pred_es else None,
                             "phase_hint": ("ED" if fr == ed else "ES" if fr == es else None) if s % 2 else None})
    frames_df = pd.DataFrame(rows, columns=list(FRAME_COLUMNS) + list(PREDICTION_COLUMNS) + ["phase_hint"])
    frames_df.index = frames_df.index * 3 + 7  # index labels that are not positions, as in a real pool
    order = tuple(rng.permutation(sorted(frames_df["subject"].unique())).tolist())
    embeddings = rng.normal(size=(len(frames_df), 16)).astype(np.float32)
    return Pool(frames=frames_df, subject_order=order, embeddings=embeddings)


def check_strategy(strategy: SamplingStrategy, pool: Pool | None = None) -> None:
    """Raise AssertionError naming the broken rule, if the strategy breaks the contract. The strategy is
    handed only what it declares in ``uses`` (as the harness does), so reading anything else fails here."""
    full = pool or example_pool()
    assert isinstance(strategy, SamplingStrategy), "a strategy needs a description and select(pool, n, rng)"
    assert isinstance(strategy.description, str) and strategy.description, "description must be a non-empty string"
    try:
        uses_of(strategy)
    except StrategyError as exc:
        raise AssertionError(f"uses: {exc}") from None
    pool = pool_for(strategy, full.frames, full.subject_order, full.embeddings)
    try:
        _check_select(strategy, pool)
        if callable(getattr(strategy, "rank", None)):
            _check_rank(strategy, pool)
    except (KeyError, NameError, AttributeError) as exc:  # query: NameError; rows.phase: AttributeError
        message = undeclared_read(exc, strategy)
        if message is None:
            raise
        raise AssertionError(f"the strategy {message}") from None


def _check_rank(strategy: SamplingStrategy, pool: Pool) -> None:
    """rank(pool, rng): every row at most once, rows of the pool only, the same order for the same rng."""
    first = pd.Index(strategy.rank(pool, np.random.default_rng(42)))
    again = pd.Index(strategy.rank(pool, np.random.default_rng(42)))
    assert first.equals(again), "rank: two calls with the same rng state ranked differently"
    assert len(first) > 0, "rank: ranked nothing"
    assert first.is_unique, "rank: ranked a row twice"
    assert first.isin(pool.frames.index).all(), "rank: ranked rows that are not in the pool"


def _check_select(strategy: SamplingStrategy, pool: Pool) -> None:
    total = len(pool.subject_order)
    for n in range(1, total + 1):
        first = strategy.select(pool, n, np.random.default_rng(42))
        again = strategy.select(pool, n, np.random.default_rng(42))
        chosen = pd.Index(first)
        assert chosen.equals(pd.Index(again)), f"n={n}: two calls with the same rng state selected different rows"
        assert len(chosen) > 0, f"n={n}: selected nothing"
        assert chosen.is_unique, f"n={n}: selected a row twice"
        assert chosen.isin(pool.frames.index).all(), f"n={n}: selected rows that are not in the pool"
        used = set(pool.frames.loc[chosen, "subject"])
        if not getattr(strategy, "pool_wide", False):
            assert used <= set(pool.subject_order[:n]), f"n={n}: used subjects beyond the first n: {sorted(used)}"
    try:
        strategy.select(pool, total + 1, np.random.default_rng(0))
    except StrategyError as exc:
        assert str(total + 1) in str(exc), f"the error for n > pool must name the n asked for: {exc}"
    else:
        raise AssertionError(f"n={total + 1} > {total} subjects in the pool must raise StrategyError")
