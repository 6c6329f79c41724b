"""The guideline: plain sentences that answer "how much target data is enough", each carrying its effect,
interval, p-value and margin, or saying why there is no answer.

Every number comes from harness.stats (through the Analysis); this module only words it. Rules:
- below MIN_SUBJECTS test subjects no verdict is issued (no test over subjects can be trusted there);
- with one seed the caveat sits in the sentence, not only in a note;
- a row without a verdict says why (too few subjects, no variance, the sequence stopped above it).
"""
from __future__ import annotations

import contextlib
import contextvars

import numpy as np
import pandas as pd

from harness import stats

METRIC_NAMES = {"dice_lv": "LV", "dice_my": "MY"}
#: Below 6 test subjects a sign-flip or rank test cannot reach two-sided p < 0.05 (2 / 2^5 = 0.0625): any
#: verdict would rest on the t-test's normality, which so few values cannot check. No guideline then.
MIN_SUBJECTS = 6
ONE_SEED = ("one seed per configuration, so the interval leaves out training-run noise and the verdict holds "
            "for these runs only")


def p_text(p: float) -> str:
    if p != p:
        return "n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def ci_text(low: float, high: float, digits: int = 3) -> str:
    return "n/a" if low != low or high != high else f"{low:.{digits}f} to {high:.{digits}f}"


def signed(x: float) -> str:
    return "n/a" if x != x else f"{x:+.3f}"


#: What a budget n counts in the study being written: "subjects" (n = ...) or "minutes" of expert time.
BUDGET_UNIT: contextvars.ContextVar[str] = contextvars.ContextVar("budget_unit", default="subjects")


@contextlib.contextmanager
def budget_unit(settings: dict):
    """Word budgets as the study counts them (expert minutes with --budget-minutes) within this block."""
    token = BUDGET_UNIT.set("minutes" if settings.get("budget_minutes") else "subjects")
    try:
        yield
    finally:
        BUDGET_UNIT.reset(token)


def unit_word() -> str:
    return "expert minutes" if BUDGET_UNIT.get() == "minutes" else "subjects"


def n_text(n: int) -> str:
    """'n = 5', or '30 expert minutes' in a study whose budgets are expert minutes."""
    return f"{n} expert minutes" if BUDGET_UNIT.get() == "minutes" else f"n = {n}"


def config_text(strategy: str, n: int) -> str:
    if n == 0:
        return strategy
    return f"{strategy} at {n} expert minutes" if BUDGET_UNIT.get() == "minutes" else f"{strategy} at n = {n}"


def level_text(level: float) -> str:
    return f"{round(100 * level):d}% CI"


def ni_clause(row, named: bool = False) -> str:
    """'difference +0.006, 90% CI -0.03 to 0.05, p = 0.051', or the reason there is no test."""
    name = f"{METRIC_NAMES[row.metric]} " if named else ""
    if not row.tested:
        return f"{name}{row.reason}"
    if getattr(row, "sequential", False) is True:  # run --until-decided: repeated CI and stage-wise p
        p = f"sequential {p_text(row.p)}" if row.p == row.p else "no sequential p (not shown)"
        return (f"{name}difference {signed(row.difference)}, repeated {level_text(row.ci_level)} "
                f"{ci_text(row.ci_low, row.ci_high)}, {p}")
    return (f"{name}difference {signed(row.difference)}, {level_text(row.ci_level)} "
            f"{ci_text(row.ci_low, row.ci_high)}, {p_text(row.p)}")


def _at(n: int) -> str:
    return "" if n == 0 else f" at {n} expert minutes" if BUDGET_UNIT.get() == "minutes" else f" at n = {n}"


def metric_outcome(part: pd.DataFrame, metric: str) -> str:
    """Where one metric's fixed sequence (largest n first) went: how far down it was non-inferior, and
    where and why it stopped."""
    name = METRIC_NAMES[metric]
    rows = part[part["metric"] == metric].sort_values("n", ascending=False)
    if not len(rows):
        return f"{name} has no scores"
    passed = rows[rows["non_inferior"]]
    stop = next((r for r in rows.itertuples() if not r.non_inferior), None)
    said = []
    if len(passed):
        last = next(passed.tail(1).itertuples())
        said.append(f"{name} was non-inferior{'' if last.n == 0 else f' down to {n_text(last.n)}'} ({ni_clause(last)})")
    if stop is not None and stop.tested:
        where = f"not{_at(stop.n)}" if said else f"{name} was not shown non-inferior{_at(stop.n)}"
        said.append(f"{where} ({ni_clause(stop)})")
    elif stop is not None:
        said.append(f"{'' if said else name + ' '}could not be tested{_at(stop.n)}: {stop.reason}")
    return ", ".join(said)


def _below(part: pd.DataFrame, metric: str, n: int) -> str:
    """Where one metric's sequence stopped below the budget the guideline names."""
    name = METRIC_NAMES[metric]
    rows = part[(part["metric"] == metric) & (part["n"] < n)].sort_values("n", ascending=False)
    stop = next((r for r in rows.itertuples() if not r.non_inferior), None)
    if stop is None:
        return f"{name} was non-inferior down to {n_text(int(rows['n'].min()))}"
    if stop.tested:
        return f"{name} not at {n_text(stop.n)} ({ni_clause(stop)})"
    return f"{name} could not be tested at {n_text(stop.n)}: {stop.reason}"


def _design(chosen: pd.DataFrame, seeds: int) -> str:
    if "sequential" in chosen and chosen["sequential"].fillna(False).astype(bool).any():
        return (f"group-sequential one-sided t-tests at α = {chosen['alpha'].iloc[0]:g} on "
                f"{int(chosen['subjects'].min())} test subjects, seeds added in rounds until decided (see the "
                "sequential decisions), fixed sequence from the largest n")
    return (f"one-sided t-test at α = {chosen['alpha'].iloc[0]:g} on {int(chosen['subjects'].min())} test subjects "
            f"and {seeds} seed(s), fixed sequence from the largest n")


def _strategy_sentence(row, part: pd.DataFrame, a) -> str:
    margin = a.options.margin
    ref_strategy, _, ref_n = row.reference.partition("@")
    ref_text = config_text(ref_strategy, int(ref_n))
    caveat = f" Caveat: {ONE_SEED}." if a.seeds <= 1 else ""
    if row.n_enough is not None and row.n_enough == row.n_enough:
        n = int(row.n_enough)
        chosen = part[part["n"] == n]
        lv = a.summary[a.summary["metric"] == "dice_lv"].set_index(["strategy", "n"])
        count = lv["labelled_images"].get((row.strategy, n), float("nan"))
        minutes = lv["expert_minutes"].get((row.strategy, n), float("nan")) if "expert_minutes" in lv else float("nan")
        cost = [f"{count:.0f} labelled images"] if count == count else []
        cost += [f"{minutes:.0f} expert minutes of contouring"] if minutes == minutes else []
        cost += [validation_labels(a)] if validation_labels(a) else []
        what = f"**{config_text(row.strategy, n)}**" + (f" ({', '.join(cost)})" if cost else "")
        below = [_below(part, m, n) for m in stats.METRICS if (part[(part["metric"] == m) & (part["n"] < n)]["n"]).any()]
        smaller = f" Smaller budgets: {'; '.join(below)}." if below else ""
        return (f"{what} is non-inferior to {ref_text} on both LV and MY (" +
                "; ".join(ni_clause(r, named=True) for r in chosen.itertuples()) +
                f"; margin {margin:g}; {_design(chosen, a.seeds)}).{smaller}{caveat}"
                + unconverged_note(a, [(row.strategy, n), (ref_strategy, int(ref_n))]))
    outcomes = "; ".join(metric_outcome(part, m) for m in stats.METRICS if (part["metric"] == m).any())
    if not part["tested"].any():
        return f"**{row.strategy}**: non-inferiority to {ref_text} could not be tested: {outcomes}."
    if (part["n"] == 0).all():
        return (f"**{row.strategy}** was not shown non-inferior to {ref_text} on both LV and MY within margin "
                f"{margin:g}: {outcomes}.{caveat}")
    budgets = "No budget" + (f" below {n_text(int(ref_n))}" if ref_strategy == row.strategy else " studied")
    tested = [(row.strategy, int(n)) for n in part["n"].unique()] + [(ref_strategy, int(ref_n))]
    return (f"**{row.strategy}**: {budgets} was non-inferior to {ref_text} on both LV and MY within margin "
            f"{margin:g}: {outcomes}.{caveat}" + unconverged_note(a, tested))


def validation_labels(a) -> str:
    """'plus 38 validation images (26 expert minutes) of 2 subjects per fold': the labels the checks read, which a
    lab draws too."""
    v = getattr(a, "validation", None) or {}
    if not v:
        return ""
    count = f"{v['images']:.0f}" if v["images_min"] == v["images_max"] else f"about {v['images']:.0f}"
    minutes = f" ({v['minutes']:.0f} expert minutes)" if v["minutes"] == v["minutes"] else ""
    return f"plus {count} validation images{minutes} of {v['subjects']} subjects per fold"


def unconverged_note(a, configs: list[tuple[str, int]]) -> str:
    """' It rests on runs that did not converge (...)': where a sentence's configurations have such runs."""
    bad = getattr(a, "unconverged", None)
    if bad is None or not len(bad):
        return ""
    hit = [r for r in bad.itertuples() if (r.strategy, int(r.n)) in set(configs)]
    if not hit:
        return ""
    each = ", ".join(f"{config_text(r.strategy, int(r.n))} {r.not_converged} of {r.runs}" for r in hit)
    return (f" It rests on runs that did not converge ({each}; see the cautions): longer training may change "
            "it.")


def replication_probability(p: float, alpha: float) -> float:
    """The probability that an exact replication of a one-sided test with p-value ``p`` lands on the same
    side of ``alpha`` (Goodman 1992, flat prior: the replicate's z is normal around the observed z with
    variance 2). 0.5 at p = alpha; it reaches 0.9 only when p is far from alpha."""
    from scipy.stats import norm

    z, z_alpha = norm.isf(min(max(p, 1e-12), 1 - 1e-12)), norm.isf(alpha)
    return float(norm.cdf(abs(z - z_alpha) / np.sqrt(2)))


def _stability(row, part: pd.DataFrame, a) -> str:
    """How likely a replication (new seeds, another machine, more of the same subjects) repeats the verdict
    the strategy sentence gave, metric by metric at the budget it named or where it stopped. Not for sequential
    verdicts: Goodman's formula assumes a fixed-design p."""
    if "sequential" in part and part["sequential"].fillna(False).astype(bool).any():
        return ""
    if row.n_enough is not None and row.n_enough == row.n_enough:
        rows = part[(part["n"] == int(row.n_enough)) & part["tested"]]
    else:  # where each metric's sequence stopped
        stops = [next((r for r in part[part["metric"] == m].sort_values("n", ascending=False).itertuples()
                       if not r.non_inferior and r.tested), None) for m in stats.METRICS]
        rows = pd.DataFrame([r._asdict() for r in stops if r is not None])
    rows = rows[rows["p"].notna()] if len(rows) else rows
    if not len(rows):
        return ""
    probs = [(METRIC_NAMES[r.metric], r.n, replication_probability(r.p, r.alpha)) for r in rows.itertuples()]
    each = "; ".join(f"{name}{_at(n)} {prob:.2f}" for name, n, prob in probs)
    shaky = [name for name, _, prob in probs if prob < 0.8]
    tail = (f" {' and '.join(shaky)} {'is' if len(shaky) == 1 else 'are'} close to α: expect this verdict to change "
            "between seeds and machines (CPU kernels and bf16 differ between processors)." if shaky else "")
    return (f"How stable: an exact replication would repeat this verdict with probability {each} (Goodman's "
            f"replication probability from the one-sided p, flat prior).{tail}")


def _too_few(a) -> str:
    k = a.test_subjects
    return (f"**No guideline from this study**: it has {k} test subject(s), and at least {MIN_SUBJECTS} are needed "
            f"before a verdict over subjects means anything (below {MIN_SUBJECTS} no sign-flip or rank test can reach "
            f"p < 0.05, and a t-test's normality cannot be checked on {k} values). The tables below are descriptive. "
            + ("Analyse results of more test subjects." if a.settings.get("kind") == "table" else
               "Test more subjects: more folds (`--folds`) or a larger dataset."))


def repeated(table: pd.DataFrame) -> str:
    """'repeated ' for a comparison table of a sequential study (repeated p-values and intervals), else ''."""
    return "repeated " if "sequential" in table and table["sequential"].fillna(False).astype(bool).any() else ""


def _versus_base(a, descriptive: bool = False) -> list[str]:
    """Each method against its base model at its smallest n; ``descriptive`` leaves out the p-values."""
    out = []
    table_input = a.settings.get("kind") == "table"
    for strategy, part in a.versus_base.groupby("strategy", sort=True):
        n = int(part["n"].min())
        rows = part[part["n"] == n]
        lead = (f"{strategy} against the base model" if table_input else
                f"Fine-tuning on {config_text(strategy, n)} against the source-only base model")
        clauses = []
        for r in rows.itertuples():
            if r.reason:
                clauses.append(f"{METRIC_NAMES[r.metric]} not tested: {r.reason}")
            else:
                p = "" if descriptive else f", {repeated(a.versus_base)}{p_text(r.p_holm)}"
                clauses.append(f"{METRIC_NAMES[r.metric]} {signed(r.difference)} ({repeated(a.versus_base)}95% CI "
                               f"{ci_text(r.ci_low, r.ci_high)}), "
                               f"better in {r.better} of {r.subjects} test subjects{p}")
        tail = "" if descriptive else " (p Holm-adjusted over all comparisons with the base model)"
        caveat = f" Caveat: {ONE_SEED}." if a.seeds <= 1 and not table_input and not descriptive else ""
        out.append(f"{lead}: " + "; ".join(clauses) + f"{tail}.{caveat}" + unconverged_note(a, [(strategy, n)]))
    return out


def _inter_observer(a) -> list[str]:
    """How close each method comes to two annotators' agreement (results made elsewhere with a second annotation
    scored against the main reference)."""
    inter = getattr(a, "inter_observer", None)
    if inter is None or not len(inter):
        return []
    main = a.settings.get("reference_annotation") or "the main reference"
    agreement = "; ".join(f"{METRIC_NAMES[r.metric]} {r.mean:.3f} (95% CI {ci_text(r.ci_low, r.ci_high)})"
                          for r in inter.itertuples() if r.metric in METRIC_NAMES)
    out = [f"Inter-observer agreement ({inter['annotation'].iloc[0]} against {main}, mean subject Dice over "
           f"{int(inter['subjects'].max())} test subjects): {agreement}."]
    reached = []
    for (strategy, n), part in a.versus_observer.groupby(["strategy", "n"], sort=True):
        said = [f"{METRIC_NAMES[r.metric]} {r.share:.0%} ({signed(r.difference)}, 95% CI {ci_text(r.ci_low, r.ci_high)})"
                for r in part.itertuples() if r.metric in METRIC_NAMES and r.share == r.share]
        if said:
            reached.append(f"{config_text(strategy, int(n)) if n else strategy}: " + ", ".join(said))
    if reached:
        out.append("Share of the inter-observer Dice each method reaches (its mean subject Dice over the second "
                   "annotation's, both against the main reference on the same subjects; in brackets the difference "
                   "with its 95% t interval over subjects): " + "; ".join(reached) + ".")
    return out


def _curves(a) -> list[str]:
    """One sentence per LV curve with an x* (or a plain reason); curves without x* for the same reason
    share one sentence."""
    out = []
    unestimated: dict[str, tuple[list[str], list[str]]] = {}  # note -> (strategies, x axes)
    for r in a.curves.itertuples() if len(a.curves) else []:
        if r.curve is None or r.curve != r.curve or r.metric != "dice_lv" or r.target != r.target:
            continue  # no curve, another metric, or no reference mean to reach (the table says why)
        unit = unit_word() if r.axis == "subjects" else "labelled images"
        lead = f"Learning curve ({r.curve.replace('_', ' ')}, LV, x = {unit}) of {r.strategy}"
        if r.x_star_status == "not estimated":
            strategies, units = unestimated.setdefault(r.note, ([], []))
            strategies += [r.strategy] if r.strategy not in strategies else []
            units += [unit] if unit not in units else []
        elif r.x_star_status == "already met":
            out.append(f"{lead}: the target {r.target:.3f} (reference − margin) is met at every budget studied: {r.note}.")
        elif r.x_star_status == "not reached":
            out.append(f"{lead}: the target {r.target:.3f} (reference − margin) is not reached: {r.note}.")
        else:
            flag = f"; {r.note}" if r.note else ""
            out.append(f"{lead}: the target {r.target:.3f} (reference − margin) is reached at {r.x_star:.1f} {unit} "
                       f"({x_interval(r)}{flag}).")
    for note, (strategies, units) in unestimated.items():
        out.append(f"Learning curves (LV, against {' and '.join(units)}) of {', '.join(strategies)}: the budget "
                   f"reaching the target is not estimated: {note}.")
    return out


def needed(row, seeds: int) -> int | None:
    """Test subjects for 80% power at ``seeds`` seeds from a planning row; None where none suffices."""
    value = getattr(row, f"subjects_at_{seeds}_seeds", None)
    return None if value is None or value != value else int(value)


def x_interval(r) -> str:
    """x*'s bootstrap interval; an end outside the budgets studied is said as such, not as a number (a
    refit already above the target at x = 0 would print 0.0; a nearly flat refit 17954 images)."""
    if r.x_star_low != r.x_star_low:
        return "CI n/a"
    low = f"below {r.smallest:.0f}" if r.x_star_low < r.smallest else f"{r.x_star_low:.1f}"
    high = ("∞" if np.isinf(r.x_star_high) else f"beyond {r.largest:.0f}" if r.x_star_high > r.largest
            else f"{r.x_star_high:.1f}")
    return f"95% CI {low} to {high}"


def _power(a) -> list[str]:
    out = []
    for r in a.planning.itertuples() if len(a.planning) else []:
        if r.metric != "dice_lv":
            continue
        lead = f"Power ({r.strategy}, LV, margin {r.margin:g}, true difference 0)"
        if r.power != r.power:
            out.append(f"{lead}: cannot be estimated: {r.note or 'too few subjects'}.")
            continue
        need = needed(r, r.seeds)
        if r.power >= 0.8:
            verdict = "adequate for its question"
        else:
            verdict = "under-powered: a 'not shown' verdict says little about the methods"
            better = [f"{needed(r, s)} test subjects at {s} seeds" for s in stats.planning.SEED_CHOICES if needed(r, s)]
            if need:
                verdict += f"; 80% power needs {need} test subjects at {r.seeds} seed(s)"
            elif better:
                verdict += f"; 80% power needs {better[0]}"
            if r.note:
                verdict += f" ({r.note})"
        out.append(f"{lead}: with {r.subjects} test subjects in {r.folds} fold(s) and {r.seeds} seed(s) the study had "
                   f"{r.power:.0%} power to show non-inferiority, {verdict}.")
    return out


def _strategies(a) -> list[str]:
    out = []
    alpha = a.options.alpha
    one_seed = f" Caveat: {ONE_SEED}." if a.seeds <= 1 else ""
    for n, part in a.strategies.groupby("n", sort=True) if len(a.strategies) else []:
        where = f"At {n_text(n)}" if n else "Between methods"
        tested = part[part["reason"] == ""]
        identical = part[part["reason"].str.startswith("no variance")]
        lines = []
        shown = tested["p_holm"] < alpha
        if "decision" in tested:  # a study run until decided: a comparison decided in its rounds says so itself
            recorded = tested["decision"].notna()
            shown = shown.where(~recorded, tested["decision"] == "shown")
        significant = tested[shown]
        if len(significant):
            lines.append("; ".join(
                f"{r.a} vs {r.b} ({METRIC_NAMES[r.metric]}): {signed(r.difference)}, {repeated(part)}95% CI "
                f"{ci_text(r.ci_low, r.ci_high)}, {repeated(part)}{p_text(r.p_holm)} (Holm)"
                for r in significant.itertuples()))
        elif len(tested):
            lines.append(f"no two strategies differed significantly ({len(tested)} comparisons here; "
                         f"{repeated(part)}p-values, Holm over every pair at every budget, per metric, α = {alpha:g})")
        if len(identical):
            pairs = sorted({f"{r.a} and {r.b}" for r in identical.itertuples()})
            lines.append(f"{', '.join(pairs)} gave identical results on every test subject (the same training "
                         "images?), so they were not compared")
        untested = part[(part["reason"] != "") & ~part["reason"].str.startswith("no variance")]
        if len(untested) and not len(tested):
            lines.append(f"nothing could be compared: {untested['reason'].iloc[0]}")
        if lines:
            out.append(f"{where}: " + "; ".join(lines) + "." + one_seed)
    return out


def _cheapest(a) -> list[str]:
    """The cheapest label-free configuration shown non-inferior to the study's common reference, in expert
    minutes, with its Dice and intervals (only where every strategy was tested against one reference)."""
    cheapest = getattr(a, "cheapest", None)
    if cheapest is None or not len(cheapest) or a.reference is None:
        return []
    best = cheapest.iloc[0]
    ref_rows = a.summary[(a.summary["strategy"] == a.reference[0]) & (a.summary["n"] == a.reference[1])]
    ref_cost = float(ref_rows["expert_minutes"].iloc[0]) if len(ref_rows) and "expert_minutes" in ref_rows else None
    share = 1 - best["expert_minutes"] / ref_cost if ref_cost and ref_cost == ref_cost and ref_cost > 0 else 0.0
    saving = (f", {100 * share:.0f}% less than the reference's {ref_cost:.0f} min" if share >= 0.01 else
              ", as much as the reference: no cheaper configuration was shown non-inferior")
    # at equal cost (one budget of minutes, or within 5% of the cheapest) every such configuration is named
    same = (cheapest["n"] == best["n"]) if BUDGET_UNIT.get() == "minutes" else \
        (cheapest["expert_minutes"] <= 1.05 * best["expert_minutes"])
    named = []
    for r in cheapest[same].itertuples():
        rows = a.summary[(a.summary["strategy"] == r.strategy) & (a.summary["n"] == r.n)]
        dice = "; ".join(f"{METRIC_NAMES[x.metric]} {x.mean:.3f} (95% CI {ci_text(x.ci_low, x.ci_high)})"
                         for x in rows.itertuples() if x.metric in METRIC_NAMES)
        named.append(f"**{config_text(r.strategy, int(r.n))}** ({r.expert_minutes:.0f} expert minutes; mean Dice {dice})")
    lead = "Cheapest configuration" if len(named) == 1 else "Cheapest configurations, at equal cost,"
    return [f"{lead} a lab can run before labelling that {'is' if len(named) == 1 else 'are'} non-inferior to "
            f"{config_text(*a.reference)} on both LV and MY: {'; '.join(named)}: {best['expert_minutes'] / 60:.1f} h "
            f"of contouring{saving}" + (f", {validation_labels(a)}" if validation_labels(a) else "")
            + " (cost model in Settings)."
            + unconverged_note(a, [(r.strategy, int(r.n)) for r in cheapest[same].itertuples()] + [tuple(a.reference)])]


def _predicted_vs_oracle(a) -> list[str]:
    """What choosing ED/ES from the selection model's predictions instead of the labels cost in Dice, per budget
    (a strategy's predicted ED/ES against the oracle that read them from the labels)."""
    out = []
    table = a.strategies
    if not len(table):
        return out
    def split(label: str) -> tuple[str, str]:  # "ed_es (oracle)+source" -> ("ed_es (oracle)", "+source")
        for name in ("ed_es_predicted", "ed_es (oracle)"):
            if label == name or label.startswith(name + "+"):
                return name, label[len(name):]
        return label, ""

    keep = [split(x)[1] == split(y)[1] and {split(x)[0], split(y)[0]} == {"ed_es_predicted", "ed_es (oracle)"}
            for x, y in zip(table["a"], table["b"])]
    pairs = table[keep]
    for (n, init), part in pairs.groupby(["n", pairs["a"].map(lambda x: split(x)[1])], sort=True):
        said = []
        for r in part.itertuples():
            sign = 1 if split(r.a)[0] == "ed_es_predicted" else -1  # difference = predicted − oracle
            if r.reason:
                said.append(f"{METRIC_NAMES[r.metric]}: {r.reason}")
                continue
            low, high = sorted((sign * r.ci_low, sign * r.ci_high))
            said.append(f"{METRIC_NAMES[r.metric]} {signed(sign * r.difference)}, {repeated(part)}95% CI "
                        f"{ci_text(low, high)}, {repeated(part)}{p_text(r.p_holm)} (Holm)")
        out.append(f"ED/ES predicted by the selection model instead of found from the labels (ed_es_predicted{init} − "
                   f"ed_es (oracle){init}){_at(int(n))}: " + "; ".join(said) + ".")
    return out


def guideline(a) -> list[str]:
    """Sentences that answer 'how much target data is enough', each with effect, CI, p and margin; never
    empty. Budgets are worded as the study counts them (subjects, or expert minutes)."""
    with budget_unit(a.settings):
        return _guideline(a)


def _guideline(a) -> list[str]:
    sentences = []
    tiny = a.test_subjects < MIN_SUBJECTS
    if tiny:
        sentences.append(_too_few(a))
    elif len(a.enough):
        for row in a.enough.itertuples():
            part = a.noninferiority[a.noninferiority["strategy"] == row.strategy]
            sentences.append(_strategy_sentence(row, part, a))
            stability = _stability(row, part, a)
            if stability:
                sentences.append(stability)
    if not tiny:
        sentences += _cheapest(a)
    if len(a.versus_base):
        sentences += _versus_base(a, descriptive=tiny)
    sentences += _inter_observer(a)
    if not tiny:
        sentences += _curves(a) + _power(a) + _strategies(a) + _predicted_vs_oracle(a)
    if not sentences:
        sentences.append("No guideline: the study has no fine-tuned budget to test against a reference (it needs "
                         "two budgets of a strategy, or a reference set with --reference).")
    return sentences
