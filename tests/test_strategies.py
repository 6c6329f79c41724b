from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from harness import registry
from harness.api import StrategyError
from harness.contract import check_strategy, example_pool
from harness.strategies.builtin import EdEsStrategy, SliceStratifiedStrategy, SubjectRandomStrategy


NEEDS_PARAMETERS = {"subsets_file"}  # its table: checked in test_paper_strategies with one made for the pool


@pytest.mark.parametrize("name", sorted(set(registry.discover()) - NEEDS_PARAMETERS))
def test_every_registered_strategy_keeps_the_contract(name):
    check_strategy(registry.load(name))


def test_contract_catches_a_strategy_that_uses_subjects_beyond_n():
    class Greedy:
        description = "takes everything"

        def select(self, pool, n, rng):
            pool.subjects(n)
            return pool.frames.index

    with pytest.raises(AssertionError, match="beyond the first n"):
        check_strategy(Greedy())


def test_ed_es_takes_both_phases_of_every_slice():
    pool = example_pool()
    rows = pool.frames.loc[EdEsStrategy().select(pool, 3, np.random.default_rng(0))]
    assert set(rows["subject"]) == set(pool.subject_order[:3])
    for _, subject in rows.groupby("subject"):
        assert sorted(subject["phase"].unique()) == ["ED", "ES"]
        assert len(subject) == 2 * subject["n_slices"].iloc[0]


@pytest.mark.parametrize("cls", [SubjectRandomStrategy, SliceStratifiedStrategy])
def test_default_budget_equals_the_ed_es_cost_per_subject(cls):
    pool = example_pool()
    chosen = pool.frames.loc[cls().select(pool, 4, np.random.default_rng(1))]
    ed_es = pool.frames.loc[EdEsStrategy().select(pool, 4, np.random.default_rng(1))]
    assert chosen.groupby("subject").size().to_dict() == ed_es.groupby("subject").size().to_dict()


@pytest.mark.parametrize("cls", [SubjectRandomStrategy, SliceStratifiedStrategy])
def test_per_subject_parameter_changes_the_budget(cls):
    pool = example_pool()
    chosen = pool.frames.loc[cls(per_subject=5).select(pool, 2, np.random.default_rng(0))]
    assert chosen.groupby("subject").size().tolist() == [5, 5]


def test_slice_stratified_splits_the_budget_equally_over_thirds():
    pool = example_pool(subjects=3, slices=9)
    chosen = pool.frames.loc[SliceStratifiedStrategy(per_subject=12).select(pool, 3, np.random.default_rng(3))]
    thirds = np.minimum((chosen["slice_pos"] * 3).astype(int), 2)
    counts = chosen.assign(third=thirds).groupby(["subject", "third"]).size().unstack()
    assert (counts == 4).all().all()


def test_slice_stratified_moves_leftover_budget_to_thirds_that_have_room():
    pool = example_pool(subjects=1, slices=3, frames=2)  # 2-4 slices of 2 frames: thirds hold few images
    budget = len(pool.frames)
    chosen = SliceStratifiedStrategy(per_subject=budget).select(pool, 1, np.random.default_rng(0))
    assert len(chosen) == budget


def test_subject_random_draws_differ_between_seeds():
    pool = example_pool()
    s = SubjectRandomStrategy()
    a = s.select(pool, 3, np.random.default_rng(1))
    b = s.select(pool, 3, np.random.default_rng(2))
    assert not a.equals(b)


def test_n_larger_than_pool_is_a_clear_error():
    pool = example_pool(subjects=4)
    with pytest.raises(StrategyError, match=r"n=5 subjects requested but the training pool has only 4"):
        EdEsStrategy().select(pool, 5, np.random.default_rng(0))


def test_builtin_strategies_import_neither_torch_nor_io_libraries():
    code = ("import sys, harness.strategies.builtin; "
            "bad = [m for m in ('torch', 'pydicom', 'nibabel', 'segmentation_models_pytorch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
