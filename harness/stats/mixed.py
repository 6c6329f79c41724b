"""Model-based summary: a linear mixed model of subject-level Dice over the whole study.

Dice ~ strategy x log(n), random intercept per test subject, seed (within subject) as a variance
component (statsmodels MixedLM, REML). It uses every run at once and shows how variance splits between
subjects, seeds and residual; the verdicts themselves come from the paired tests, not from this model.
Convergence and boundary warnings are returned with the fit, to be shown rather than hidden.
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
    variances: dict[str, float]  # subject, seed (within subject), residual
    observations: int
    subjects: int
    converged: bool
    warnings: list[str] = field(default_factory=list)


def fit_mixed(scores: pd.DataFrame, metric: str) -> MixedFit | None:
    """None when the study cannot support the model (one budget, or fewer than 3 subjects)."""
    import statsmodels.formula.api as smf

    data = fine_tuned(scores)[lambda d: d[metric].notna()].copy()
    if data["n"].nunique() < 2 or data["subject"].nunique() < 3:
        return None
    data = data.rename(columns={metric: "dice"})
    data["log_n"] = np.log(data["n"].astype(float))
    formula = "dice ~ C(strategy) * log_n" if data["strategy"].nunique() > 1 else "dice ~ log_n"
    vc = {"seed": "0 + C(seed)"} if data["seed"].nunique() > 1 else None
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        model = smf.mixedlm(formula, data, groups=data["subject"], re_formula="1", vc_formula=vc)
        try:
            result = model.fit(reml=True)
        except (np.linalg.LinAlgError, ValueError) as exc:
            return MixedFit(metric, formula, pd.DataFrame(), {}, len(data), data["subject"].nunique(), False,
                            [f"fit failed: {exc}"])
    caught = sorted({f"{r.category.__name__}: {r.message}" for r in records
                     if not issubclass(r.category, (DeprecationWarning, FutureWarning))})
    interval = result.conf_int()
    names = list(result.fe_params.index)
    fixed = pd.DataFrame({"term": names, "coef": result.fe_params.to_numpy(), "se": result.bse_fe.to_numpy(),
                          "ci_low": interval.loc[names, 0].to_numpy(), "ci_high": interval.loc[names, 1].to_numpy(),
                          "p": result.pvalues.loc[names].to_numpy()})
    variances = {"subject": float(result.cov_re.iloc[0, 0]), "residual": float(result.scale)}
    if vc:
        variances["seed"] = float(result.vcomp[0])
    return MixedFit(metric, formula.replace("dice", metric), fixed, variances, len(data),
                    data["subject"].nunique(), bool(result.converged), caught)
