"""The report's figures: learning curves (against subjects and labelled images) and per-subject lines."""
from __future__ import annotations

import io

import pandas as pd


AXES = {"subjects": ("n", "labelled subjects (n)"), "images": ("labelled_images", "labelled images (annotation cost)")}


def learning_curves(summary: pd.DataFrame, base: pd.DataFrame, curves: pd.DataFrame | None = None,
                    reference_dice: dict[str, float] | None = None, budget_label: str | None = None) -> bytes:
    """PNG bytes: one column per metric, Dice against labelled subjects (top) and labelled images (bottom);
    the source-only base model dashed; the fitted curve (where 4+ budgets identify it) with x* marked; an
    optional reference Dice dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from harness.stats.curves import CURVES

    functions = {c.name: c.f for c in CURVES}
    metrics = list(dict.fromkeys(summary["metric"]))
    fig, axes = plt.subplots(2, len(metrics), figsize=(5.2 * len(metrics), 7.2), squeeze=False)
    colours = {s: f"C{i}" for i, s in enumerate(sorted(summary["strategy"].unique()))}
    for row, (axis, (column, label)) in enumerate(AXES.items()):
        label = budget_label if budget_label and axis == "subjects" else label
        for ax, metric in zip(axes[row], metrics):
            part = summary[summary["metric"] == metric]
            for strategy, points in part.groupby("strategy", sort=True):
                points = points.sort_values(column)
                x = points[column].to_numpy(float)
                colour = colours[strategy]
                ax.plot(x, points["mean"], marker="o", color=colour, label=strategy)
                ax.fill_between(x, points["ci_low"], points["ci_high"], color=colour, alpha=0.2)
                fit = curves[(curves["strategy"] == strategy) & (curves["metric"] == metric)
                             & (curves["axis"] == axis)] if curves is not None and len(curves) else pd.DataFrame()
                if len(fit) and fit["curve"].notna().iloc[0] and fit["budgets"].iloc[0] >= 4:
                    f = fit.iloc[0]
                    grid = np.geomspace(x.min(), x.max() * 1.5, 100)
                    ax.plot(grid, functions[f["curve"]](grid, f["a"], f["b"], f["c"]), color=colour, linewidth=0.8)
                    if f["x_star"] == f["x_star"]:
                        ax.axvline(f["x_star"], color=colour, linestyle=":", linewidth=1)
                        ax.annotate(f"x* = {f['x_star']:.3g}", (f["x_star"], f["target"]), fontsize=7,
                                    color=colour, xytext=(3, -10), textcoords="offset points")
            base_row = base[base["metric"] == metric]
            if len(base_row):
                ax.axhline(float(base_row["mean"].iloc[0]), color="grey", linestyle="--", label="base (no fine-tuning)")
            if reference_dice and metric in reference_dice:
                ax.axhline(reference_dice[metric], color="black", linestyle=":", label="reference Dice")
            ax.set_xscale("log")
            ticks = sorted(part[column].dropna().round().unique())
            ax.set_xticks(ticks, [f"{t:.0f}" for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel(label)
            ax.set_ylabel(f"{metric.replace('dice_', '').upper()} Dice (mean over test subjects)")
            ax.grid(alpha=0.3)
    return _png(fig, axes)


def subject_lines(scores: pd.DataFrame, metrics: list[str], budget_text=lambda n: f"n = {n}",
                  reference_dice: dict[str, float] | None = None, reference_label: str = "reference Dice") -> bytes:
    """PNG bytes: each test subject's mean Dice (seeds averaged) at every configuration, one line per subject,
    so paired differences between strategies and budgets show subject by subject; black diamonds: means; a
    black bar beside them: the range over seeds of the mean over subjects (seed spread); an optional reference
    Dice per metric (e.g. inter-observer agreement) dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = scores.groupby(["strategy", "n", "subject"], sort=False)[metrics].mean().reset_index()
    configs = means[["strategy", "n"]].drop_duplicates()
    configs = configs.assign(base=configs["strategy"] != "base").sort_values(["base", "strategy", "n"])
    labels = [s if s == "base" else f"{s}\n{budget_text(n)}" if n else s for s, n in zip(configs["strategy"], configs["n"])]
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
        # seed spread: the range over seeds of the mean over subjects (each seed is one set of training runs)
        per_seed = scores.groupby(["strategy", "n", "seed"], sort=False)[metric].mean().groupby(["strategy", "n"])
        low, high = per_seed.min(), per_seed.max()
        spread = [k for k in low.index if high[k] > low[k]]
        if spread:
            ax.vlines([position[k] + 0.12 for k in spread], [low[k] for k in spread], [high[k] for k in spread],
                      color="black", linewidth=2, label="range over seeds")
        if reference_dice and metric in reference_dice:
            ax.axhline(reference_dice[metric], color="black", linestyle=":", label=reference_label)
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylabel(f"{metric.replace('dice_', '').upper()} Dice per test subject")
        ax.grid(alpha=0.3, axis="y")
    return _png(fig, axes)


LV_COLOUR, MY_COLOUR = "#0077BB", "#EE7733"  # Paul Tol's colour-blind-safe blue and orange


def overlays(examples: dict) -> bytes:
    """PNG bytes: a row per shown subject (best, median, worst); per phase the base model (where there is one)
    and the fine-tuned model, prediction filled, reference as contour lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap

    rows = examples["rows"]
    with_base = any(r["base"] for r in rows)
    models = (["base", "tuned"] if with_base else ["tuned"])
    columns = [(phase, model) for phase in ("ED", "ES") for model in models]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.3 * len(columns), 2.5 * len(rows)), squeeze=False)
    fill = ListedColormap([(0, 0, 0, 0), LV_COLOUR, MY_COLOUR])
    for r, row in enumerate(rows):
        for c, (phase, model) in enumerate(columns):
            ax = axes[r][c]
            ax.set_axis_off()
            shown = (row[model] or {}).get(phase)
            if shown is None:
                ax.text(0.5, 0.5, "not shown", ha="center", va="center", fontsize=8, transform=ax.transAxes)
                continue
            ax.imshow(shown["image"], cmap="gray", vmin=0, vmax=255)
            ax.imshow(np.ma.masked_equal(shown["pred"], 0), cmap=fill, vmin=0, vmax=2, alpha=0.45,
                      interpolation="nearest")
            # the reference as endocardium (LV border, blue) and epicardium (outer MY border, orange)
            for region, colour in ((shown["ref"] >= 1, MY_COLOUR), (shown["ref"] == 1, LV_COLOUR)):
                if region.any():
                    ax.contour(region, levels=[0.5], colors=[colour], linewidths=1.2)
            name = "base model" if model == "base" else "fine-tuned"
            ax.set_title(f"{row['rank']} ({row['subject']}, Dice {row['dice']:.2f})\n{phase}, {name}" if c == 0
                         else f"{phase}, {name}", fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _png(fig, axes) -> bytes:
    """The figure as PNG bytes, legend in the first panel, closed after."""
    import matplotlib.pyplot as plt

    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def cost_curves(costs: pd.DataFrame, base: pd.DataFrame, cheapest: pd.DataFrame | None = None,
                reference: tuple[str, int] | None = None) -> bytes:
    """PNG bytes: one panel per metric, mean Dice (95% CI bars) against the expert hours its labels cost, one
    line per strategy; the base model dashed; the reference ringed; the cheapest configuration non-inferior to
    it marked with a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(costs["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.9), squeeze=False)
    colours = {s: f"C{i}" for i, s in enumerate(sorted(costs["strategy"].unique()))}
    stars = set() if cheapest is None else {(s, int(n)) for s, n in zip(cheapest["strategy"], cheapest["n"])}
    for ax, metric in zip(axes[0], metrics):
        part = costs[(costs["metric"] == metric) & costs["expert_minutes"].notna()]
        starred_label = "cheapest within margin"
        for strategy, points in part.groupby("strategy", sort=True):
            points = points.sort_values("expert_minutes")
            hours = points["expert_minutes"].to_numpy(float) / 60
            colour = colours[strategy]
            ax.errorbar(hours, points["mean"], yerr=[points["mean"] - points["ci_low"], points["ci_high"] - points["mean"]],
                        marker="o", color=colour, label=strategy, capsize=2, linewidth=1.2)
            marks = [(reference, "o", 13, "reference")] + [((strategy, n), "*", 16, starred_label)
                                                          for s, n in sorted(stars) if s == strategy]
            for config, marker, size, label in marks:
                if config is not None and config[0] == strategy:
                    at = points[points["n"] == config[1]]
                    if len(at):
                        ax.plot(at["expert_minutes"] / 60, at["mean"], marker=marker, markersize=size,
                                markerfacecolor="none" if marker == "o" else "gold", markeredgecolor="black",
                                linestyle="none", label=label)
                        if marker == "*":
                            starred_label = "_nolegend_"
        base_row = base[base["metric"] == metric]
        if len(base_row):
            ax.axhline(float(base_row["mean"].iloc[0]), color="grey", linestyle="--", label="base (no fine-tuning)")
        ax.set_xlabel("expert hours of labelling (mean over runs)")
        ax.set_ylabel(f"{metric.replace('dice_', '').upper()} Dice (mean over test subjects)")
        ax.grid(alpha=0.3)
    return _png(fig, axes)


def training_curves(training: pd.DataFrame, budget_text=lambda n: f"n = {n}") -> bytes:
    """PNG bytes: one column per budget; validation Dice (mean of LV and MY, top) and training loss (bottom)
    against training images seen, median (line) and range (band) over each configuration's runs, every run's
    kept check marked. Each run's record is interpolated onto a common grid of images seen; a run counts up
    to its last check (a run that stopped early leaves the band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    budgets = sorted(int(n) for n in training["n"].unique())
    fig, axes = plt.subplots(2, len(budgets), figsize=(3.6 * len(budgets) + 1.0, 6.4), squeeze=False,
                             sharey="row")
    methods = sorted(training["strategy"].unique())
    colours = {s: f"C{i}" for i, s in enumerate(methods)}
    for col, n in enumerate(budgets):
        at = training[training["n"] == n]
        for method, part in at.groupby("strategy", sort=True):
            runs = [r.sort_values("images_seen") for _, r in part.groupby("run", sort=True)]
            end = max(float(r["images_seen"].max()) for r in runs)
            grid = np.linspace(0.0, end, 60)
            for row, column in enumerate(("val_score", "loss")):
                curves = []
                for r in runs:
                    known = r[r[column].notna()]
                    if len(known) < 2:
                        continue
                    x, y = known["images_seen"].to_numpy(float), known[column].to_numpy(float)
                    curves.append(np.where((grid >= x.min()) & (grid <= x.max()), np.interp(grid, x, y), np.nan))
                if not curves:
                    continue
                stack = np.vstack(curves)
                alive = np.isfinite(stack).any(axis=0)
                ax = axes[row][col]
                with np.errstate(all="ignore"):
                    median = np.nanmedian(stack[:, alive], axis=0)
                    low, high = np.nanmin(stack[:, alive], axis=0), np.nanmax(stack[:, alive], axis=0)
                colour = colours[method]
                ax.plot(grid[alive], median, color=colour, label=f"{method} ({len(curves)} runs)")
                ax.fill_between(grid[alive], low, high, color=colour, alpha=0.2)
                if column == "val_score":
                    kept = part[part["kept"].astype(bool) & part["val_score"].notna()]
                    ax.plot(kept["images_seen"], kept["val_score"], linestyle="none", marker="v", markersize=4,
                            color=colour, alpha=0.8)
        axes[0][col].set_title(budget_text(n))
        axes[1][col].set_xlabel("training images seen")
        for row in (0, 1):
            axes[row][col].grid(alpha=0.3)
    axes[0][0].set_ylabel("validation Dice (mean of LV and MY)")
    axes[1][0].set_ylabel("training loss (cross-entropy)")
    if np.isfinite(training["loss"].to_numpy(float)).any() and (training["loss"] > 0).any():
        for ax in axes[1]:
            ax.set_yscale("log")
    if not training["val_score"].notna().any():  # no validation subjects: the losses alone
        for ax in axes[0]:
            ax.text(0.5, 0.5, "no validation subjects:\nno convergence check ran", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        return _png(fig, [axes[1]])
    return _png(fig, axes)
