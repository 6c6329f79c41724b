"""Studies run until decided (issue 21): group-sequential boundaries against published values, error rates and
expected runs by simulation, the decisions of a look with planted effects, and rounds that survive a resume."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness import stats
from harness.errors import UsageError
from harness.rounds import Design, Rounds, look, runs_saved
from harness.stats import sequential as gs
from tests.simulation import sequential_trials, study


# -- the boundaries -----------------------------------------------------------------------------------------------

def test_boundaries_are_the_published_lan_demets_values():
    # Jennison & Turnbull (2000), table 7.6 / gsDesign: one-sided alpha 0.025, equally spaced looks
    assert gs.boundaries([1.0], 0.025) == pytest.approx([1.95996], abs=1e-4)
    assert gs.boundaries([0.5, 1.0], 0.025) == pytest.approx([2.9626, 1.9686], abs=2e-3)
    assert gs.boundaries([0.25, 0.5, 0.75, 1.0], 0.025) == pytest.approx([4.3326, 2.9631, 2.3590, 2.0141], abs=2e-3)
    assert gs.boundaries([0.25, 0.5, 0.75, 1.0], 0.025, "pocock") == pytest.approx([2.3683, 2.3675, 2.3582, 2.3500],
                                                                                   abs=2e-3)


@pytest.mark.parametrize("fractions", [[0.3, 1.0], [0.2, 0.41, 0.62, 0.8, 1.0], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]])
@pytest.mark.parametrize("kind", gs.SPENDING)
def test_the_boundaries_spend_exactly_alpha_under_the_null(fractions, kind):
    bounds = gs.boundaries(fractions, 0.05, kind)
    assert gs.crossing_probability(fractions, bounds, 0.0) == pytest.approx(0.05, abs=1e-5)
    assert gs.spent(1.0, 0.05, kind) == pytest.approx(0.05) and gs.spent(0.0, 0.05, kind) == 0
    # more power than the first look alone, less than a fixed test at the same information
    drift = gs.sps.norm.isf(0.05) + gs.sps.norm.isf(0.2)  # a fixed design's 80% power
    assert 0.7 < gs.crossing_probability(fractions, bounds, drift) <= 0.8 + 1e-6


def test_a_decision_at_a_look():
    shown = gs.decide([3.1], [0.5], 0.025)
    assert shown.decision == "shown" and shown.bound == pytest.approx(2.9626, abs=2e-3)
    assert 0 < shown.p_sequential < 0.025  # stage-wise p: crossing at look 1 with z = 3.1
    assert gs.decide([-0.5], [0.5], 0.025).decision == "futile"  # no hope of crossing at the maximum
    assert gs.decide([1.5], [0.5], 0.025).decision == "open"
    assert gs.decide([1.0, 1.9], [0.5, 1.0], 0.025).decision == "not shown"
    final = gs.decide([1.0, 2.5], [0.5, 1.0], 0.025)
    assert final.decision == "shown" and gs.sps.norm.sf(2.5) < final.p_sequential < 0.025
    with pytest.raises(ValueError, match="increase"):
        gs.boundaries([0.5, 0.4], 0.05)


# -- calibration by simulation -------------------------------------------------------------------------------------

NOISE = {"light": dict(sd_run=0.011), "heavy": dict(sd_run=0.05)}


@pytest.mark.parametrize("noise", NOISE)
@pytest.mark.parametrize("max_seeds", [4, 6, 8, 10, 12])  # 2 to 6 looks of 2 seeds
def test_false_positives_at_the_margin_stay_at_alpha_over_2_to_6_looks(noise, max_seeds):
    trials = sequential_trials(np.random.default_rng([2026, max_seeds]), 3000, -0.02, max_seeds=max_seeds,
                               **NOISE[noise])
    rate = np.mean(trials["decision"] == "shown")
    assert 0.035 <= rate <= 0.06, rate
    assert (trials["seeds"] <= max_seeds).all() and (trials["seeds"] % 2 == 0).all()


@pytest.mark.parametrize("noise", NOISE)
def test_power_stays_with_the_fixed_design_and_runs_are_saved(noise):
    rng = np.random.default_rng([2027, len(noise)])
    equal = sequential_trials(rng, 5000, 0.0, max_seeds=10, **NOISE[noise])  # power to +-0.007 (1 SE)
    below = sequential_trials(rng, 1000, -0.04, max_seeds=10, **NOISE[noise])
    power, fixed = np.mean(equal["decision"] == "shown"), np.mean(equal["fixed"])
    assert power >= fixed - 0.03, (power, fixed)
    assert np.mean(below["seeds"]) <= 0.7 * 10  # clearly below the margin: futile early
    # truly equal: decided early where the question has the power to be (light run noise, the phantom's); with
    # heavy run noise it has about 50% power at 10 seeds, so many questions stay open to the end
    assert np.mean(equal["seeds"]) <= (0.7 if noise == "light" else 0.9) * 10


# -- the decisions of a look ---------------------------------------------------------------------------------------

def _scores(effects, seeds, rng_seed=0, **kw):
    images = study(np.random.default_rng(rng_seed), effects, seeds=seeds, **kw)
    return stats.subject_scores(images)


def test_a_planted_effect_is_found_and_the_fixed_sequence_is_kept():
    effects = {("a", 10): 0.0, ("a", 5): 0.05, ("a", 2): -0.15, ("b", 5): -0.15, ("b", 2): 0.0,
               ("c", 5): -0.015, ("c", 2): 0.0}
    rounds = Rounds(Design(reference="a@10", margin=0.02, alpha=0.05, per_round=2, max_seeds=10))
    scores = _scores(effects, 4)
    q = look(scores[scores["seed"] < 2], rounds, 2, final=False)["questions"]
    assert q["a@5:dice_lv"]["decision"] == q["a@5:dice_my"]["decision"] == "shown"  # 0.05 above the reference
    assert q["a@5:dice_lv"]["p_sequential"] < 0.05 and q["a@5:dice_lv"]["repeated_lower"] > -0.02
    assert q["a@2:dice_lv"]["decision"] == "futile"  # tested at the look its step above was shown; hopeless
    assert q["b@5:dice_lv"]["decision"] == "futile" and q["b@5:dice_lv"]["conditional_power"] < 0.05
    assert q["b@2:dice_lv"]["decision"] == "not tested"  # the step above it failed: the sequence stops there
    assert q["c@5:dice_lv"]["decision"] == "open"  # just inside the margin: more seeds
    assert q["c@2:dice_lv"]["decision"] == "open" and q["c@2:dice_lv"]["why"] == "waits for c@5"
    assert q["c@2:dice_lv"]["fraction"] == 0.2  # recorded although not tested: its boundaries count this look


def test_a_decided_question_is_not_looked_at_again_and_only_open_ones_get_seeds():
    effects = {("a", 10): 0.0, ("a", 5): 0.1, ("a", 2): -0.015}  # a@5 far above; a@2 just inside the margin
    design = Design(reference="a@10", margin=0.02, alpha=0.05, per_round=4, max_seeds=12)
    rounds = Rounds(design)
    scores = _scores(effects, 8)
    first = look(scores[scores["seed"] < 4], rounds, 4, final=False)
    assert first["questions"]["a@5:dice_lv"]["decision"] == "shown"
    assert first["questions"]["a@2:dice_lv"]["decision"] == "open"
    assert sorted(map(tuple, first["needs"])) == [("a", 2), ("a", 10)]  # a@5 is decided: no more seeds for it
    rounds.rounds.append({"round": 1, **first})
    assert (rounds.seeds_of("a", 2, 2), rounds.seeds_of("a", 5, 2), rounds.seeds_of("a", 10, 2)) == (8, 4, 8)
    second = look(scores, rounds, 8, final=False)
    assert set(second["questions"]) == {"a@2:dice_lv", "a@2:dice_my"}  # a@5 was decided: never looked at again
    assert second["questions"]["a@2:dice_lv"]["looks"] == 2 and second["questions"]["a@2:dice_lv"]["fraction"] == 0.67
    rounds.rounds.append({"round": 2, **second})
    third = look(scores, rounds, 12, final=True)  # the maximum: shown or not, nothing stays open
    assert third["questions"]["a@2:dice_lv"]["decision"] in ("shown", "not shown") and third["needs"] == []


def test_a_design_cannot_change_half_way(tmp_path):
    design = Design(reference="a@10", margin=0.02, alpha=0.05, per_round=2, max_seeds=10)
    Rounds(design, [{"round": 1, "seeds": 2, "questions": {}, "needs": []}]).write(tmp_path)
    assert Rounds.read(tmp_path, design).rounds[0]["seeds"] == 2
    with pytest.raises(UsageError, match="decided with margin 0.02 \\(now 0.03\\)"):
        Rounds.read(tmp_path, Design(reference="a@10", margin=0.03, alpha=0.05, per_round=2, max_seeds=10))
    for bad, message in ((dict(per_round=1), "at least 2"), (dict(max_seeds=1), "below the --seeds"),
                         (dict(spending="linear"), "--spending")):
        with pytest.raises(UsageError, match=message):
            Design(**{**design.__dict__, **bad}).check()


def test_runs_saved_against_the_fixed_design_with_the_same_power():
    design = Design(reference="a@10", margin=0.02, alpha=0.05, per_round=2, max_seeds=10)
    # subject-dominated variance: Var(10) is 70% of Var(2); a fixed design with few seeds has nearly its power
    saved = runs_saved({"seeds": 2, "se": 0.008, "fraction_estimated": 0.7}, design)
    assert saved["seeds_used"] == 2 and saved["seeds_fixed"] == 10
    assert 0.8 < saved["power"] < 1 and 1 <= saved["seeds_same_power"] <= 10
    run_dominated = runs_saved({"seeds": 2, "se": 0.012, "fraction_estimated": 0.25}, design)
    assert run_dominated["seeds_same_power"] > saved["seeds_same_power"]
