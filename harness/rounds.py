"""Studies run until their answer is decided (``run --until-decided``): seeds added in rounds where questions
are still open, with group-sequential error control (``harness.stats.sequential``).

A question is one non-inferiority step of the guideline (strategy S at budget n against the reference, on one
metric) or one comparison of two strategies at one budget on one metric (``_pair_looks``). Within a strategy and metric the steps form the fixed sequence of the fixed design (largest n first):
a step is tested only from the look at which the step above it was shown, with its own boundaries over every
look (closed testing of group-sequential tests: Tamhane, Mehta and Liu 2010), so each strategy's claim keeps
its family-wise level. After each round every open question is decided:

- **shown**: its z crossed the efficacy boundary of this look;
- **futile**: its conditional power at the maximum, were the strategies truly equal, is below
  ``sequential.FUTILITY_POWER`` (non-binding: the boundaries ignore it);
- **not shown**: the maximum (``--max-seeds``) was reached without crossing;
- **not tested**: the step above it was not shown (the fixed sequence stopped);
- otherwise **open**: the next round adds seeds to its configuration (and to the reference's).

Rounds and decisions are recorded in ``rounds.json`` as soon as a round's runs are finished; a decision once
recorded is never taken again, so a resumed or second command continues from the same rounds.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness import stats
from harness.errors import UsageError
from harness.stats import sequential as gs
from harness.stats.inference import _blocks

ROUNDS_FILE = "rounds.json"  # every round so far, for readers; the record is rounds/ (one file per round)
ROUNDS_DIR = "rounds"
DECIDED = ("shown", "futile", "not shown", "not tested")


@dataclass(frozen=True)
class Design:
    """What the decisions depend on: fixed for a study's life (recorded in rounds.json)."""

    reference: str | None  # STRATEGY@N (None: each strategy's own largest budget)
    margin: float
    alpha: float
    per_round: int
    max_seeds: int
    spending: str = "obrien-fleming"
    futility_power: float = gs.FUTILITY_POWER
    grid: dict[str, Any] | None = None  # the questions' grid: strategies (with parameters), budgets, inits, folds

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "margin": self.margin, "alpha": self.alpha,
                "per_round": self.per_round, "max_seeds": self.max_seeds, "spending": self.spending,
                "futility_power": self.futility_power, "grid": self.grid}

    def check(self) -> None:
        if self.per_round < 2:
            raise UsageError(f"--until-decided adds --seeds {self.per_round} per round; it needs at least 2 (with "
                             "one seed a round, run noise cannot be told from subject noise)")
        if self.max_seeds < self.per_round:
            raise UsageError(f"--max-seeds {self.max_seeds} is below the --seeds {self.per_round} of one round")
        if self.spending not in gs.SPENDING:
            raise UsageError(f"--spending '{self.spending}': choose {' or '.join(gs.SPENDING)}")

    def seeds_at(self, round_number: int) -> int:
        """Seeds every open configuration has after ``round_number`` rounds."""
        return min(round_number * self.per_round, self.max_seeds)

    @property
    def rounds(self) -> int:
        return math.ceil(self.max_seeds / self.per_round)


def check_reference(reference: str | None, settings) -> None:
    """--reference of a sequential study names a configuration of its grid (checked before any run: the first
    round's decisions need it)."""
    if reference is None:
        return
    method, _, n_text = reference.partition("@")
    strategy = method.partition("+")[0]
    grid = settings.budget_minutes or settings.ns
    if strategy not in settings.strategies:
        raise UsageError(f"--reference '{reference}': strategy '{strategy}' is not in --strategy "
                         f"({', '.join(settings.strategies)})")
    if n_text and (not n_text.isdigit() or int(n_text) not in grid):
        raise UsageError(f"--reference '{reference}': {n_text} is not one of the study's budgets "
                         f"({', '.join(map(str, grid))})")


def _create_once(path: Path, content: dict[str, Any]) -> bool:
    """Write ``path`` only if it does not exist (atomic: a hard link of a finished temporary file); False where
    another process created it first."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=2))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def question_key(strategy: str, n: int, metric: str) -> str:
    return f"{strategy}@{n}:{metric}"


@dataclass
class Rounds:
    """rounds.json: the design and, per finished round, its seeds and every question's look and decision."""

    design: Design
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, folder: Path, design: Design) -> Rounds:
        """The rounds recorded in ``folder`` (rounds/round-NNN.json, one file per round, each created once) under
        ``design``; UsageError where they were decided under another design."""
        folder = Path(folder) / ROUNDS_DIR
        path = folder / "design.json"
        if not path.exists():
            return cls(design)
        recorded = json.loads(path.read_text())
        if recorded != design.to_dict():
            diff = {k: (v, design.to_dict().get(k)) for k, v in recorded.items() if design.to_dict().get(k) != v}
            said = ", ".join(f"{k} {a!r} (now {b!r})" if k != "grid" else "another grid (strategies, parameters, "
                             "budgets, inits or folds)" for k, (a, b) in diff.items())
            raise UsageError(f"{path.parent.parent / ROUNDS_FILE}: this study's rounds were decided with {said}; a "
                             "sequential design cannot change half-way: run it as it was, or start a new --out")
        rounds = [json.loads(p.read_text()) for p in sorted(folder.glob("round-*.json"))]
        return cls(design, rounds)

    def fix_design(self, folder: Path) -> Rounds:
        """Record the design before the first round's runs (created once): of two commands that start one study
        with different designs, the second stops here, before it runs anything."""
        where = Path(folder) / ROUNDS_DIR
        where.mkdir(parents=True, exist_ok=True)
        _create_once(where / "design.json", self.design.to_dict())
        return Rounds.read(folder, self.design)

    def record(self, folder: Path, record: dict[str, Any]) -> Rounds:
        """Record the next round, unless another command recorded it first (then theirs stands: it decided on
        the same finished runs). Returns the rounds as recorded; rounds.json is rewritten from them."""
        folder = Path(folder)
        where = folder / ROUNDS_DIR
        where.mkdir(exist_ok=True)
        _create_once(where / "design.json", self.design.to_dict())
        _create_once(where / f"round-{record['round']:03d}.json", record)
        recorded = Rounds.read(folder, self.design)
        tmp = folder / f".{ROUNDS_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"design": self.design.to_dict(), "rounds": recorded.rounds}, indent=2))
        os.replace(tmp, folder / ROUNDS_FILE)
        return recorded

    def state(self, key: str) -> dict[str, Any] | None:
        """A question's last recorded look (None: never looked at)."""
        for record in reversed(self.rounds):
            if key in record["questions"]:
                return record["questions"][key]
        return None

    def seeds_of(self, method: str, n: int, round_number: int) -> int:
        """Seeds configuration (method, n) has in round ``round_number``: one round's worth for every round it
        took part in (all of the first; a later one where the round before left one of its questions open)."""
        rounds = 1 + sum(1 for record in self.rounds[:round_number - 1] if [method, n] in record["needs"])
        return self.design.seeds_at(rounds)

    def finished(self) -> bool:
        return bool(self.rounds) and (not self.rounds[-1]["needs"]
                                      or self.rounds[-1]["seeds"] >= self.design.max_seeds)


def look(scores: pd.DataFrame, rounds: Rounds, seeds: int, final: bool) -> dict[str, Any]:
    """Decide every question not yet decided at this look (``scores``: subject scores of the finished runs, every
    configuration with the seeds it has). Returns the round's record: each question's look and decision, and
    the configurations the next round must add seeds to."""
    design = rounds.design
    reference = stats.parse_reference(design.reference, scores)
    tuned = stats.fine_tuned(scores)
    questions: dict[str, dict[str, Any]] = {}
    needs: set[tuple[str, int]] = set()
    for metric in stats.METRICS:
        if metric not in scores or scores[metric].isna().all():
            continue
        for strategy, group in tuned.groupby("strategy", sort=True):
            budgets = sorted((int(n) for n in group["n"].unique()), reverse=True)
            ref = reference or (strategy, budgets[0])
            above = None  # the step before this one in the fixed sequence
            for n in budgets:
                if (strategy, n) == ref:
                    continue
                key = question_key(strategy, n, metric)
                before = rounds.state(key)
                if before is not None and before["decision"] in DECIDED:
                    above = before
                    continue
                record = _look_at(scores, (strategy, n), ref, metric, rounds, key, seeds, final, above)
                questions[key] = record
                above = record
                if record["decision"] == "open":
                    needs.update({(strategy, n), ref})
        for key, record in _pair_looks(scores, rounds, tuned, metric, seeds, final).items():
            questions[key] = record
            if record["decision"] == "open":
                needs.update({(record["strategy"], record["n"]), (record["against"], record["n"])})
    return {"seeds": seeds, "questions": questions, "needs": sorted([list(c) for c in needs])}


def pair_key(a: str, b: str, n: int, metric: str) -> str:
    """The key of a comparison question: strategies a and b (sorted) at budget n on one metric."""
    return f"{a}|{b}@{n}:{metric}"


def _pair_looks(scores: pd.DataFrame, rounds: Rounds, tuned: pd.DataFrame, metric: str, seeds: int,
                final: bool) -> dict[str, dict[str, Any]]:
    """Every comparison of two strategies at one budget on ``metric`` not yet decided, at this look: the two-sided
    crossed-variance t-test as |z|, its repeated p-value over its looks so far (`sequential.repeated_p`), Holm over
    every comparison of the metric (decided ones with their last repeated p); **shown** where the Holm-adjusted
    repeated p is below α, **futile** where the conditional power at the maximum under the difference estimated
    so far (Bonferroni level α / comparisons) is below the design's threshold (non-binding), else open."""
    from itertools import combinations

    from harness.stats.inference import t_statistics

    design = rounds.design
    looked: dict[str, dict[str, Any]] = {}
    repeated: dict[str, float] = {}
    for n, group in tuned.groupby("n", sort=True):
        for a, b in combinations(sorted(group["strategy"].unique()), 2):
            key = pair_key(a, b, int(n), metric)
            before = rounds.state(key)
            if before is not None and before["decision"] in DECIDED:
                repeated[key] = before.get("p_repeated") if before.get("p_repeated") is not None else 1.0
                continue
            repeated[key] = 1.0  # every comparison counts in Holm's m, also one that cannot be tested yet
            history = [r["questions"][key] for r in rounds.rounds if key in r["questions"]]
            base = {"kind": "difference", "strategy": a, "against": b, "n": int(n), "metric": metric,
                    "seeds": seeds, "looks": len(history) + 1}
            blocks = _blocks(stats.paired_by_seed(scores, (a, int(n)), (b, int(n)), metric))
            if not blocks or sum(x.shape[0] for x in blocks) < 2 or min(x.shape[1] for x in blocks) < 2:
                looked[key] = {**base, "z": None, "fraction": None, "p_repeated": None,
                               "why": "fewer than 2 test subjects or seeds with a score on both sides"}
                continue
            paired = min(x.shape[1] for x in blocks)
            result = {k: float(v) for k, v in t_statistics(blocks, 0.0, "two-sided").items()}
            fractions = [h["fraction"] for h in history if h.get("fraction") is not None]
            zs = [h["z"] if h.get("z") is not None else math.nan for h in history if h.get("fraction") is not None]
            fraction = gs.fraction_at(fractions, paired / design.max_seeds, final and paired >= design.max_seeds)
            z = float(gs.sps.norm.isf(result["p"] / 2)) if result["p"] == result["p"] else math.nan
            all_t, all_z = _increasing(fractions + [fraction], zs + [z])
            p = gs.repeated_p(all_z, all_t, design.spending)
            realised = float(gs.look_statistics(blocks, 0.0, design.max_seeds)["fraction"])
            looked[key] = {**base, "seeds": paired, "difference": result["mean"], "se": result["se"],
                           "df": result["df"], "z": z if math.isfinite(z) else None, "fraction": fraction,
                           "fraction_estimated": min(realised, 1.0) if realised == realised else None,
                           "fractions": all_t, "p_repeated": p if p == p else None,
                           "why": "" if z == z else "the t-test is undefined here (no variance)"}
            repeated[key] = p if p == p else 1.0
    keys = list(repeated)
    adjusted = dict(zip(keys, stats.holm([repeated[k] for k in keys]))) if keys else {}
    out = {}
    for key, record in looked.items():
        fractions = record.pop("fractions", None)
        p_holm = adjusted.get(key, math.nan)
        if p_holm == p_holm and p_holm < design.alpha:
            decision, power = "shown", 1.0
        elif final or record["fraction"] is None or record["fraction"] >= 1:
            decision, power = ("not shown" if final or record["fraction"] is not None else "open"), 0.0
        else:  # conditional power under the difference estimated so far, over the information still to come as
            # the variance model says (the seeds fraction understates the information where subjects dominate)
            z = record["z"] or 0.0
            t = max(record.get("fraction_estimated") or record["fraction"], record["fraction"], 1e-6)
            bound = gs.boundaries(fractions + [1.0], design.alpha / (2 * len(keys)), design.spending)[-1]
            power = gs.conditional_power(z, min(t, 1.0), bound, z / math.sqrt(min(t, 1.0)))
            decision = "futile" if power < design.futility_power else "open"
        out[key] = {**record, "decision": decision, "p_holm": p_holm if p_holm == p_holm else None,
                    "conditional_power": power}
    return out


def _look_at(scores: pd.DataFrame, config: tuple[str, int], ref: tuple[str, int], metric: str, rounds: Rounds,
             key: str, seeds: int, final: bool, above: dict[str, Any] | None) -> dict[str, Any]:
    """One question at this look: its statistic and fraction (recorded whether or not it may be tested yet)
    and its decision."""
    design = rounds.design
    history = [r["questions"][key] for r in rounds.rounds if key in r["questions"]]
    fractions = [h["fraction"] for h in history]
    zs = [h["z"] for h in history]
    blocks = _blocks(stats.paired_by_seed(scores, config, ref, metric))
    base = {"strategy": config[0], "n": config[1], "metric": metric, "reference": f"{ref[0]}@{ref[1]}",
            "seeds": seeds, "looks": len(history) + 1}
    if not blocks or sum(b.shape[0] for b in blocks) < 2 or min(b.shape[1] for b in blocks) < 2:
        why = "fewer than 2 test subjects or seeds with a score on both sides"
        return {**base, "z": None, "fraction": None, "decision": "not shown" if final else "open", "why": why}
    paired = min(b.shape[1] for b in blocks)  # the seeds both sides have (the fraction counts those)
    result = {k: float(v) for k, v in gs.look_statistics(blocks, -design.margin, design.max_seeds).items()}
    fraction = gs.fraction_at([t for t in fractions if t is not None], paired / design.max_seeds,
                              final and paired >= design.max_seeds)
    base["seeds"] = paired
    z = result["z"]
    record = {**base, "difference": result["mean"], "se": result["se"], "df": result["df"], "p_fixed": result["p"],
              "z": z if math.isfinite(z) else None, "fraction": fraction, "fraction_estimated": min(result["fraction"], 1.0)}
    if not math.isfinite(z):
        return {**record, "decision": "not shown" if final else "open",
                "why": "the t-test is undefined here (no variance)"}
    if above is not None and above["decision"] != "shown":
        if above["decision"] in DECIDED:
            return {**record, "decision": "not tested",
                    "why": f"the step above ({above['strategy']}@{above['n']}) was {above['decision']}"}
        return {**record, "decision": "open", "why": f"waits for {above['strategy']}@{above['n']}"}
    # every earlier look counts in the boundaries (as a look that did not cross: conservative where it was
    # not tested yet)
    earlier = [(t, z_ if z_ is not None else -math.inf) for z_, t in zip(zs, fractions) if t is not None]
    return {**record, **decide_look([t for t, _ in earlier], [z_ for _, z_ in earlier], fraction, result, design)}


def decide_look(fractions: list[float], zs: list[float], fraction: float, result: dict[str, float],
                design: Design) -> dict[str, Any]:
    """The decision of a question that may be tested at this look, from its earlier looks' fractions and z and this
    look's statistics (``sequential.look_statistics`` of one question): the decision, the boundary, conditional
    power, stage-wise p and the repeated CI. The calibration simulations (tests/simulation.py) call it too."""
    fractions_all, zs_all = _increasing(fractions + [fraction], zs + [result["z"]])
    alternative = design.margin / result["se_max"] if result["se_max"] > 0 else None
    decided = gs.decide(zs_all, fractions_all, design.alpha, design.spending, design.futility_power, alternative,
                        realised=min(result["fraction"], 1.0))
    half = gs.repeated_half_width(result["se"], decided.bound, result["df"])
    return {"decision": decided.decision, "bound": decided.bound if math.isfinite(decided.bound) else None,
            "conditional_power": decided.conditional_power,
            "p_sequential": decided.p_sequential if math.isfinite(decided.p_sequential) else None,
            "repeated_lower": result["mean"] - half if math.isfinite(half) else None,
            "repeated_upper": result["mean"] + half if math.isfinite(half) else None}


def _increasing(fractions: list[float], zs: list[float]) -> tuple[list[float], list[float]]:
    """Looks whose fraction did not grow (a final look at 1 after one already at 1) are merged into the last."""
    out_t, out_z = [], []
    for t, z in zip(fractions, zs):
        if out_t and t <= out_t[-1]:
            out_z[-1] = z
            continue
        out_t.append(t)
        out_z.append(z)
    return out_t, out_z


def scores_of(store, specs: list, inits: list[str], empty: str) -> pd.DataFrame:
    """Subject scores of finished runs, methods named as the statistics name them (store.method_label)."""
    from harness.store import method_label

    images = pd.concat([store.images(spec, method_label(spec.strategy, spec.init, inits)) for spec in specs],
                       ignore_index=True)
    return stats.subject_scores(images, empty)


def runs_saved(record: dict[str, Any], design: Design) -> dict[str, Any]:
    """For a decided question: its seeds against the fixed design at --max-seeds, and the fewest seeds a fixed
    design needs for the power this sequential design has (both were the strategies truly equal), from the
    variance model of its last look."""
    out: dict[str, Any] = {"seeds_used": record["seeds"], "seeds_fixed": design.max_seeds,
                           "seeds_same_power": None, "power": None}
    if not record.get("se") or not record.get("fraction_estimated"):
        return out
    se = {s: _se_at(record, s, design) for s in range(1, design.max_seeds + 1)}
    looks = sorted({design.seeds_at(k) for k in range(1, design.rounds + 1)})
    fractions, _ = _increasing([min(round(se[design.max_seeds] ** 2 / se[s] ** 2, 6), 1.0) for s in looks],
                               [0.0] * len(looks))
    drift = design.margin / se[design.max_seeds]
    power = gs.crossing_probability(fractions, gs.boundaries(fractions, design.alpha, design.spending), drift)
    z_alpha = float(gs.sps.norm.isf(design.alpha))
    same = next((s for s in range(1, design.max_seeds + 1)
                 if float(gs.sps.norm.sf(z_alpha - design.margin / se[s])) >= power - 1e-9), design.max_seeds)
    return {**out, "seeds_same_power": same, "power": power}


def _se_at(record: dict[str, Any], seeds: int, design: Design) -> float:
    """SE of the difference at ``seeds`` under a look's variance model Var(s) = a + b / s (the subject part a
    stays, the rest shrinks with seeds), through Var at the look and Var at the maximum (fraction x ...)."""
    now = record["se"] ** 2
    at_max = now * record["fraction_estimated"]
    s0, s1 = record["seeds"], design.max_seeds
    if s1 <= s0:
        return math.sqrt(now)
    b = max((now - at_max) / (1 / s0 - 1 / s1), 0.0)
    a = now - b / s0
    return math.sqrt(max(a + b / seeds, 1e-12))


def load(folder: Path) -> Rounds | None:
    """A study's recorded rounds under the design they were decided with (None: not run --until-decided)."""
    path = Path(folder) / ROUNDS_DIR / "design.json"
    if not path.exists():
        return None
    design = Design(**json.loads(path.read_text()))
    return Rounds.read(folder, design)


def final_table(rounds: Rounds) -> pd.DataFrame:
    """Per question its last look: the decision, the round and seeds it was taken at, the statistic against the
    boundary, the stage-wise p and the repeated confidence interval where shown or tested, and the seeds a fixed
    design would have needed for the same power."""
    last: dict[str, dict[str, Any]] = {}
    for record in rounds.rounds:
        for key, question in record["questions"].items():
            last[key] = {**question, "round": record["round"]}
    rows = []
    for key, q in last.items():
        bound, se, upper = q.get("bound"), q.get("se"), q.get("repeated_upper")
        kind = q.get("kind", "non-inferiority")
        saved = runs_saved(q, rounds.design) if q["decision"] in DECIDED and kind == "non-inferiority" else {}
        rows.append({"kind": kind, "strategy": q["strategy"], "against": q.get("against"), "n": q["n"],
                     "metric": q["metric"], "reference": q.get("reference"), "p_repeated": q.get("p_repeated"),
                     "p_holm": q.get("p_holm"),
                     "decision": q["decision"], "round": q["round"], "seeds": q["seeds"], "looks": q.get("looks"),
                     "difference": q.get("difference"), "se": se, "z": q.get("z"), "bound": bound,
                     "fraction": q.get("fraction"), "p_sequential": q.get("p_sequential"),
                     "repeated_lower": q.get("repeated_lower"), "repeated_upper": upper,
                     "conditional_power": q.get("conditional_power"), "why": q.get("why") or "",
                     "seeds_same_power": saved.get("seeds_same_power"), "power": saved.get("power")})
    columns = ["kind", "strategy", "against", "n", "metric", "reference", "p_repeated", "p_holm", "decision", "round", "seeds", "looks", "difference", "se", "z",
               "bound", "fraction", "p_sequential", "repeated_lower", "repeated_upper", "conditional_power", "why",
               "seeds_same_power", "power"]
    return pd.DataFrame(rows, columns=columns)


def design_text(design: Design) -> str:
    """The sequential design as a methods section must state it to be reproduced."""
    kind = {"obrien-fleming": "O'Brien-Fleming-like", "pocock": "Pocock-like"}[design.spending]
    return (f"Group-sequential design (run --until-decided): seeds were added in rounds of {design.per_round} per "
            f"configuration, to at most {design.max_seeds}, and after each round every open non-inferiority question "
            f"(one strategy at one budget on one metric, margin {design.margin:g}) was tested with the crossed-variance "
            f"one-sided t-test, its p-value taken as a z. Efficacy: Lan-DeMets {kind} alpha spending of one-sided "
            f"α = {design.alpha:g} over the information fraction seeds / {design.max_seeds} (boundaries by numerical "
            "integration; the subject part of the variance does not shrink with seeds, so this fraction understates "
            "the information, which is conservative). Within a strategy and metric the budgets form the fixed "
            "sequence of the fixed design, largest first: a budget is tested from the round at which the one above it "
            "was shown, with its own boundaries over every round (closed testing). Futility (non-binding): a question "
            f"stops when its conditional power at {design.max_seeds} seeds, were the strategies equal, is below "
            f"{design.futility_power:g}. Only configurations with an open question (and the reference) received more "
            "seeds. p-values are stage-wise ordering p-values and intervals repeated confidence intervals (estimate "
            "± the t quantile of the round's boundary × SE), both valid over the rounds; decisions were recorded after each round "
            "(rounds.json) and never revised. Comparisons of two strategies at one budget were questions too: "
            "two-sided crossed-variance t-test, its repeated p-value over the rounds Holm-adjusted over the metric's "
            "comparisons, shown below α, futile (non-binding) when the conditional power at the maximum under the "
            "difference estimated so far, at level α / comparisons, was below "
            f"{design.futility_power:g}. Comparisons with the base model and between budgets did not decide the "
            "rounds. All three carry two-sided repeated p-values (the smallest level at which "
            "some round crossed its boundary under the same spending over paired seeds / max seeds, half the level on "
            "each side), Holm-adjusted within each family and metric, and repeated 95% confidence intervals at the pair's "
            "last round: both hold whatever stopped the rounds.")
