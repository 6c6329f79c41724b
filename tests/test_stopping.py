"""The stopping rule as a pure function: plateau, cap while improving, divergence, the start as best."""
from __future__ import annotations

import dataclasses
import math

import pytest

from harness.errors import UsageError
from harness.train.stopping import StoppingRule, decide, stop_point

RULE = StoppingRule(patience=3, min_delta=0.01, max_checks=10, check_images=100)


def test_it_goes_on_while_the_score_improves_by_more_than_the_minimum():
    decision = decide([0.5, 0.6, 0.7, 0.8], RULE)
    assert not decision.stop and decision.reason is None and decision.best == 3 and decision.since == 0


def test_a_plateau_stops_after_patience_checks_without_an_improvement_above_the_delta():
    scores = [0.5, 0.7, 0.705, 0.709, 0.69]  # 0.705 and 0.709 improve on 0.7 by less than 0.01
    assert not decide(scores[:4], RULE).stop
    decision = decide(scores, RULE)
    assert decision.stop and decision.reason == "plateau" and decision.converged
    assert decision.best == 3  # the best score is kept, though its gain was below the delta
    assert decision.since == 3


def test_a_slow_creep_of_small_gains_ends_in_a_plateau_not_at_the_cap():
    scores = [0.5 + 0.003 * i for i in range(8)]  # +0.003 a check: less than the delta in patience checks
    index, decision = stop_point(scores, RULE)
    assert decision.reason == "plateau" and index == 3


def test_the_cap_while_still_improving_is_not_converged():
    scores = [0.1 * i for i in range(11)]
    decision = decide(scores, RULE)
    assert decision.stop and decision.reason == "cap" and not decision.converged and decision.best == 10


def test_plateau_wins_over_the_cap_when_both_hold():
    scores = [0.5] + [0.9] + [0.9] * 9  # 10 checks, the last 9 without an improvement
    assert decide(scores, RULE).reason == "plateau"


def test_the_starting_weights_are_a_candidate():
    decision = decide([0.8, 0.6, 0.7, 0.75], RULE)
    assert decision.stop and decision.reason == "plateau" and decision.best == 0


def test_a_non_finite_score_is_divergence_and_keeps_the_best_before_it():
    decision = decide([0.5, 0.7, math.nan], RULE)
    assert decision.stop and decision.reason == "diverged" and not decision.converged and decision.best == 1
    assert decide([math.inf], RULE).reason == "diverged"


def test_ties_keep_the_first_best_check():
    assert decide([0.5, 0.8, 0.8, 0.8, 0.8], RULE).best == 1


def test_stop_point_on_a_log_that_ends_first_says_cap():
    index, decision = stop_point([0.1, 0.2, 0.3], RULE)
    assert index == 2 and decision.reason == "cap" and not decision.converged


def test_checks_are_whole_epochs_of_at_least_the_rule_s_images():
    assert RULE.interval_epochs(40) == 3  # 120 images >= 100
    assert RULE.interval_epochs(100) == 1 and RULE.interval_epochs(5000) == 1
    assert RULE.interval_epochs(0) == 100


@pytest.mark.parametrize("fields", [{"patience": 0}, {"max_checks": 0}, {"min_delta": -0.1}, {"check_images": 0},
                                    {"reductions": -1}, {"reduce_factor": 1.0}, {"reduce_factor": 0.0}])
def test_a_rule_that_cannot_stop_is_refused(fields):
    with pytest.raises(UsageError, match="stopping rule"):
        StoppingRule(**fields)


def test_decide_needs_the_starting_score():
    with pytest.raises(ValueError):
        decide([], RULE)


def test_patience_grows_with_the_checks_the_last_improvement_took():
    rule = StoppingRule(patience=2, min_delta=0.0, patience_fraction=0.5, max_checks=100)
    rising = [0.05 * i for i in range(11)]  # improves until check 10: 5 checks without one are needed
    assert not decide(rising + [0.5] * 4, rule).stop
    decision = decide(rising + [0.5] * 5, rule)
    assert decision.stop and decision.reason == "plateau" and decision.needed == 5 and decision.best == 10
    assert decide([0.5, 0.6, 0.6, 0.6], rule).reason == "plateau"  # an early best: the minimum patience


REDUCING = StoppingRule(patience=2, min_delta=0.01, patience_fraction=0.0, max_checks=20, reductions=2)


def test_a_plateau_with_reductions_left_lowers_the_rate_instead_of_stopping():
    decision = decide([0.5, 0.7, 0.7, 0.7], REDUCING)
    assert not decision.stop and decision.reduce and decision.reduced_at == (3,) and decision.since == 0
    assert not decide([0.5, 0.7, 0.7, 0.7, 0.7], REDUCING).reduce  # the next check goes on in the new phase
    twice = decide([0.5, 0.7, 0.7, 0.7, 0.7, 0.7], REDUCING)
    assert twice.reduce and twice.reduced_at == (3, 5)
    final = decide([0.5, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7], REDUCING)
    assert final.stop and final.reason == "plateau" and final.reduced_at == (3, 5) and final.best == 1


def test_after_a_reduction_an_improvement_must_beat_the_last_improvement_by_the_delta():
    creep = [0.5, 0.7, 0.7, 0.7, 0.705, 0.709, 0.709, 0.709, 0.709]  # below 0.7 + 0.01 after the reduction
    index, decision = stop_point(creep, REDUCING)
    assert decision.reduced_at == (3, 5) and index == 7 and decision.reason == "plateau" and decision.best == 5
    gain = [0.5, 0.7, 0.7, 0.7, 0.72, 0.72]  # 0.72 improves: its phase goes on past check 5
    assert decide(gain, REDUCING).reduced_at == (3,) and not decide(gain, REDUCING).stop


def test_a_phase_s_patience_counts_the_checks_since_the_phase_began():
    rule = StoppingRule(patience=2, min_delta=0.0, patience_fraction=0.5, max_checks=100, reductions=1)
    rising = [0.01 * i for i in range(21)]  # phase 1 improves to check 20: 10 checks without one end it
    lowered = decide(rising + [0.2] * 10, rule)
    assert lowered.reduce and lowered.reduced_at == (30,)
    # phase 2 improves once, 2 checks in: max(2, 0.5 x 2) = 2 checks without an improvement stop it, not 16
    scores = rising + [0.2] * 10 + [0.2, 0.3, 0.3, 0.3]
    decision = decide(scores, rule)
    assert decision.stop and decision.reason == "plateau" and decision.needed == 2


def test_a_reduction_due_at_the_cap_is_not_converged():
    scores = [0.1 * i for i in range(8)] + [0.7, 0.7]  # a plateau due exactly at check 9, the cap
    decision = decide(scores, dataclasses.replace(REDUCING, max_checks=9))
    assert decision.stop and decision.reason == "cap" and not decision.converged
    assert decision.reduced_at == ()  # the reduction that fell due there never ran: it is not recorded
    # the last phase's plateau exactly at the cap is a plateau: both reductions ran before it
    flat = [0.5, 0.4, 0.4, 0.4]
    rule = StoppingRule(patience=1, min_delta=0.01, patience_fraction=0.0, max_checks=3, reductions=2)
    assert decide(flat, rule).reason == "plateau" and decide(flat, rule).reduced_at == (1, 2)
    assert decide(flat, dataclasses.replace(rule, reductions=3)).reason == "cap"


def test_the_rule_on_the_published_logs(tmp_path):
    """The 27 published validation logs: the rule stops each before its end or at it, never keeps weights
    below the log's start, and for doubleTransferLearn_v1 (best 0.913 LV at epoch 50, last 0.859 at 331)
    keeps weights better than the last epoch's."""
    import pandas as pd

    from tests.conftest import shared
    from harness.stats.training import rule_on_logs
    from harness.train.settings import TrainSettings

    log = pd.read_csv(shared("cmr-seg-tl", "train_log_combined.csv"))
    table = rule_on_logs(log, TrainSettings().rule()).set_index("model")
    assert len(table) == 27
    assert (table["kept_epoch"] <= table["stop_epoch"]).all()
    # 4 logs end while still improving (cap: the log is too short to tell); the other 23 stop on a plateau
    assert (table["reason"] == "cap").sum() == 4 and (table["reason"] == "plateau").sum() == 23
    first = log.groupby("model")[["diceLV", "diceMY"]].first().mean(axis=1)
    assert (table["kept_score"] >= first.reindex(table.index) - 1e-12).all()
    v1 = table.loc["doubleTransferLearn_v1"]
    assert v1["best_diceLV"] == pytest.approx(0.913, abs=0.001) and v1["last_diceLV"] == pytest.approx(0.859, abs=0.001)
    assert v1["kept_diceLV"] > v1["last_diceLV"] + 0.01 and v1["stop_epoch"] < 100
    # over all runs the kept weights are as good as the last on median, with a fraction of the epochs
    assert (table["kept_score"] - table["last_score"]).median() > -0.005
    assert (table["stop_epoch"] + 1).sum() < 0.6 * table["epochs"].sum()


def test_a_spec_written_before_reductions_reads_back_with_the_rule_it_ran():
    """0.9.0 specs have no "reductions": their runs stopped at the first plateau, and read back they must say so
    (the report's methods and the convergence verdicts replay the rule from the spec)."""
    from harness.train.settings import TrainSettings

    old = {k: v for k, v in TrainSettings().to_dict().items() if k not in ("reductions", "reduce_factor")}
    assert TrainSettings.from_dict(old).reductions == 0
    assert TrainSettings.from_dict(TrainSettings().to_dict()).reductions == TrainSettings().reductions == 2
    flat = [0.5] + [0.6] * 12
    assert decide(flat, TrainSettings.from_dict(old).rule()).reason == "plateau"
    now = decide(flat, TrainSettings().rule())  # patience 5 from check 1: the rate lowered at 6 and 11, going on
    assert not now.stop and now.reduced_at == (6, 11)
