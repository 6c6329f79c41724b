"""Studies run until decided (issue 21): group-sequential boundaries against published values, error rates and
expected runs by simulation, the decisions of a look with planted effects, and rounds that survive a resume."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness import stats
from harness.errors import UsageError
from harness.rounds import Design, Rounds, look, runs_saved
from harness.stats import sequential as gs
from tests.simulation import difference_blocks, sequential_trials, study


# -- the boundaries -----------------------------------------------------------------------------------------------

def test_boundaries_are_the_published_lan_demets_values():
    # Jennison & Turnbull (2000), table 7.6 / gsDesign: one-sided alpha 0.025, equally spaced looks
    assert gs.boundaries([1.0], 0.025) == pytest.approx([1.95996], abs=1e-4)
    assert gs.boundaries([0.5, 1.0], 0.025) == pytest.approx([2.9626, 1.9686], abs=2e-3)
    assert gs.boundaries([0.25, 0.5, 0.75, 1.0], 0.025) == pytest.approx([4.3326, 2.9631, 2.3590, 2.0141], abs=2e-3)
    assert gs.boundaries([0.25, 0.5, 0.75, 1.0], 0.025, "pocock") == pytest.approx([2.3683, 2.3675, 2.3582, 2.3500],
                                                                                   abs=2e-3)


@pytest.mark.parametrize("fractions", [[0.3, 1.0], [0.2, 0.41, 0.62, 0.8, 1.0]])
@pytest.mark.parametrize("kind", gs.SPENDING)
def test_the_boundaries_hold_alpha_on_simulated_brownian_paths(fractions, kind):
    """Independent of the integration that found them: the score S(t) is Brownian motion with drift; sample it at
    the looks and count the paths that cross (300,000 paths: alpha to +-0.0008)."""
    bounds = np.array(gs.boundaries(fractions, 0.05, kind))
    t = np.array(fractions)
    rng = np.random.default_rng(5)
    for drift, expected in ((0.0, 0.05), (gs.sps.norm.isf(0.05) + gs.sps.norm.isf(0.2), None)):
        steps = rng.normal(drift * np.diff(t, prepend=0), np.sqrt(np.diff(t, prepend=0)), (300_000, len(t)))
        z = np.cumsum(steps, axis=1) / np.sqrt(t)
        rate = np.mean((z >= bounds).any(axis=1))
        if expected is not None:
            assert rate == pytest.approx(expected, abs=0.0025)
        else:  # a fixed design's 80% power: the sequential one has a little less, never more
            assert 0.7 < rate < 0.8 + 0.0025  # Pocock-like spending costs the most
            assert gs.crossing_probability(fractions, list(bounds), drift) == pytest.approx(rate, abs=0.004)


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


def test_repeated_p_values_have_known_answers():
    # one look at the maximum: the fixed design's two-sided p, whichever the sign
    assert gs.repeated_p([1.96], [1.0]) == pytest.approx(0.05, rel=2e-3)
    assert gs.repeated_p([-2.576], [1.0]) == pytest.approx(0.01, rel=2e-3)
    # one early look: O'Brien-Fleming-like spending in closed form, spent(0.5, p / 2) = P(Z > |z|) on one side
    z = 2.8
    assert gs.repeated_p([z], [0.5]) == pytest.approx(4 * gs.sps.norm.sf(np.sqrt(0.5) * gs.sps.norm.isf(
        gs.sps.norm.sf(z) / 2)), rel=1e-9)
    assert gs.repeated_p([8.0], [0.1]) == pytest.approx(4 * gs.sps.norm.sf(np.sqrt(0.1) * gs.sps.norm.isf(
        gs.sps.norm.sf(8.0) / 2)), rel=1e-9)  # an early look with a huge effect: exact, not a tabulation's floor
    # several looks: the smallest level at which some look crossed, as root-finding on the boundaries gives it
    fractions, zs = [0.2, 0.4, 0.6], [1.0, 2.5, 2.9]
    exact = gs.optimize.brentq(lambda level: gs.boundaries(fractions, level / 2)[-1] - 2.9, 1e-6, 0.9, xtol=1e-10)
    assert gs.repeated_p(zs, fractions) == pytest.approx(exact, rel=5e-3)
    assert gs.repeated_p(zs, fractions) > 2 * gs.sps.norm.sf(2.9)  # never the naive p of the last look
    assert gs.repeated_p([np.nan, 2.9], [0.2, 0.4]) == gs.repeated_p([-1.0, 2.9], [0.2, 0.4])
    assert np.isnan(gs.repeated_p([np.nan], [0.5])) and gs.repeated_p([60.0], [1.0]) == pytest.approx(1e-10)
    # a larger z never gives a larger p, up to an infinite one (where the boundary spends nothing, conservative)
    later = [gs.repeated_p([0.0, z], [0.2, 0.4]) for z in (2.0, 3.0, 5.0, 8.0, 12.0, 39.0, 41.0, np.inf)]
    assert all(b <= a for a, b in zip(later, later[1:])) and later[-1] > 1e-10


def test_repeated_p_values_hold_alpha_whatever_stops_the_rounds():
    """Two equal strategies looked at over 5 rounds of 2 seeds: a repeated p below 0.05 at any round (the worst any
    stopping rule can do) happens at most 5% of the time; the fixed-design p taken where a data-driven rule stops
    (at the first round it is below 0.05) 3 times as often."""
    from harness.stats.inference import t_statistics

    rng = np.random.default_rng(31)
    blocks = difference_blocks(rng, 6000, 0.0, seeds=10, sd_run=0.03)
    looks = [t_statistics([b[..., :s] for b in blocks], 0.0) for s in (2, 4, 6, 8, 10)]
    fixed = np.stack([x["p"] for x in looks], axis=1)
    z = gs.sps.norm.isf(fixed / 2)
    fractions = [0.2, 0.4, 0.6, 0.8, 1.0]
    repeated = np.array([gs.repeated_p(list(row), fractions) for row in z])
    assert 0.03 <= np.mean(repeated < 0.05) <= 0.055
    assert np.mean((fixed < 0.05).any(axis=1)) > 0.1  # what the naive p would report under that stopping rule
    # stopping earlier (here: after round 3) can only make a repeated p larger
    early = np.array([gs.repeated_p(list(row[:3]), fractions[:3]) for row in z[:500]])
    assert (early >= repeated[:500] - 1e-12).all()


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
    for key, question in q.items():  # the repeated CI's lower end is above -margin exactly where it was shown
        if question.get("repeated_lower") is not None:
            assert (question["repeated_lower"] > -0.02) == (question["decision"] == "shown"), key


def test_comparisons_of_strategies_are_questions_of_the_rounds():
    """A planted difference between two strategies at one budget is shown (Holm over the metric's comparisons);
    equal ones are not; an open comparison keeps both configurations in the next round; a decided one is not looked
    at again."""
    from harness.rounds import pair_key

    effects = {("a", 10): 0.0, ("a", 5): -0.015, ("b", 10): 0.0, ("b", 5): -0.015, ("c", 10): 0.08, ("c", 5): -0.015}
    rounds = Rounds(Design(reference="a@10", margin=0.02, alpha=0.05, per_round=4, max_seeds=12))
    scores = _scores(effects, 12, rng_seed=5)
    first = look(scores[scores["seed"] < 4], rounds, 4, final=False)["questions"]
    shown = {k for k, q in first.items() if q.get("kind") == "difference" and q["decision"] == "shown"}
    assert {pair_key("a", "c", 10, "dice_lv"), pair_key("b", "c", 10, "dice_lv")} <= shown  # 0.08 apart
    assert pair_key("a", "b", 10, "dice_lv") not in shown and pair_key("a", "b", 5, "dice_lv") not in shown
    q = first[pair_key("a", "c", 10, "dice_lv")]
    assert q["p_holm"] < 0.05 and q["p_holm"] >= q["p_repeated"] and q["fraction"] == pytest.approx(4 / 12, abs=1e-4)
    assert q["p_repeated"] == pytest.approx(gs.repeated_p([q["z"]], [q["fraction"]]), rel=1e-9)
    record = look(scores[scores["seed"] < 4], rounds, 4, final=False)
    for key, question in record["questions"].items():  # an open comparison keeps both sides in the next round
        if question.get("kind") == "difference" and question["decision"] == "open":
            assert [question["strategy"], question["n"]] in record["needs"]
            assert [question["against"], question["n"]] in record["needs"]
    futile = [q for q in record["questions"].values() if q.get("kind") == "difference" and q["decision"] == "futile"]
    assert futile and all(q["conditional_power"] < 0.05 and q["p_holm"] >= 0.05 for q in futile)
    assert all(abs(q["difference"]) < 0.03 for q in futile)  # only comparisons of (nearly) equal strategies
    rounds.rounds.append({"round": 1, **record})
    second = look(scores[scores["seed"] < 8], rounds, 8, final=False)["questions"]
    assert not shown & set(second)  # decided in round 1: not looked at again
    looked = {k: q for k, q in second.items() if q.get("kind") == "difference"}
    for key, question in looked.items():
        if question.get("z") is not None:
            assert question["looks"] == 2 and question["fraction"] == pytest.approx(8 / 12, abs=1e-4)
    # Holm in round 2 runs over every comparison of the metric: those decided in round 1 with their last p
    keys = [k for k in record["questions"] if record["questions"][k].get("kind") == "difference"
            and k.endswith(":dice_lv")]
    p = [looked[k]["p_repeated"] if k in looked else record["questions"][k]["p_repeated"] for k in keys]
    expected = dict(zip(keys, stats.holm(p)))
    for key in keys:
        if key in looked:
            assert looked[key]["p_holm"] == pytest.approx(expected[key], rel=1e-9), key


def test_a_decided_question_is_not_looked_at_again_and_only_open_ones_get_seeds():
    effects = {("a", 10): 0.0, ("a", 5): 0.1, ("a", 2): -0.015}  # a@5 far above; a@2 just inside the margin
    design = Design(reference="a@10", margin=0.02, alpha=0.05, per_round=4, max_seeds=12)
    rounds = Rounds(design)
    scores = _scores(effects, 12)
    first = look(scores[scores["seed"] < 4], rounds, 4, final=False)
    assert first["questions"]["a@5:dice_lv"]["decision"] == "shown"
    assert first["questions"]["a@2:dice_lv"]["decision"] == "open"
    assert sorted(map(tuple, first["needs"])) == [("a", 2), ("a", 10)]  # a@5 is decided: no more seeds for it
    rounds.rounds.append({"round": 1, **first})
    assert (rounds.seeds_of("a", 2, 2), rounds.seeds_of("a", 5, 2), rounds.seeds_of("a", 10, 2)) == (8, 4, 8)
    second = look(scores[scores["seed"] < 8], rounds, 8, final=False)
    assert set(second["questions"]) == {"a@2:dice_lv", "a@2:dice_my"}  # a@5 was decided: never looked at again
    assert second["questions"]["a@2:dice_lv"]["looks"] == 2 and second["questions"]["a@2:dice_lv"]["fraction"] == 0.6667
    assert second["questions"]["a@2:dice_lv"]["decision"] in ("shown", "futile", "open")
    rounds.rounds.append({"round": 2, **second})
    decided = {k for r in rounds.rounds for k, q in r["questions"].items() if q["decision"] != "open"}
    third = look(scores, rounds, 12, final=True)  # the maximum: nothing stays open, nothing decided is redone
    assert not decided & set(third["questions"]) and third["needs"] == []
    assert all(q["decision"] in ("shown", "not shown") for q in third["questions"].values())


def test_comparisons_of_a_sequential_study_are_looked_at_on_the_seeds_each_round_had():
    from harness.repeated import RoundLooks, repeated_comparisons

    effects = {("a", 10): 0.0, ("a", 5): 0.1, ("a", 2): -0.015, ("b", 10): 0.05, ("b", 5): 0.1, ("b", 2): -0.015,
               ("base", 0): -0.2}
    rounds = Rounds(Design(reference="a@10", margin=0.02, alpha=0.05, per_round=4, max_seeds=12))
    everything = _scores(effects, 12, rng_seed=3)
    for r, seeds in enumerate((4, 8, 12), start=1):  # run the rounds as run --until-decided would
        had = everything[[s_ < (rounds.seeds_of(k, n, r) if k != "base" else 1)
                          for k, n, s_ in zip(everything["strategy"], everything["n"], everything["seed"])]]
        rounds.rounds.append({"round": r, **look(had, rounds, seeds, final=seeds == 12)})
    assert rounds.seeds_of("a", 5, 3) == 4  # a@5 was shown in round 1 and got no more seeds
    looks = RoundLooks(had, rounds, first_seed=0)
    fixed = pd.concat([stats.compare_strategies(had, m) for m in stats.METRICS], ignore_index=True)
    table = repeated_comparisons(fixed, looks, lambda r: ((r.a, r.n), (r.b, r.n)))
    for (_, f), (_, r) in zip(fixed.iterrows(), table.iterrows()):
        if r.n == 5:  # one look, on a@5's 4 seeds at fraction 4 / 12: the closed form of the first look
            assert (r.looks, r.seeds) == (1, 4)
            assert r.p == pytest.approx(min(1.0, 4 * gs.sps.norm.sf(np.sqrt(1 / 3) * gs.sps.norm.isf(f.p / 4))), rel=1e-6)
            assert r.p > f.p and r.ci_high - r.ci_low > f.ci_high - f.ci_low
        assert r.p >= f.p * (1 - 1e-9) or r.looks > 1
    for r in table.itertuples():  # a look per round that gave the pair more paired seeds, at the seeds both had
        paired = [min(rounds.seeds_of("a", r.n, k), rounds.seeds_of("b", r.n, k)) for k in (1, 2, 3)]
        assert (r.looks, r.seeds) == (len(set(paired)), paired[-1])
    for metric, part in table.groupby("metric"):  # Holm within each metric, as the tables say
        assert part["p_holm"].to_numpy() == pytest.approx(stats.holm(part["p"]))
    alien = repeated_comparisons(fixed.assign(a="c"), looks, lambda r: ((r.a, r.n), (r.b, r.n)))
    assert alien["p"].isna().all() and (alien["reason"] == "not in the study's rounds record: no sequential "
                                                            "test").all()
    versus = repeated_comparisons(stats.compare_to_base(had, "dice_lv"), looks, lambda r: ((r.strategy, r.n), (r.base, 0)))
    for r in versus.itertuples():  # the base model has no seeds: a look whenever the strategy got more
        assert r.looks == len({rounds.seeds_of(r.strategy, r.n, k) for k in (1, 2, 3)}) and r.p_holm < 1e-4


def test_a_design_cannot_change_half_way_and_a_round_is_recorded_once(tmp_path):
    design = Design(reference="a@10", margin=0.02, alpha=0.05, per_round=2, max_seeds=10)
    Rounds(design).record(tmp_path, {"round": 1, "seeds": 2, "questions": {}, "needs": [["a", 2]]})
    again = Rounds(design).record(tmp_path, {"round": 1, "seeds": 2, "questions": {}, "needs": []})
    assert again.rounds[0]["needs"] == [["a", 2]]  # the first record of a round stands
    other = tmp_path / "other"  # two commands start one study with different designs: the second stops at once
    Rounds(design).fix_design(other)
    with pytest.raises(UsageError, match="decided with margin 0.02 \\(now 0.05\\)"):
        Rounds(Design(**{**design.__dict__, "margin": 0.05})).fix_design(other)
    assert Rounds(design).fix_design(other).rounds == []
    assert Rounds.read(tmp_path, design).rounds == json.loads((tmp_path / "rounds.json").read_text())["rounds"]
    with pytest.raises(UsageError, match="decided with margin 0.02 \\(now 0.03\\)"):
        Rounds.read(tmp_path, Design(reference="a@10", margin=0.03, alpha=0.05, per_round=2, max_seeds=10))
    for bad, message in ((dict(per_round=1), "at least 2"), (dict(max_seeds=1), "below the --seeds"),
                         (dict(spending="linear"), "--spending")):
        with pytest.raises(UsageError, match=message):
            Design(**{**design.__dict__, **bad}).check()


def test_runs_saved_against_the_fixed_design_with_the_same_power():
    design = Design(reference="a@10", margin=0.02, alpha=0.05, per_round=2, max_seeds=10)
    # subject-dominated variance: Var(10) is 70% of Var(2); a fixed design with few seeds has nearly its power
    # no gain from seeds at all (the subjects are all the variance): one seed has the same power
    flat = runs_saved({"seeds": 2, "se": 0.006, "fraction_estimated": 1.0}, design)
    assert flat["seeds_used"] == 2 and flat["seeds_fixed"] == 10 and flat["seeds_same_power"] == 1
    # all variance from runs (Var ~ 1/seeds): the sequential design loses only a little power, so a fixed design
    # needs about the maximum for the same power
    runs = runs_saved({"seeds": 2, "se": 0.02, "fraction_estimated": 0.2}, design)
    assert 8 <= runs["seeds_same_power"] <= 10 and 0.6 < runs["power"] < 0.75


# -- a study in rounds ----------------------------------------------------------------------------------------------

def _study_args(out, cache):
    from tests.conftest import TINY_RUN

    args = [a for a in TINY_RUN if a not in ("--folds", "1")] + ["--folds", "3"]
    args[args.index("--target-subjects") + 1] = "9"
    return ["run", "--strategy", "ed_es,subject_random", "--n", "1,3", "--out", str(out), "--cache-dir", str(cache),
            "--until-decided", "--max-seeds", "4", "--reference", "ed_es@3", "--quiet", *args]


def _open_first_round(monkeypatch):
    """Every question stays open at the first look (tiny models decide nothing worth testing); real decisions
    after. Returns the list of looks taken (round, number of questions)."""
    from harness import rounds as rounds_module

    taken = []
    real = rounds_module.look

    def forced(scores, rounds, seeds, final):
        record = real(scores, rounds, seeds, final)
        taken.append((len(rounds.rounds) + 1, len(record["questions"])))
        if not rounds.rounds:  # round 1: ed_es decided, subject_random open
            for q in record["questions"].values():
                q["decision"] = "shown" if q["strategy"] == "ed_es" else "open"
            record["needs"] = [["ed_es", 3], ["subject_random", 1], ["subject_random", 3]]
        return record

    monkeypatch.setattr("harness.runner.look", forced)
    return taken


@pytest.mark.slow
def test_rounds_add_seeds_only_where_open_and_a_killed_study_resumes_without_deciding_again(
        monkeypatch, tmp_path, cache, capsys):
    from harness.cli import main
    from harness.executors.inprocess import InProcessExecutor

    out = tmp_path / "s"
    taken = _open_first_round(monkeypatch)
    real_run = InProcessExecutor.run
    calls = []

    def killed_in_round_two(self, context, specs, reporter, retry_failed=False):
        assert (out / "rounds" / "design.json").exists()  # the design is fixed before any run
        calls.append(len(specs))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the command dies between rounds, round 2's runs not started
        return real_run(self, context, specs, reporter, retry_failed)

    monkeypatch.setattr(InProcessExecutor, "run", killed_in_round_two)
    assert main(_study_args(out, cache)) == 130  # interrupted
    recorded = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in recorded["rounds"]] == [1] and taken == [(1, 10)]  # 6 steps, 4 pairs
    assert recorded["design"]["max_seeds"] == 4 and recorded["design"]["reference"] == "ed_es@3"
    first = recorded["rounds"][0]
    monkeypatch.setattr(InProcessExecutor, "run", real_run)
    monkeypatch.setattr(InProcessExecutor, "detaches", True)  # as SLURM --detach: the round must still be decided
    assert main(_study_args(out, cache)) == 0
    after = json.loads((out / "rounds.json").read_text())
    assert after["rounds"][0] == first  # round 1 was not decided again
    assert taken == [(1, 10), (2, 4)] and after["rounds"][1]["seeds"] == 4  # ed_es was decided in round 1
    assert all(q["decision"] in ("shown", "not shown", "not tested") for q in after["rounds"][1]["questions"].values())
    assert {q["strategy"] for q in after["rounds"][1]["questions"].values()} == {"subject_random"}
    names = [p.name for p in (out / "runs").iterdir() if not p.name.startswith("base")]
    seeds = {}
    for name in names:
        strategy, _, n, seed = name.split("__")[:4]
        seeds.setdefault((strategy, n), set()).add(seed)
    # only the open configurations and the reference got round 2's seeds
    assert seeds == {("ed_es", "n1"): {"s0", "s1"}, ("ed_es", "n3"): {"s0", "s1", "s2", "s3"},
                     ("subject_random", "n1"): {"s0", "s1", "s2", "s3"},
                     ("subject_random", "n3"): {"s0", "s1", "s2", "s3"}}
    assert len(names) == (2 + 3 * 4) * 3
    study = json.loads((out / "study.json").read_text())
    assert study["until_decided"]["max_seeds"] == 4 and len(study["runs"]) == len(names) + 3
    report = (out / "report.md").read_text()  # verdicts are the recorded decisions, worded as sequential ones
    assert "## Sequential decisions (run --until-decided)" in report and "seeds were added in rounds of 2" in report
    assert "each of 2 to 4 seeds (added in rounds" in report
    decided = {(q["strategy"], q["n"], q["metric"]): q["decision"] for r in after["rounds"]
               for q in r["questions"].values() if q.get("kind") != "difference"}
    pairs = [q for r in after["rounds"] for q in r["questions"].values() if q.get("kind") == "difference"]
    assert len(pairs) == 4 and all(q["decision"] == "shown" for q in pairs)  # forced in round 1, never again
    assert "| ed_es vs subject_random | 3 | LV | shown | 1 |" in report.replace("ed_es (oracle)", "ed_es")
    for (strategy, n, metric), decision in decided.items():
        name = "ed_es (oracle)" if strategy == "ed_es" else strategy
        row = next(line for line in report.splitlines() if line.startswith(f"| {name} | {n} | ed_es (oracle)@3 | "
                                                                          f"{'LV' if metric == 'dice_lv' else 'MY'} |"))
        assert ("| non-inferior |" in row) == (decision == "shown"), row
    # comparisons carry repeated p-values: ed_es (oracle)@1 stopped after round 1, so its pair with
    # subject_random@1 had one look at fraction 2 / 4 on the data at the end (closed form)
    from harness.analysis import analyse

    analysis = analyse(out)
    assert "| repeated 95% CI |" in report and "repeated p (Holm)" in report
    for r in analysis.strategies.itertuples():
        fixed = stats.compare_strategies(analysis.subjects, r.metric).set_index("n").loc[r.n]
        # both comparisons were decided (forced) in round 1: their looks end there, at 2 seeds, as the decision did
        assert r.looks == 1 and r.seeds == 2
        if r.n == 1:
            assert r.p == pytest.approx(min(1.0, 4 * gs.sps.norm.sf(np.sqrt(0.5) * gs.sps.norm.isf(fixed.p / 4))),
                                        rel=5e-3)
            assert r.p >= fixed.p and r.ci_high - r.ci_low > fixed.ci_high - fixed.ci_low
    capsys.readouterr()
    assert main(_study_args(out, cache)) == 0  # a third command: nothing to run, nothing decided again
    assert taken == [(1, 10), (2, 4)] and json.loads((out / "rounds.json").read_text()) == after
    assert "0 runs done" in capsys.readouterr().err


@pytest.mark.slow
def test_a_round_another_command_decided_first_stands_and_a_changed_design_is_refused(
        monkeypatch, tmp_path, cache, capsys):
    from harness import rounds as rounds_module
    from harness.cli import main

    out = tmp_path / "s"
    real = rounds_module.look

    def raced(scores, rounds, seeds, final):
        record = real(scores, rounds, seeds, final)
        # another command finished the same round a moment earlier and recorded it: its record must stand
        theirs = {"round": 1, **record, "questions": {k: {**q, "decision": "not shown", "why": "theirs"}
                                                      for k, q in record["questions"].items()}, "needs": []}
        rounds_module.Rounds(rounds.design).record(out, theirs)
        return record

    monkeypatch.setattr("harness.runner.look", raced)
    assert main(_study_args(out, cache)) == 0
    recorded = json.loads((out / "rounds.json").read_text())
    assert len(recorded["rounds"]) == 1
    assert {q["why"] for q in recorded["rounds"][0]["questions"].values()} == {"theirs"}
    capsys.readouterr()
    changed = _study_args(out, cache) + ["--margin", "0.05"]
    assert main(changed) == 2
    assert "decided with margin 0.02 (now 0.05)" in capsys.readouterr().err
    regridded = _study_args(out, cache)
    regridded[regridded.index("--n") + 1] = "1,2,3"
    assert main(regridded) == 2
    assert "another grid (strategies, parameters, budgets, inits or folds)" in capsys.readouterr().err
    wrong = _study_args(out, cache)
    wrong[wrong.index("--reference") + 1] = "ed_es@7"
    assert main(wrong) == 2 and "is not one of the study's budgets (1, 3)" in capsys.readouterr().err
    # a report asking another margin does not pass off fixed-design tests as the sequential verdicts
    from harness.cli import main as cli

    assert cli(["report", str(out), "--margin", "0.05", "--reference", "ed_es@3"]) == 0
    assert "This study was run until decided under margin 0.02" in (out / "report.md").read_text()


def test_sequential_flags_need_until_decided(capsys):
    from harness.cli import main

    assert main(["run", "--max-seeds", "6"]) == 2
    assert "--max-seeds and --spending belong to --until-decided" in capsys.readouterr().err
    assert main(["run", "--until-decided", "--seeds", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
