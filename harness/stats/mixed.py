"""Model-based summary: a linear mixed model of subject-level Dice over the whole study.

Dice ~ strategy x log(n) with the study's own crossed structure as variance components: a test subject
(shared by every configuration it is tested under) and a training run (strategy, n, seed at one fold, shared
by that fold's test subjects); both are nested in the fold, which is the model's group. statsmodels MixedLM,
REML. It uses every run at once and shows how variance splits; the verdicts come from the paired tests.
statsmodels' own boundary warning fires whenever a variance is below 0.01 in absolute terms, which every Dice
variance is, so it is replaced by a relative one (a component under 1% of the total variance). A fit that did not converge shows no estimates.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.stats.tables import fine_tuned


@dataclass(frozen=True)
class MixedFit:
    metric: str
    formula: str
    fixed: pd.DataFrame  # term, coef, se, ci_low, ci_high, p
    variances: dict[str, float]  # subject, training run, residual
    observations: int
    subjects: int
    converged: bool
    warnings: list[str] = field(default_factory=list)


NEGLIGIBLE = 0.01  # a component below this share of the total variance is reported as negligible


def fit_mixed(scores: pd.DataFrame, metric: str) -> MixedFit | None:
    """None when the study cannot support the model (one budget, or fewer than 3 subjects)."""
    import statsmodels.formula.api as smf

    data = fine_tuned(scores)[lambda d: d[metric].notna()].copy()
    if data["n"].nunique() < 2 or data["subject"].nunique() < 3:
        return None
    data = data.rename(columns={metric: "dice"})
    data["log_n"] = np.log(data["n"].astype(float))
    data["run"] = data["strategy"].astype(str) + "|" + data["n"].astype(str) + "|" + data["seed"].astype(str)
    formula = "dice ~ C(strategy) * log_n" if data["strategy"].nunique() > 1 else "dice ~ log_n"
    vc = {"subject": "0 + C(subject)", "run": "0 + C(run)"}
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        model = smf.mixedlm(formula, data, groups=data["fold"], re_formula="0", vc_formula=vc)
        try:
            result = model.fit(reml=True)
        except (np.linalg.LinAlgError, ValueError) as exc:
            return MixedFit(metric, formula.replace("dice", metric), pd.DataFrame(), {}, len(data),
                            data["subject"].nunique(), False, [f"fit failed: {exc}"])
    caught = sorted({f"{r.category.__name__}: {r.message}" for r in records
                     if not issubclass(r.category, (DeprecationWarning, FutureWarning))
                     and "boundary of the parameter space" not in str(r.message)})
    names = dict(zip(model.exog_vc.names, np.atleast_1d(result.vcomp)))
    variances = {"subject": float(names["subject"]), "training run": float(names["run"]),
                 "residual": float(result.scale)}
    total = sum(max(v, 0.0) for v in variances.values())
    caught += [f"the {k} variance is negligible (under {NEGLIGIBLE:.0%} of the total; at or near its boundary 0)"
               for k, v in variances.items() if k != "residual" and v < NEGLIGIBLE * total]
    converged = bool(result.converged)
    if not converged:
        caught.append("the fit did not converge: its estimates are not shown")
        return MixedFit(metric, formula.replace("dice", metric), pd.DataFrame(), variances, len(data),
                        data["subject"].nunique(), False, caught)
    interval = result.conf_int()
    terms = list(result.fe_params.index)
    fixed = pd.DataFrame({"term": terms, "coef": result.fe_params.to_numpy(), "se": result.bse_fe.to_numpy(),
                          "ci_low": interval.loc[terms, 0].to_numpy(), "ci_high": interval.loc[terms, 1].to_numpy(),
                          "p": result.pvalues.loc[terms].to_numpy()})
    return MixedFit(metric, formula.replace("dice", metric), fixed, variances, len(data),
                    data["subject"].nunique(), converged, caught)
