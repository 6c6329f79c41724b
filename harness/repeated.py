"""Comparisons of a study run --until-decided, as the report gives them: each table row (strategies at a budget,
adjacent budgets, fine-tuned against the base model) looked at on the seeds every recorded round had, with
repeated p-values and repeated confidence intervals (`harness.stats.sequential.repeated_p`); a comparison of
strategies decided in the rounds (`harness.rounds`) is looked at up to its decision."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness import stats
from harness.rounds import DECIDED, Rounds
from harness.stats import sequential as gs
from harness.stats.inference import _blocks


class RoundLooks:
    """The scores of a sequential study as each recorded round saw them: every configuration with the seeds it had
    after that round (seeds first_seed, first_seed + 1, ...; the base model has none and counts whole).
    ``name_of`` turns the scores' method names into the rounds' (the report calls an oracle 'ed_es (oracle)')."""

    def __init__(self, scores: pd.DataFrame, rounds: Rounds, first_seed: int, name_of=lambda label: label):
        self.scores, self.rounds, self.first_seed, self.name_of = scores, rounds, first_seed, name_of
        first = rounds.rounds[0] if rounds.rounds else {"questions": {}}
        self.known = {(q["strategy"], int(q["n"])) for q in first["questions"].values()} | {
            (q["reference"].rpartition("@")[0], int(q["reference"].rpartition("@")[2]))
            for q in first["questions"].values() if q.get("reference")} | {
            (q["against"], int(q["n"])) for q in first["questions"].values() if q.get("against")}
        self._matrices: dict = {}

    def limits(self, config: tuple[str, int]) -> list[float] | None:
        """Seeds the configuration had after each recorded round (infinite: the base model); None where the
        rounds never named it."""
        if stats.is_base(config[0]):
            return [math.inf] * len(self.rounds.rounds)
        method = self.name_of(config[0])
        if (method, int(config[1])) not in self.known:
            return None
        return [self.rounds.seeds_of(method, int(config[1]), r) for r in range(1, len(self.rounds.rounds) + 1)]

    def matrix(self, config: tuple[str, int], metric: str, limit: float) -> pd.DataFrame:
        key = (config, metric)
        if key not in self._matrices:
            self._matrices[key] = stats.by_seed(self.scores, config, metric)
        full = self._matrices[key]
        if not math.isfinite(limit):
            return full
        return full.loc[:, [seed - self.first_seed < limit for seed in full.columns]]


def decided_pairs(rounds: Rounds) -> dict[tuple[frozenset, int, str], dict[str, Any]]:
    """Each decided comparison question's last look (with the round it was decided in), by ({a, b}, n, metric) in
    the rounds' names."""
    out = {}
    for record in rounds.rounds:
        for q in record["questions"].values():
            if q.get("kind") == "difference" and q["decision"] in DECIDED:
                out[(frozenset((q["strategy"], q["against"])), int(q["n"]), q["metric"])] = {**q, "round": record["round"]}
    return out


def repeated_comparisons(table: pd.DataFrame, looks: RoundLooks, pair, method: str = "t",
                         until=lambda row: None) -> pd.DataFrame:
    """A two-sided comparison table of a sequential study (strategies at a budget, budgets, versus the base model)
    with repeated p-values and 95% repeated confidence intervals instead of fixed-design ones: each row is looked
    at after every recorded round that gave its two configurations (``pair(row)``) new paired seeds, at
    information fraction paired seeds / --max-seeds. The rounds stopped where the non-inferiority questions were
    decided (and where comparison questions were: ``until(row)``, the round a row's question was decided in, ends
    its looks); a repeated p-value holds whatever stopped them. p is the
    smallest over the looks, the interval the pair's last look's (so an earlier crossing can give p < 0.05 with
    an interval that covers 0). Holm per metric over the table, as for fixed-design p-values (it needs only
    valid ones)."""
    from harness.stats.inference import TINY_SE, paired_test, t_test, untestable
    from harness.stats.tables import pair_matrices, subject_differences

    if not len(table) or not looks.rounds.rounds:
        return table
    design = looks.rounds.design
    out = table.copy()
    out["sequential"], out["looks"] = True, 0
    for i, row in table.iterrows():
        a, b = pair(row)
        limits = [looks.limits(a), looks.limits(b)]
        if limits[0] is None or limits[1] is None:
            out.loc[i, ["difference", "ci_low", "ci_high", "p", "dz"]] = math.nan
            out.loc[i, "reason"] = "not in the study's rounds record: no sequential test"
            continue
        zs, fractions, last, seen = [], [], None, None
        stop = until(row)  # a comparison question decided in round r: its looks end there, as its decision did
        for left, right in list(zip(*limits))[:stop]:
            if (left, right) == seen:
                continue  # neither configuration got seeds this round: no new look
            seen = (left, right)
            paired = pair_matrices(looks.matrix(a, row["metric"], left), looks.matrix(b, row["metric"], right))
            blocks = _blocks(paired)
            if not blocks:
                continue
            seeds = min(x.shape[1] for x in blocks)
            if last is not None and seeds <= last[0]:
                continue
            result = t_test(paired)
            p = result["p"] if method == "t" or result["p"] != result["p"] else paired_test(paired, method)[1]
            fractions.append(gs.fraction_at(fractions, seeds / design.max_seeds, seeds >= design.max_seeds))
            zs.append(float(gs.sps.norm.isf(p / 2)) if p == p else math.nan)
            last = (seeds, result, subject_differences(paired))
            if fractions[-1] >= 1:
                break
        if last is None or not any(z == z for z in zs):
            out.loc[i, ["difference", "ci_low", "ci_high", "p", "dz"]] = math.nan
            out.loc[i, "looks"] = len(zs)
            out.loc[i, "reason"] = row["reason"] or (untestable(last[1]) if last else "") or \
                "no round had a testable difference"
            continue
        seeds, result, d = last
        bound = gs.boundaries(fractions, 0.025, design.spending)[-1]  # a 95% interval, as the fixed tables give
        half = gs.repeated_half_width(result["se"], bound, result["df"])
        low, high = (max(result["mean"] - half, -1.0), min(result["mean"] + half, 1.0)) if math.isfinite(half) \
            else (math.nan, math.nan)  # this look could not reject at any level the interval is for
        sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
        out.loc[i, ["difference", "ci_low", "ci_high", "p", "seeds", "looks", "dz", "better", "subjects"]] = [
            result["mean"], low, high, gs.repeated_p(zs, fractions, design.spending), seeds, len(zs),
            result["mean"] / sd if sd > TINY_SE else math.nan, int((d > 0).sum()), len(d)]
    out["p_holm"] = out.groupby("metric")["p"].transform(stats.holm)
    return out
