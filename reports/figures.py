"""The learning-curve figure: Dice against labelled subjects per strategy, with 95% CI bands."""
from __future__ import annotations

import io

import pandas as pd


def learning_curves(summary: pd.DataFrame, base: pd.DataFrame) -> bytes:
    """PNG bytes: one panel per metric; the source-only base model as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(summary["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        part = summary[summary["metric"] == metric]
        for strategy, curve in part.groupby("strategy", sort=True):
            curve = curve.sort_values("n")
            line, = ax.plot(curve["n"], curve["mean"], marker="o", label=strategy)
            ax.fill_between(curve["n"], curve["ci_low"], curve["ci_high"], color=line.get_color(), alpha=0.2)
        base_row = base[base["metric"] == metric]
        if len(base_row):
            ax.axhline(float(base_row["mean"].iloc[0]), color="grey", linestyle="--", label="base (no fine-tuning)")
        ax.set_xscale("log")
        ticks = sorted(part["n"].unique())
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("labelled subjects (n)")
        ax.set_ylabel(f"{metric.replace('dice_', '').upper()} Dice (mean over test subjects)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
