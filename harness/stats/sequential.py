"""Group-sequential one-sided tests over rounds of training seeds (``run --until-decided``).

A question (is strategy S at budget n non-inferior to the reference? does A beat B?) is looked at after each
round of seeds. Its statistic at look k is the crossed-variance t of `inference.t_statistics`, turned into a z
by its one-sided p-value. Adding seeds to the same test subjects gives the canonical joint distribution of
group-sequential theory: the mean after k looks averages every seed so far, so Cov(Z_j, Z_k) = sqrt(I_j / I_k)
with information I = 1 / Var(mean) (the subject part is shared by every look, which is why I stops growing
when the subjects, not the runs, dominate the variance; see `look_statistics`).

- Efficacy: Lan-DeMets alpha spending, O'Brien-Fleming-like ``2 - 2 Phi(z_{1-alpha/2} / sqrt(t))`` by default
  or Pocock-like ``alpha log(1 + (e - 1) t)``, over the information fraction t. Boundaries are found by
  numerical integration of the joint density (Armitage, McPherson and Rowe's recursion), look by look, so
  the looks need not be planned in advance.
- The information fraction is seeds so far / the maximum: the share of the run part of the variance. The
  subject part does not shrink with seeds, so the true fraction is larger; taking it from the variance model
  (`look_statistics`' ``fraction``: Var at the maximum projected from this look's components over Var now)
  raised the false-positive rate to 0.056-0.066 under heavy run noise in simulation, with the true components
  too: with 3 folds x 2 seeds the run variance has about 3 df and the t-to-z conversion does not carry the
  correlation between looks. The smaller, data-independent fraction assumes less correlation between looks
  than there is, which is conservative (0.042-0.049 in the same simulations; tests/test_sequential.py).
- Futility (non-binding: the efficacy boundaries ignore it, so alpha holds whether or not it is obeyed):
  a question is futile when its conditional power at the maximum, under the effect estimated so far, is below
  ``FUTILITY_POWER``.
- Repeated confidence intervals: estimate -+ q_k SE, q_k the t quantile (the look's df) at the boundary's nominal
  level Phi(-c_k), hold simultaneously over looks (Jennison and Turnbull 1989); the lower end is above -margin
  exactly when the look crossed.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

SPENDING = ("obrien-fleming", "pocock")
FUTILITY_POWER = 0.05  # conditional power at the maximum (were the strategies equal) below which a question is futile
_GRID = 201  # points of the numerical integration per look (bounds agree with 801 points to 1e-4)


def spent(t: float | np.ndarray, alpha: float, kind: str = "obrien-fleming") -> np.ndarray:
    """Alpha spent by information fraction t (0 at t = 0, alpha at t >= 1)."""
    t = np.clip(np.asarray(t, float), 0.0, 1.0)
    if kind == "obrien-fleming":
        with np.errstate(divide="ignore"):
            z = sps.norm.isf(alpha / 2) / np.sqrt(np.where(t > 0, t, np.nan))
        return np.where(t > 0, 2 * sps.norm.sf(z), 0.0)
    if kind == "pocock":
        return alpha * np.log1p((math.e - 1) * t)
    raise ValueError(f"spending must be one of {', '.join(SPENDING)}, got '{kind}'")


def _first(t: float, bound: float, drift: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid z and the density of Z at the first look on (-8, bound)."""
    z = np.linspace(-8.0, _top(bound), _GRID)
    return z, sps.norm.pdf(z - drift * math.sqrt(t))


def _step(z: np.ndarray, density: np.ndarray, t0: float, t1: float, drift: float,
          upper: float) -> tuple[np.ndarray, np.ndarray]:
    """One look further: the sub-density of Z at t1 on (-8, upper) of paths that crossed no bound, from that
    at t0 (independent increments of the score S = Z sqrt(t): S1 - S0 ~ N(drift (t1 - t0), t1 - t0))."""
    dt = t1 - t0
    new = np.linspace(-8.0, _top(upper), _GRID)
    weights = _simpson(z) * density
    kernel = sps.norm.pdf((new[:, None] * math.sqrt(t1) - z[None] * math.sqrt(t0) - drift * dt) / math.sqrt(dt))
    return new, kernel @ weights * math.sqrt(t1 / dt)


def _top(bound: float) -> float:
    """The grid's upper end: the bound, or 8.5 where the bound lies beyond any mass (an infinite bound)."""
    return min(bound, 8.5)


def _simpson(z: np.ndarray) -> np.ndarray:
    """Simpson weights of an odd-length evenly spaced grid."""
    h = z[1] - z[0]
    w = np.ones(len(z))
    w[1:-1:2], w[2:-1:2] = 4, 2
    return w * h / 3


class _Paths:
    """The sub-density of paths that have crossed no bound so far, carried look by look."""

    def __init__(self, drift: float):
        self.drift, self.t, self.z, self.density = drift, None, None, None

    def crossing(self, t1: float, bound: float) -> float:
        """P(no crossing so far, Z >= bound at the next look, at information fraction t1)."""
        if self.t is None:
            return float(sps.norm.sf(bound - self.drift * math.sqrt(t1)))
        dt = t1 - self.t
        beyond = sps.norm.sf((bound * math.sqrt(t1) - self.z * math.sqrt(self.t) - self.drift * dt) / math.sqrt(dt))
        return float(_simpson(self.z) @ (self.density * beyond))

    def advance(self, t1: float, bound: float) -> None:
        """Keep the paths below ``bound`` at t1."""
        if self.t is None:
            self.z, self.density = _first(t1, bound, self.drift)
        else:
            self.z, self.density = _step(self.z, self.density, self.t, t1, self.drift, bound)
        self.t = t1

    def advanced(self, t1: float, bound: float) -> _Paths:
        """A copy advanced to t1 (this one unchanged: cached states are shared)."""
        copy = _Paths(self.drift)
        copy.t, copy.z, copy.density = self.t, self.z, self.density
        copy.advance(t1, bound)
        return copy


def boundaries(fractions: list[float] | tuple[float, ...], alpha: float, kind: str = "obrien-fleming") -> list[float]:
    """Efficacy boundaries (z) at looks with increasing information fractions (the last may be 1), each spending
    alpha(t_k) - alpha(t_{k-1}) under the null. A look that may spend nothing gets an infinite bound."""
    return list(_boundaries(tuple(round(float(t), 6) for t in fractions), float(alpha), kind))


def _boundaries(fractions: tuple[float, ...], alpha: float, kind: str) -> tuple[float, ...]:
    if any(b <= a for a, b in zip(fractions, fractions[1:])) or not 0 < fractions[0] or fractions[-1] > 1:
        raise ValueError(f"information fractions must increase within (0, 1], got {list(fractions)}")
    return _state(fractions, alpha, kind)[0]


@functools.lru_cache(maxsize=65536)
def _state(fractions: tuple[float, ...], alpha: float, kind: str) -> tuple[tuple[float, ...], _Paths]:
    """Bounds of the looks so far and the paths that crossed none, built on the state one look earlier (cached:
    simulations and studies ask for the same prefixes again and again)."""
    if fractions:
        bounds, before = _state(fractions[:-1], alpha, kind)
    else:
        return (), _Paths(0.0)
    t = fractions[-1]
    target = float(spent(t, alpha, kind)) - float(spent(fractions[-2], alpha, kind) if len(fractions) > 1 else 0.0)
    if target <= 1e-12:
        bound = math.inf
    elif before.crossing(t, -1.0) < target:  # asks more than the paths left can give: the bound at the edge
        bound = -1.0
    else:
        bound = optimize.brentq(lambda c: before.crossing(t, c) - target, -1.0, 12.0, xtol=1e-7)
    return bounds + (bound,), before.advanced(t, bound)


def crossing_probability(fractions: list[float], bounds: list[float], drift: float) -> float:
    """P(crossing some efficacy bound) with the effect at ``drift`` (theta sqrt(I_max)): power, or alpha at 0."""
    paths, total = _Paths(drift), 0.0
    for t, bound in zip(fractions, bounds):
        total += paths.crossing(t, bound)
        paths.advance(t, bound)
    return total


def conditional_power(z: float, t: float, final_bound: float, drift: float) -> float:
    """P(Z at t = 1 >= final_bound | Z = z at t), with the effect at ``drift``."""
    if t >= 1:
        return float(z >= final_bound)
    score = z * math.sqrt(t)
    return float(sps.norm.sf((final_bound - score - drift * (1 - t)) / math.sqrt(1 - t)))


@dataclass(frozen=True)
class Look:
    """One question at one look: its z, information fraction, the boundary, and what was decided."""

    z: float
    fraction: float
    bound: float
    decision: str  # "shown", "futile" (cannot be shown at the maximum), "not shown" (at the maximum) or "open"
    conditional_power: float
    p_sequential: float  # stage-wise ordering p-value where shown at this look, else nan


def decide(zs: list[float], fractions: list[float], alpha: float, kind: str = "obrien-fleming",
           futility_power: float = FUTILITY_POWER, alternative: float | None = None,
           realised: float | None = None) -> Look:
    """The decision at the last of a question's looks (z and information fraction per look so far; the last
    fraction is 1 at the maximum). Earlier looks are assumed open (a decided question is not looked at again).
    Conditional power is taken at ``alternative`` (the drift theta sqrt(I_max) the question hopes for; for
    non-inferiority: no difference at all, margin / SE at the maximum), else at the effect estimated so far,
    and over the information still to come as ``realised`` (the variance model's fraction I_now / I_max; default
    the look's fraction) says: the boundaries may assume less correlation than there is, futility may not."""
    if len(zs) != len(fractions):
        raise ValueError("one z per look")
    bounds = boundaries(fractions, alpha, kind)
    z, t, bound = zs[-1], fractions[-1], bounds[-1]
    if z >= bound:  # stage-wise ordering: earlier crossings count as more extreme, then a larger z at this look
        p = crossing_probability(fractions, bounds[:-1] + [z], 0.0)
        return Look(z, t, bound, "shown", 1.0, min(p, 1.0))
    if t >= 1 - 1e-9:
        return Look(z, t, bound, "not shown", 0.0, math.nan)
    final = boundaries(fractions + [1.0], alpha, kind)[-1]
    now = min(max(realised if realised is not None else t, 1e-6), 1.0)
    drift = alternative if alternative is not None else z / math.sqrt(now)
    power = conditional_power(z, now, final, drift)
    return Look(z, t, bound, "futile" if power < futility_power else "open", power, math.nan)


def fraction_at(previous: list[float], raw: float, final: bool) -> float:
    """The information fraction a look is analysed at: 1 at the maximum (``final``, or a fraction of 1 or more);
    else ``raw`` rounded to 4 decimals, above the previous look's and below 1."""
    if final or not raw < 1:
        return 1.0
    low = previous[-1] + 1e-4 if previous else 1e-4
    return round(min(max(raw, low), 0.9999), 4)


def look_statistics(blocks: list[np.ndarray], null: float, max_seeds: int) -> dict:
    """A question's look from its fold blocks (subjects x seeds so far, batched over leading axes like
    `inference.t_statistics`): the one-sided (greater) t-test against ``null`` as z, and the estimated
    information fraction Var(mean now) projected to ``max_seeds`` over Var(mean now). Needs 2 seeds or more
    (with one, the run part of the variance cannot be told from the subject part)."""
    from harness.stats.inference import _mean_squares, t_statistics

    seeds = int(round(float(np.mean([b.shape[-1] for b in blocks]))))
    if seeds < 2:
        raise ValueError("a sequential look needs at least 2 seeds (per round)")
    result = t_statistics(blocks, null, "greater")
    sizes = np.array([b.shape[-2] for b in blocks], float)
    units = sizes.sum()
    _, ms, _ = _mean_squares(blocks)
    weight = float(np.sum((sizes / units) ** 2)) / float(sizes.mean())
    run_part = np.nan_to_num(np.maximum(ms[1] - ms[2], 0.0)) * weight
    now = (ms[0] / units + run_part) / seeds
    subject = np.maximum(ms[0] - ms[2], 0.0) / seeds / units
    at_max = subject + (run_part + ms[2] / units) / max_seeds
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(now > 0, at_max / now, 1.0)
    z = sps.norm.isf(np.clip(result["p"], 1e-300, 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        se_max = np.sqrt(at_max)
    return {"z": z, "fraction": raw, "mean": result["mean"], "se": result["se"], "p": result["p"], "seeds": seeds,
            "se_max": se_max, "df": result["df"]}


_LEVELS = np.logspace(-10, 0, 321)  # two-sided levels at which a look's boundary is tabulated for repeated p


def repeated_p(zs: list[float], fractions: list[float], kind: str = "obrien-fleming") -> float:
    """Two-sided repeated p-value (Jennison and Turnbull 1989) of a comparison looked at with these z (either
    sign) at these information fractions: the smallest level at which some look so far crossed its boundary
    (half the level spent on each side, by ``kind``). Valid whatever decides when looking stops: a look's
    boundary does not depend on later looks, so ending early can only raise it. The first look's level is exact
    (closed form); a later look's is interpolated between tabulated levels (to about 0.03%), and where its
    boundary is infinite below some level (spending nothing there) the smallest level with a finite boundary
    is taken. Never below the look's own fixed-design p; levels below 1e-10 are 1e-10; NaN where no look has
    a z."""
    if len(zs) != len(fractions):
        raise ValueError("one z per look")
    best = math.nan
    for k, z in enumerate(zs):
        if z is None or not z == z:
            continue
        z = abs(float(z))
        level = _first_level(z, float(fractions[0]), kind) if k == 0 else _later_level(
            z, _level_table(tuple(round(float(t), 6) for t in fractions[:k + 1]), kind))
        level = min(max(level, 2 * float(sps.norm.sf(z)), _LEVELS[0]), 1.0)
        best = level if not best == best else min(best, level)
    return best


def _first_level(z: float, t: float, kind: str) -> float:
    """The two-sided level whose spending at the first look, on one side, is P(Z > z)."""
    tail = float(sps.norm.sf(z))
    if t >= 1:
        return 2 * tail
    if kind == "obrien-fleming":  # 2 - 2 Phi(z_{1 - a/4} / sqrt(t)) = tail
        return 4 * float(sps.norm.sf(math.sqrt(t) * sps.norm.isf(tail / 2)))
    return 2 * tail / math.log1p((math.e - 1) * t)


def _later_level(z: float, bounds: np.ndarray) -> float:
    """The level at which a tabulated boundary (falling with the level) reaches z."""
    crossed = np.nonzero(np.isfinite(bounds) & (bounds <= z))[0]
    if not len(crossed):
        return 1.0
    i = int(crossed[0])
    if i == 0 or not math.isfinite(bounds[i - 1]):
        return float(_LEVELS[i])  # nothing finite above it to interpolate from: the conservative end
    w = (bounds[i - 1] - z) / (bounds[i - 1] - bounds[i])
    return float(np.exp((1 - w) * math.log(_LEVELS[i - 1]) + w * math.log(_LEVELS[i])))


@functools.lru_cache(maxsize=256)
def _level_table(fractions: tuple[float, ...], kind: str) -> np.ndarray:
    """The last look's two-sided boundary at every level of ``_LEVELS`` (infinite where it spends nothing)."""
    return np.array([_boundaries(fractions, float(level) / 2, kind)[-1] for level in _LEVELS])


def repeated_half_width(se: float, bound: float, df: float) -> float:
    """Half-width of the repeated confidence interval at a look: the look's t quantile at the boundary's nominal
    level (the test compares the t statistic's p with Phi(-bound), so the interval must too) x SE. Its lower end
    is above -margin exactly when the look crossed. Infinite where the look could not reject."""
    if not math.isfinite(bound) or not se == se:
        return math.inf
    quantile = float(sps.t.isf(sps.norm.sf(bound), df)) if df == df and df > 0 else bound
    return quantile * se
