"""The harness's stopping rule applied to the published study's 27 validation logs (docs/benchmarks.md).

    python bench/published_logs.py [../shared/data/cmr-seg-tl/train_log_combined.csv]

Prints a markdown table: per run, the epoch the rule stops at, the validation Dice (LV / MY) of the epoch it
keeps, the best epoch and the last (the published protocol kept the last).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pandas as pd

from harness.stats.training import rule_on_logs
from harness.train.settings import TrainSettings

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmr-seg-tl" / "train_log_combined.csv"


def main(path: Path = DEFAULT) -> None:
    rule = dataclasses.replace(TrainSettings().rule(), reductions=0)  # a log's rate was its own: no reductions
    table = rule_on_logs(pd.read_csv(path), rule)
    print(f"rule: {rule.text()} (the logs ran under their own learning-rate schedules: the first plateau stops)\n")
    print("| run | epochs | stops at | kept epoch | kept LV / MY | best epoch | best LV / MY | last LV / MY |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table.itertuples():
        print(f"| {r.model} | {r.epochs} | {r.stop_epoch} ({r.reason}) | {r.kept_epoch} | {r.kept_diceLV:.3f} / "
              f"{r.kept_diceMY:.3f} | {r.best_epoch} | {r.best_diceLV:.3f} / {r.best_diceMY:.3f} | "
              f"{r.last_diceLV:.3f} / {r.last_diceMY:.3f} |")
    saved = 1 - table["stop_epoch"].add(1).sum() / table["epochs"].sum()
    gain = (table["kept_score"] - table["last_score"])
    print(f"\n{len(table)} runs; the rule trains {saved:.0%} fewer epochs than the published schedule; kept minus last "
          f"score (mean of LV and MY): median {gain.median():+.3f}, range {gain.min():+.3f} to {gain.max():+.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
