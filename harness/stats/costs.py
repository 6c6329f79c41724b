"""Dice against what the labels cost: expert minutes per configuration, gain per expert hour, and the cheapest
configuration shown non-inferior to the reference."""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.stats.tables import BASE, is_base


def cost_table(summary: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """Per strategy x n x metric: mean labelled images and expert minutes of its runs, mean Dice with its 95% CI,
    and the gain over the base model per expert hour of labelling (NaN where the study has no base model or
    the runs recorded no minutes)."""
    rows = []
    base_mean = base[base["strategy"] == BASE].set_index("metric")["mean"] if len(base) else pd.Series(dtype=float)
    for r in summary[~is_base(summary["strategy"])].itertuples():
        minutes = getattr(r, "expert_minutes", np.nan)
        hours = minutes / 60 if minutes == minutes and minutes > 0 else np.nan
        gain = r.mean - base_mean.get(r.metric, np.nan)
        rows.append({"strategy": r.strategy, "n": r.n, "metric": r.metric, "labelled_images": r.labelled_images,
                     "expert_minutes": minutes, "mean": r.mean, "ci_low": r.ci_low, "ci_high": r.ci_high,
                     "gain_over_base": gain, "gain_per_expert_hour": gain / hours if hours == hours else np.nan})
    return pd.DataFrame(rows, columns=["strategy", "n", "metric", "labelled_images", "expert_minutes", "mean",
                                       "ci_low", "ci_high", "gain_over_base", "gain_per_expert_hour"])


def cheapest(noninferiority: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """The configurations non-inferior to the reference on every metric tested, cheapest in expert minutes first
    (empty where none is, or no run recorded minutes)."""
    if noninferiority.empty or costs.empty:
        return pd.DataFrame(columns=["strategy", "n", "expert_minutes", "reference"])
    shown = noninferiority.groupby(["strategy", "n"]).agg(all_shown=("non_inferior", "all"),
                                                          reference=("reference", "first")).reset_index()
    shown = shown[shown["all_shown"] & (shown["n"] > 0)]
    minutes = costs.groupby(["strategy", "n"])["expert_minutes"].first().reset_index()
    out = shown.merge(minutes, on=["strategy", "n"]).dropna(subset=["expert_minutes"])
    return out.sort_values(["expert_minutes", "strategy"])[["strategy", "n", "expert_minutes", "reference"]] \
        .reset_index(drop=True)
