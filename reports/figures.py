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


def subject_lines(scores: pd.DataFrame, metrics: list[str]) -> bytes:
    """PNG bytes: each test subject's mean Dice (seeds averaged) at every configuration, one line per subject,
    so paired differences between strategies and budgets show subject by subject; black diamonds: means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = scores.groupby(["strategy", "n", "subject"], sort=False)[metrics].mean().reset_index()
    configs = means[["strategy", "n"]].drop_duplicates()
    configs = configs.assign(base=configs["strategy"] != "base").sort_values(["base", "strategy", "n"])
    labels = [s if s == "base" else f"{s}\nn = {n}" if n else s for s, n in zip(configs["strategy"], configs["n"])]
    position = {(s, n): i for i, (s, n) in enumerate(zip(configs["strategy"], configs["n"]))}
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(5.2, 0.9 * len(labels) + 2) * len(metrics) / 1.4, 3.8),
                             squeeze=False)
    subjects = means["subject"].nunique()
    for ax, metric in zip(axes[0], metrics):
        for _, rows in means.groupby("subject", sort=False):
            x = [position[s, n] for s, n in zip(rows["strategy"], rows["n"])]
            order = sorted(range(len(x)), key=x.__getitem__)
            ax.plot([x[i] for i in order], rows[metric].to_numpy()[order], color="#4477aa",
                    alpha=max(0.15, min(0.8, 6 / subjects)), linewidth=1, marker=".", markersize=3)
        centre = means.groupby(["strategy", "n"], sort=False)[metric].mean()
        ax.scatter([position[k] for k in centre.index], centre.to_numpy(), color="black", marker="D", zorder=3,
                   s=22, label="mean over subjects")
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylabel(f"{metric.replace('dice_', '').upper()} Dice per test subject")
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
