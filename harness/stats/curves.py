"""Learning curves: Dice as a function of the labelled budget, and the budget that reaches a target.

Two saturating 3-parameter curves are fitted by least squares to the subject-level points (seed-averaged):
inverse power law a - b x^-c and exponential plateau a - b exp(-c x); AIC picks one. x is the number of
labelled subjects or, for annotation cost, the mean number of labelled images. x* (the budget at which the
curve reaches the target) gets a bootstrap CI over subjects; x* beyond the largest budget studied is an
extrapolation and is marked so.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit

from harness.stats.tables import fine_tuned


def power_law(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.power(x, -c)


def exp_plateau(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.exp(-c * x)


@dataclass(frozen=True)
class Curve:
    name: str
    f: Callable[..., np.ndarray]
    bounds: tuple[list[float], list[float]]

    def p0(self, x: np.ndarray, y: np.ndarray) -> list[float]:
        top, span = float(np.max(y)), float(np.ptp(y)) + 1e-3
        scale = 1.0 / float(np.median(x)) if self.name == "exp_plateau" else 0.5
        return [min(top + span / 2, 1.0), span * 2, scale]

    def at_bound(self, params: np.ndarray) -> str:
        """The first parameter that sits on its bound ('' when none): such a fit does not identify x*."""
        for name, value, low, high in zip("abc", params, *self.bounds):
            if np.isclose(value, low, rtol=0, atol=1e-6 * max(1.0, abs(low))) or np.isclose(
                    value, high, rtol=0, atol=1e-6 * max(1.0, abs(high))):
                return f"{name} = {value:.3g}" if abs(value) > 1e-6 else f"{name} = 0"
        return ""

    def solve(self, params: np.ndarray, target: float) -> float:
        """The x where the curve reaches `target` (inf when its plateau stays below)."""
        a, b, c = params
        if a <= target:
            return float("inf")
        if self.name == "power_law":
            return float((b / (a - target)) ** (1 / c)) if b > 0 else 0.0
        return float(max(np.log(b / (a - target)) / c, 0.0)) if b > 0 else 0.0


CURVES = (Curve("power_law", power_law, ([0.0, 0.0, 0.01], [1.0, 10.0, 5.0])),
          Curve("exp_plateau", exp_plateau, ([0.0, 0.0, 1e-4], [1.0, 10.0, 5.0])))


def fit(curve: Curve, x: np.ndarray, y: np.ndarray, start: np.ndarray | None = None) -> tuple[np.ndarray, float] | None:
    """(parameters, residual sum of squares), or None when the fit fails; `start` = initial parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        try:
            p0 = curve.p0(x, y) if start is None else np.clip(start, curve.bounds[0], curve.bounds[1])
            params, _ = curve_fit(curve.f, x, y, p0=p0, bounds=curve.bounds, maxfev=5000)
        except (RuntimeError, ValueError):
            return None
    return params, float(np.sum((y - curve.f(x, *params)) ** 2))


def aic(rss: float, points: int, k: int = 3) -> float:
    """Gaussian least-squares AIC (k parameters plus the error variance)."""
    return points * np.log(max(rss, 1e-300) / points) + 2 * (k + 1)


def _points(scores: pd.DataFrame, strategy: str, metric: str, axis: str) -> pd.DataFrame:
    part = scores[(scores["strategy"] == strategy) & scores[metric].notna()]
    points = part.groupby(["subject", "n"]).agg(y=(metric, "mean")).reset_index()
    if axis == "images":
        images = part.groupby("n")["labelled_images"].mean()
        points["x"] = points["n"].map(images)
    else:
        points["x"] = points["n"].astype(float)
    return points


def fit_learning_curves(scores: pd.DataFrame, metric: str, targets: dict[str, float], axis: str = "subjects",
                        n_boot: int = 300, seed: int = 0) -> pd.DataFrame:
    """Per strategy: both curves' AIC, the chosen curve and its parameters, and x* reaching the strategy's
    target Dice with a percentile bootstrap CI over subjects (refitting the chosen curve)."""
    rng = np.random.default_rng(seed)
    rows = []
    for strategy in sorted(set(fine_tuned(scores)["strategy"])):
        points = _points(scores, strategy, metric, axis)
        budgets = np.sort(points["x"].unique())
        row = {"strategy": strategy, "metric": metric, "axis": axis, "budgets": len(budgets),
               "target": targets.get(strategy, float("nan")), "largest": float(budgets.max()) if len(budgets) else np.nan,
               "smallest": float(budgets.min()) if len(budgets) else np.nan}
        if points["x"].isna().any():
            rows.append({**row, "curve": None, "note": "labelled image counts unknown: no curve fitted"})
            continue
        if len(budgets) < 3:
            rows.append({**row, "curve": None, "note": f"{len(budgets)} budget(s): a curve needs at least 3"})
            continue
        x, y = points["x"].to_numpy(float), points["y"].to_numpy(float)
        fits = {c.name: fit(c, x, y) for c in CURVES}
        aics = {name: aic(f[1], len(x)) if f else np.inf for name, f in fits.items()}
        best = min(aics, key=aics.get)
        if fits[best] is None:
            rows.append({**row, "curve": None, "note": "neither curve could be fitted"})
            continue
        curve = next(c for c in CURVES if c.name == best)
        params = fits[best][0]
        fitted = {**row, "curve": best, "aic_power_law": aics["power_law"], "aic_exp_plateau": aics["exp_plateau"],
                  "a": params[0], "b": params[1], "c": params[2], "plateau": params[0]}
        rows.append({**fitted, **_x_star(curve, params, points, row["target"], budgets, n_boot, rng, axis)})
    return pd.DataFrame(rows)


def _x_star(curve: Curve, params: np.ndarray, points: pd.DataFrame, target: float, budgets: np.ndarray,
            n_boot: int, rng: np.random.Generator, axis: str) -> dict:
    """x* with its bootstrap CI, or NaN with the reason it is not an estimate: ``x_star_status`` is
    estimated, extrapolated (beyond the largest budget), already met (below the smallest), not reached or
    not estimated; ``note`` says why."""
    unit = "n" if axis == "subjects" else "images"
    blank = {"x_star": float("nan"), "x_star_low": float("nan"), "x_star_high": float("nan"), "extrapolated": False}
    if len(budgets) == 3:
        return {**blank, "x_star_status": "not estimated",
                "note": "3 budgets: a 3-parameter curve passes through the means exactly, so neither the curve's "
                        "shape nor x* is estimated (AIC cannot tell the curves apart); study at least 4 budgets"}
    if target != target:
        return {**blank, "x_star_status": "not estimated", "note": "no target: the reference has no mean"}
    bound = curve.at_bound(params)
    if bound:
        return {**blank, "x_star_status": "not estimated",
                "note": f"the fit sits at a parameter bound ({bound}): the curve does not identify x*"}
    x_star = curve.solve(params, target)
    if np.isinf(x_star):
        return {**blank, "x_star": float("inf"), "x_star_status": "not reached",
                "note": f"the fitted plateau {params[0]:.3f} stays below the target {target:.3f}"}
    if x_star < budgets.min():
        return {**blank, "x_star": x_star, "x_star_status": "already met",
                "note": f"the curve is above the target already at the smallest budget studied ({unit} = "
                        f"{budgets.min():.0f}); a smaller budget was not studied"}
    low, high = _bootstrap_x_star(curve, points, target, n_boot, rng, params)
    if x_star > budgets.max():
        status, note = "extrapolated", (f"beyond the largest budget studied ({unit} = {budgets.max():.0f}): "
                                        "an extrapolation of the curve, not an estimate")
    else:
        status, note = "estimated", ""
    if low != low:
        note = "; ".join(filter(None, [note, "CI n/a: most bootstrap refits sat at a parameter bound"]))
    return {"x_star": x_star, "x_star_low": low, "x_star_high": high, "extrapolated": status == "extrapolated",
            "x_star_status": status, "note": note}


def _bootstrap_x_star(curve: Curve, points: pd.DataFrame, target: float, n_boot: int,
                      rng: np.random.Generator, start: np.ndarray) -> tuple[float, float]:
    """Resample subjects, refit the chosen curve to the resampled budget means, solve for the target."""
    wide = points.pivot_table(index="subject", columns="x", values="y")
    x = wide.columns.to_numpy(float)
    m = wide.to_numpy(float)
    draws = rng.integers(0, len(m), size=(n_boot, len(m)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(m[draws], axis=1)
    stars = []
    for y in means:
        result = fit(curve, x, y, start)  # a refit at a bound does not identify x*: it counts as failed
        stars.append(curve.solve(result[0], target) if result and not curve.at_bound(result[0]) else np.nan)
    stars = np.asarray(stars)
    stars = stars[~np.isnan(stars)]
    if len(stars) < n_boot / 2:
        return float("nan"), float("nan")
    # inf is a valid draw ("not reached"); order statistics, not interpolation, so inf - inf never happens
    return float(np.quantile(stars, 0.025, method="lower")), float(np.quantile(stars, 0.975, method="higher"))
