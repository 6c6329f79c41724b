"""The stopping rule applied to training logs made elsewhere: one row per run of a per-epoch validation log.

A lab can ask of its own logs (or the published study's, ``../shared/data/cmr-seg-tl/train_log_combined.csv``)
where the harness's rule would have stopped, which weights it would have kept, and how they compare with the
best and the last epoch.
"""
from __future__ import annotations

import dataclasses

import pandas as pd

from harness.train.stopping import StoppingRule, stop_point


def rule_on_logs(log: pd.DataFrame, rule: StoppingRule, run: str = "model", epoch: str = "epoch",
                 scores: tuple[str, ...] = ("diceLV", "diceMY")) -> pd.DataFrame:
    """Per run of ``log`` (one row per check, in epoch order): where ``rule`` stops (its cap: the log's own
    length), the reason, and the kept, best and last checks' scores (the mean of ``scores``) and each score.
    A log ran under its own learning-rate schedule, which the rule cannot lower: its first plateau stops it."""
    rows = []
    for name, part in log.groupby(run, sort=False):
        part = part.sort_values(epoch)
        score = part[list(scores)].mean(axis=1).to_numpy(float)
        bounded = dataclasses.replace(rule, max_checks=max(len(score) - 1, 1), reductions=0)
        index, decision = stop_point(list(score), bounded)
        best = int(score.argmax())
        row = {run: name, "epochs": len(part), "stop_epoch": int(part[epoch].iloc[index]), "reason": decision.reason,
               "kept_epoch": int(part[epoch].iloc[decision.best]), "kept_score": float(score[decision.best]),
               "best_epoch": int(part[epoch].iloc[best]), "best_score": float(score[best]),
               "last_score": float(score[-1])}
        for column in scores:
            values = part[column].to_numpy(float)
            row.update({f"kept_{column}": float(values[decision.best]), f"best_{column}": float(values.max()),
                        f"last_{column}": float(values[-1])})
        rows.append(row)
    return pd.DataFrame(rows)
