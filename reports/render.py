"""Turn a study folder into report.md and a self-contained report.html (figures embedded, no network).

The numbers come from `harness.analysis`; this module writes the page: the tables (`harness.reports.tables`),
the words about the study (`harness.reports.methods`), the guideline sentences and the figures.
"""
from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import jinja2
import pandas as pd

from harness import stats
from harness.analysis import Analysis, Options, analyse
from harness.reports.figures import cost_curves, learning_curves, overlays, subject_lines, training_curves
from harness.reports.guideline import BUDGET_UNIT, budget_unit, config_text, guideline, n_text, unit_word
from harness.reports.methods import caveats, methods_paragraph, settings_lines
from harness.reports.tables import named_cheapest, tables


# 10 significant digits: the statistics' precision, without float artefacts such as 0.30000000000000004 (whose
# digit runs could even match a DICOM placeholder value such as a birth date of 00000000 in the privacy test)
CSV_FLOATS = "%.10g"


# the tables of an analysis against another reference annotation that the report repeats (all are in tables/)
OTHER_REFERENCE_TABLES = ("Dice on the test subjects", "Non-inferiority", "Fine-tuned vs", "Strategies at equal")


def render(study_dir: Path, options: Options | None = None) -> tuple[Path, Path]:
    """Write report.md (figure beside it) and a self-contained report.html into the study folder."""
    study_dir = Path(study_dir)
    return write(analyse(study_dir, options), study_dir, "Data-efficiency study")


def write(a: Analysis, folder: Path, title: str) -> tuple[Path, Path]:
    """report.md, report.html and the tidy tables (csv) of an analysis, into `folder`."""
    with budget_unit(a.settings):
        return _write(a, folder, title)


def _write(a: Analysis, folder: Path, title: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    figures = []  # (file, caption)
    if a.summary["n"].nunique() > 1:
        drawn = ", ".join(f"{k.replace('dice_', '').upper()} {v:g}" for k, v in a.options.reference_dice.items())
        budget_label = "budget of expert minutes" if BUDGET_UNIT.get() == "minutes" else None
        figures.append(("learning_curves.png", learning_curves(a.summary, a.base, a.curves, a.options.reference_dice,
                                                               budget_label),
                        f"Mean Dice over test subjects against the budget ({unit_word()}, top) and labelled images, the "
                        "annotation cost (bottom), log scales; bands: 95% hierarchical bootstrap CI; dashed: "
                        "source-only base model; thin lines: the fitted learning curve where at least 4 budgets "
                        "identify it, with x* (the budget reaching the reference − margin) marked where it is "
                        "estimated" + (f"; dotted: the given reference Dice ({drawn})" if drawn else "") + "."))
    if len(a.costs):
        starred = pd.DataFrame(named_cheapest(a), columns=["strategy", "n"])
        figures.append(("cost.png", cost_curves(a.costs, a.base, starred, a.reference),
                        "Mean Dice over test subjects against the expert hours its labels cost, one line per strategy "
                        "(bars: 95% hierarchical bootstrap CI); dashed: source-only base model; ring: the reference; "
                        "gold stars: the cheapest label-free configurations non-inferior to it on both LV and MY."))
    metrics = [m for m in stats.METRICS if m in a.subjects and a.subjects[m].notna().any()]
    if len(a.subjects) and metrics:
        observer = a.inter_observer["annotation"].iloc[0] if len(a.inter_observer) else None
        if observer and a.options.reference_dice != {r.metric: float(r.mean) for r in a.inter_observer.itertuples()}:
            observer = None  # the line is the Dice the user gave (--reference-dice), not the inter-observer one
        label = f"inter-observer ({observer})" if observer else "reference Dice"
        drawn = ", ".join(f"{k.replace('dice_', '').upper()} {v:.3f}" for k, v in a.options.reference_dice.items())
        figures.append(("subjects.png", subject_lines(a.subjects, metrics, n_text, a.options.reference_dice, label),
                        "Each test subject's Dice (seeds averaged) at every strategy and budget, one line per "
                        "subject: the paired differences the tests use; black diamonds: means over subjects; black bars "
                        "beside them: the range over seeds of that mean (seed spread)"
                        + (f"; dotted: {'the inter-observer agreement, ' + observer + ' against the main reference' if observer else 'the given reference Dice'} ({drawn})" if drawn else "")
                        + "."))
    if len(a.training) and a.training["n"].nunique():
        figures.append(("training_curves.png", training_curves(a.training, n_text),
                        "Training curves, one panel per budget: validation Dice (mean of LV and MY on the fold's "
                        "validation subjects, the score the stopping rule reads; top) and training loss (bottom) "
                        "against training images seen; lines: median over the configuration's runs, bands: their "
                        "range; triangles: the check whose weights each run kept. A curve still rising at its right "
                        "end is a budget that did not finish learning."))
    if a.examples:
        e = a.examples
        figures.append(("examples.png", overlays(e),
                        f"Test images of the best, median and worst test subject (mean of LV and MY Dice) of "
                        f"{config_text(e['label'], e['n'])}, seed {e['seed']}, mid-ventricular slice at ED and ES"
                        + (", the source-only base model beside the fine-tuned one" if any(r["base"] for r in e["rows"])
                           else "") + ". Filled: the prediction (LV blue, MY orange); lines: the reference's endocardium (blue) and "
                        "epicardium (orange)."))
    for name, png, _ in figures:
        (folder / name).write_bytes(png)
    tables_dir = folder / "tables"
    tables_dir.mkdir(exist_ok=True)
    names = ["image_means", "images", "subjects", *(["runs"] if len(a.runs) else []),
             *(["training"] if len(a.training) else []),
             *(["costs", "cheapest"] if len(a.costs) else []), "summary", "base", "extra",
             "noninferiority", "enough", "versus_base", "budgets", "strategies", "friedman", "curves", "planning",
             "image_level"]
    for name in names:  # image_means is indexed by (strategy, n); the others are plain tables
        getattr(a, name).to_csv(tables_dir / f"{name}.csv", index=name == "image_means", float_format=CSV_FLOATS)
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.reports", "templates"), autoescape=False,
                             trim_blocks=True, lstrip_blocks=True)
    said, shown = guideline(a), tables(a)
    for reference, other in a.others.items():  # results against another reference annotation, after the main one
        said += [f"Against reference annotation {reference}: {sentence}" for sentence in guideline(other)]
        shown += [dataclasses.replace(t, title=f"{t.title} (against {reference})") for t in tables(other)
                  if t.title.startswith(OTHER_REFERENCE_TABLES)]
        other_dir = tables_dir / ("against-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in reference))
        other_dir.mkdir(exist_ok=True)
        for name in ("summary", "noninferiority", "versus_base", "strategies", "subjects"):
            getattr(other, name).to_csv(other_dir / f"{name}.csv", index=False, float_format=CSV_FLOATS)
    if len(a.versus_observer):
        a.inter_observer.to_csv(tables_dir / "inter_observer.csv", index=False, float_format=CSV_FLOATS)
        a.versus_observer.to_csv(tables_dir / "versus_observer.csv", index=False, float_format=CSV_FLOATS)
    context = {"guideline": said, "tables": shown, "settings": settings_lines(a),
               "methods": methods_paragraph(a),
               "caveats": caveats(a), "failed": a.failed, "title": title,
               "data_warnings": a.settings.get("data_warnings", []),
               "figures": [{"file": name, "b64": base64.b64encode(png).decode(), "caption": caption,
                            "alt": name.removesuffix(".png").replace("_", " ")} for name, png, caption in figures]}
    md = folder / "report.md"
    html = folder / "report.html"
    env.filters["md"] = _markdown
    env.filters["md_cell"] = lambda text: _markdown(text, cell=True)
    md.write_text(env.get_template("report.md.j2").render(**context))
    env.autoescape = True
    html.write_text(env.get_template("report.html.j2").render(inline=_inline, **context))
    return md, html


def _markdown(text: object, cell: bool = False) -> str:
    """Report text for markdown: user-provided names (strategies, subjects, files) must show as text, never
    as markup. Everywhere, code spans included (however a name's backticks pair up), < before a letter, / ! or
    ? and & before a letter or # become entities, so no HTML can form ("p < 0.05" stays); outside code spans
    [ ] and backslashes are escaped and inside them "](" is broken, so no link can form; in table cells | is
    escaped. Line breaks become spaces and a leading block marker (#, >, a list or fence mark) is escaped, so
    a name cannot start a block of its own. The report's own **bold** and `code` stay."""
    import re

    text = " ".join(str(text).splitlines())
    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", re.sub(r"&(?=[A-Za-z#])", "&amp;", text))
    parts = re.split(r"(`[^`]*`)", text)
    for k, part in enumerate(parts):
        parts[k] = part.replace("](", "]\\(") if k % 2 else re.sub(r"([\[\]\\])", r"\\\1", part)
    text = "".join(parts)
    if cell:  # inside a table row: no block can start, but | would end the cell
        return text.replace("|", "\\|")
    text = re.sub(r"^(\s*)([#>+=~]|[-*](?=\s)|`{3})", r"\1\\\2", text)  # a heading, quote, list or fence
    return re.sub(r"^(\s*\d+)([.)])(?=\s|$)", r"\1\\\2", text)  # an ordered list


def _inline(text: str):
    """The report's inline markdown for HTML, after escaping: **x** -> <strong>, `x` -> <code>."""
    import re

    from markupsafe import Markup, escape

    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(escape(text)))
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", html))
