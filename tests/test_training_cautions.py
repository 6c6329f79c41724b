"""The training cautions of the report, each made to fire on a crafted study and to stay silent on its twin."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from harness.analysis import RUN_COLUMNS, Options, analyse_images, training_cautions, unconverged
from harness.reports.guideline import guideline
from tests.simulation import study


def _analysis(effects: dict, converged: dict | None = None):
    """A crafted study's analysis with a run table: every (strategy, n, seed, fold) one run; ``converged`` maps
    (strategy, n) to (converged, stop reason) for its runs (the others stop on a plateau)."""
    images = study(np.random.default_rng(5), effects, seeds=2)
    a = analyse_images(images, {"kind": "table"}, Options())
    rows = []
    for (method, n, seed, fold), _ in images.groupby(["strategy", "n", "seed", "fold"]):
        ok, reason = (converged or {}).get((method, n), (True, "plateau"))
        strategy, _, init = method.partition("+")
        rows.append({**{c: None for c in RUN_COLUMNS}, "run": f"{method}-{n}-{seed}-{fold}", "strategy": strategy,
                     "method": method, "init": init or "source", "n": n, "seed": seed, "fold": fold, "state": "done",
                     "steps": 100 * n, "epochs": 10.0, "stop_reason": reason, "converged": ok})
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return dataclasses.replace(a, runs=runs, unconverged=unconverged(runs))


def test_a_configuration_with_runs_that_stopped_at_the_cap_is_named_and_so_is_every_sentence_on_it():
    a = _analysis({("ed_es", 2): -0.05, ("ed_es", 5): 0.0, ("ed_es", 10): 0.0}, {("ed_es", 10): (False, "cap")})
    bad = unconverged(a.runs)
    assert bad[["strategy", "n", "runs", "not_converged", "at_cap"]].values.tolist() == [["ed_es", 10, 6, 6, 6]]
    (caution,) = [c for c in training_cautions(a) if c.startswith("Not converged")]
    assert "6 of 6 runs of ed_es at n = 10 (6 stopped at the cap while validation Dice was still improving)" in caution
    sentence = next(s for s in guideline(a) if s.startswith("**ed_es"))
    assert "It rests on runs that did not converge (ed_es at n = 10 6 of 6" in sentence


def test_a_study_whose_runs_all_converged_has_no_convergence_caution():
    a = _analysis({("ed_es", 2): -0.05, ("ed_es", 5): 0.0, ("ed_es", 10): 0.0})
    assert not unconverged(a.runs).shape[0]
    assert not [c for c in training_cautions(a) if "converge" in c.lower()]
    assert not any("did not converge" in s for s in guideline(a))


def test_dice_falling_with_the_budget_beyond_noise_is_a_caution_naming_the_cap_first():
    falling = {("ed_es", 2): 0.0, ("ed_es", 5): 0.0, ("ed_es", 10): -0.06}
    a = _analysis(falling, {("ed_es", 10): (False, "cap")})
    (caution,) = [c for c in training_cautions(a) if c.startswith("Dice falls")]
    assert "ed_es at n = 10 is below n = 5 (LV -0.0" in caution and "t-test p " in caution and "Holm-adjusted" in caution
    assert "stopped at the cap while still improving: unfinished training is the first suspect" in caution
    converged = _analysis(falling)
    (caution,) = [c for c in training_cautions(converged) if c.startswith("Dice falls")]
    assert "The first suspect is unfinished training (see the training curves" in caution


def test_a_flat_or_rising_curve_has_no_falling_caution():
    for effects in ({("ed_es", 2): 0.0, ("ed_es", 5): 0.0, ("ed_es", 10): 0.0},
                    {("ed_es", 2): -0.05, ("ed_es", 5): 0.0, ("ed_es", 10): 0.02}):
        assert not [c for c in training_cautions(_analysis(effects)) if c.startswith("Dice falls")]


def test_runs_without_any_convergence_check_are_said_so():
    a = _analysis({("ed_es", 2): 0.0, ("ed_es", 5): 0.0})
    runs = a.runs.assign(converged=None, stop_reason="fixed")
    said = training_cautions(dataclasses.replace(a, runs=runs))
    assert any(c.startswith("No convergence check ran") for c in said)


def test_with_several_inits_each_method_is_judged_on_its_own_runs():
    effects = {(f"ed_es+{init}", n): (0.0 if init == "source" else -0.1 + 0.01 * n) for init in ("source", "random")
               for n in (2, 5, 10)}
    a = _analysis(effects, {("ed_es+random", 10): (False, "cap")})
    (caution,) = [c for c in training_cautions(a) if c.startswith("Not converged")]
    assert "6 of 6 runs of ed_es+random at n = 10" in caution
    random = next(s for s in guideline(a) if s.startswith("**ed_es+random"))
    assert "It rests on runs that did not converge (ed_es+random at n = 10 6 of 6" in random
    source = next(s for s in guideline(a) if s.startswith("**ed_es+source"))
    assert "did not converge" not in source


def test_the_comparison_with_the_base_model_says_when_its_budget_did_not_converge():
    effects = {("base", 0): -0.2, ("ed_es", 2): -0.05, ("ed_es", 5): 0.0, ("ed_es", 10): 0.0}
    for converged, noted in (({("ed_es", 2): (False, "cap")}, True), ({("ed_es", 10): (False, "cap")}, False)):
        a = _analysis(effects, converged)
        (sentence,) = [s for s in guideline(a) if "against the base model" in s]
        assert ("It rests on runs that did not converge (ed_es at n = 2 6 of 6" in sentence) == noted, sentence
