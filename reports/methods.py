"""The report's words about how a study was made: settings, the methods paragraph to paste into a paper, and
the caveats."""
from __future__ import annotations

import platform
from importlib import metadata

import numpy as np

from harness.analysis import Analysis, oracles
from harness.reports.guideline import config_text
from harness.reports.tables import TEST_TEXT, margin_reason


EMPTY_TEXT = {
    "both-one": "an image where both the reference and the prediction are empty for a class scores 1, "
                "one empty and the other not scores 0 (the published study's convention)",
    "ignore": "images where both the reference and the prediction are empty for a class are left out of "
              "that class's mean (nnU-Net/MONAI convention)",
}


def _annotations_text(s: dict) -> str:
    """Which reference annotation the results were scored against, the others analysed beside it and the
    inter-observer annotation (results made elsewhere); empty where the files name none."""
    if not s.get("reference_annotation"):
        return ""
    text = f" Reference annotation: {s['reference_annotation']}"
    if s.get("other_references"):
        text += f"; the methods against {', '.join(s['other_references'])} were analysed the same way, separately"
    if s.get("inter_observer"):
        text += (f"; {s['inter_observer']} scored against {s['reference_annotation']} gave the inter-observer "
                 "agreement, with each method's paired difference from it over test subjects (95% t interval)")
    return text + "."


def settings_lines(a: Analysis) -> list[str]:
    common = [
        f"Statistics: unit = test subject ({a.test_subjects}); image Dice averaged within subject and run, then "
        f"seeds within subject. Guideline: non-inferiority to {_reference_text(a)} within margin "
        f"{a.options.margin:g} ({margin_reason(a.options.margin)}), one-sided α = {a.options.alpha:g}. Two-sided comparisons: "
        f"{TEST_TEXT[a.options.test]}. Software: scipy {metadata.version('scipy')}, statsmodels "
        f"{metadata.version('statsmodels')}.",
        f"Dice: per 2D image, classes LV blood pool and LV myocardium; empty-mask convention "
        f"`{a.options.empty}`: {EMPTY_TEXT[a.options.empty]}.",
        "Files: every table of this report as CSV in `tables/`, with the Dice of every test image and run "
        "(`tables/images.csv`) and of every test subject and run (`tables/subjects.csv`).",
    ]
    if a.settings.get("kind") == "table":
        s = a.settings
        return [f"Input: per-image results made elsewhere ({', '.join(s['files'])}); {s['rows']} image rows"
                f"{' of set ' + repr(s['set']) if s.get('set') else ''}; subject from {s['subject_from']}, "
                f"method from column `{s['method_column']}`; {'Dice from confusion counts' if s['counts'] else 'Dice columns as given'}."
                + _annotations_text(s)] + common
    return _study_lines(a) + common


def _reference_text(a: Analysis) -> str:
    if a.reference:
        return config_text(*a.reference)
    return "each strategy's own largest n (no all_frames in the study; set one with --reference)"


def _study_lines(a: Analysis) -> list[str]:
    s = a.settings
    t = s["train"]
    splits = s.get("splits") or [s["split"]]
    software = _recorded_software(a)
    if software:
        software_line = f"Software, as recorded by the runs when they ran: {software}."
    else:  # runs of versions before 0.5 did not record theirs
        software_line = (f"Software (the runs recorded none; versions when this report was written): torch "
                         f"{_installed('torch')}, segmentation-models-pytorch "
                         f"{_installed('segmentation-models-pytorch')}, Python {platform.python_version()}.")
    if s.get("data"):
        data = (f"Data: {s.get('dataset_name', s['data'])}, {s.get('subjects_total', '?')} subjects, labelled "
                f"frames only; label map {s.get('labels') or 'the layout default'}; prepared-data fingerprint "
                f"`{s['dataset']}`.")
    else:
        data = (f"Data: built-in cine phantom, target domain (7T GRE-like), {s['target_subjects']} subjects "
                f"(data seed {s['data_seed']}); dataset fingerprint `{s['dataset']}`.")
    if len(splits) > 1:
        split_text = (f"Cross-validation over subjects, {len(splits)} folds (split seed {s['split_seed']}): every "
                      f"subject is a test subject once ({len(splits[0]['test'])} per fold); per fold "
                      f"{len(splits[0]['validation'])} validation subjects taken from the training side and "
                      f"{len(splits[0]['pool'])} in the training pool; test and validation subjects never enter a "
                      "training subset of their fold.")
    else:
        split = splits[0]
        split_text = (f"Split by subject (split seed {s['split_seed']}): {len(split['pool'])} in the training pool, "
                      f"{len(split['validation'])} validation, {len(split['test'])} test "
                      f"({', '.join(split['test'])}); test and validation subjects never enter a training subset.")
    stride = s.get("test_stride", 1)
    scored = f"Test Dice over {_scored_frames(stride)} of each test subject" + (
        "." if stride == 1 else f" (about 1/{stride} of its frames, the whole cycle represented; the same images "
        "for every run, so paired comparisons are unaffected).")
    return [
        data,
        split_text + " " + scored,
        f"Strategies: {', '.join(s['strategies'])}; {_budget_text(s)}; "
        f"{s['seeds']} seeds per configuration and fold (seeds {s['first_seed']}–{s['first_seed'] + s['seeds'] - 1}). "
        "At each seed the subjects drawn are the same for every strategy and nested across n"
        + (" (with budgets in minutes: every strategy ranks the pool's images, subjects in that order, and a budget "
           "takes the longest start of its ranking that it can pay for, so smaller budgets are nested in larger)."
           if s.get("budget_minutes") else "."),
        *([f"Strategy parameters: " + "; ".join(f"{name} " + ", ".join(f"{k}={v}" for k, v in sorted(p.items()))
                                                 for name, p in sorted(s["params"].items()))
           + " (set with --strategy-param; the tables name the strategy alone)."] if s.get("params") else []),
        *cost_lines(s),
        f"Model: U-Net ({t['encoder']} encoder, decoder widths {', '.join(map(str, t['decoder_channels']))}; "
        "segmentation-models-pytorch).",
        *init_lines(s),
        fine_tuning_text(t, bool((s.get("splits") or [s.get("split") or {}])[0].get("validation")), _random_init(s)),
        *tuned_lines(s),
        software_line,
    ]


def _budget_text(s: dict) -> str:
    if s.get("budget_minutes"):
        return f"budgets of {', '.join(map(str, s['budget_minutes']))} expert minutes each"
    return f"n = {', '.join(map(str, s['ns']))} subjects"


def cost_lines(s: dict) -> list[str]:
    """What labels cost (the cost model, its values and source), which strategies are oracles, and the
    selection model's view: what it cost and how well its ED/ES match the labels'."""
    out = []
    model = s.get("cost_model") or {}
    if model.get("unit") == "minutes" or s.get("strategy_uses") is not None:
        timed = model if model.get("unit") == "minutes" else None
        from harness.cost import CONTOURS

        shown = timed or CONTOURS.to_dict()
        per_region = {r: sum(shown["seconds"][d][r] for d in shown["draw"]) for r in ("basal", "mid", "apical")}
        out.append(f"Annotation cost{'' if timed else ' (reported beside the image counts; the budgets count subjects)'}: "
                   f"cost model `{shown['name']}`, drawing {', '.join(shown['draw'])}: "
                   f"{per_region['basal']:g} / {per_region['mid']:g} / {per_region['apical']:g} expert seconds per image "
                   f"of a basal / mid / apical slice (thirds of the stack); source: {shown['source']}.")
    oracle = sorted(oracles(s))
    if oracle:
        out.append(f"Oracles: {', '.join(oracle)} read the labels when choosing images (ED/ES found from the "
                   "contours, or subsets chosen by someone who had them): baselines no lab can run before "
                   "labelling; every table names them \"(oracle)\".")
    for key, view in (s.get("pool_views") or {}).items():
        cost = (f"{view['computed_images']} pool images predicted in {view['seconds']:.0f} s "
                f"({view['seconds_per_1000_images']} s per 1,000 images)" if view.get("computed_images") else
                f"read from the cache ({view.get('cached_images')} images, {view.get('seconds', 0):.2f} s)")
        error = view.get("frame_error") or {}
        frames = ""
        if error.get("subjects"):
            frames = (f"; its ED/ES (largest / smallest predicted LV volume) against those found from the labels, over "
                      f"{error['subjects']} pool subjects (median {error['labelled_frames_median']:g} labelled frames): "
                      f"mean cyclic frame error ED {error['ed_mean']:.2f}, ES {error['es_mean']:.2f} frames, exact in "
                      f"{100 * error['ed_exact']:.0f}% / {100 * error['es_exact']:.0f}% of subjects")
        out.append(f"Selection model `{key}` (the model whose predictions ed_es_predicted, foreground_random, uncertain "
                   f"and typical read; images only, never labels): view of {view.get('subjects')} subjects, {cost}"
                   f"{frames}.")
    return out


def methods_paragraph(a: Analysis) -> str:
    """The study's methods as one paragraph to paste into a paper: data, split, sampling, model, training,
    evaluation and statistics, with the software the runs recorded."""
    s, o = a.settings, a.options
    statistics = (
        f"The unit of analysis was the test subject (image Dice averaged within subject and run, then over seeds). "
        f"Non-inferiority to {config_text(*a.reference) if a.reference else 'each strategy at its largest budget'} "
        f"within a margin of {o.margin:g} Dice was tested one-sided at "
        f"α = {o.alpha:g} in a fixed sequence from the largest budget down, with 90% confidence intervals; "
        f"differences from the base model, between budgets and between strategies used the {TEST_TEXT[o.test]}, "
        "with Holm's correction within each family; confidence intervals of mean Dice came from a hierarchical "
        "bootstrap-t over folds, test subjects and seeds (2000 resamples).")
    if a.design_text:
        statistics = statistics.replace(
            "was tested one-sided at ", "was tested group-sequentially (below), one-sided at ").replace(
            "with 90% confidence intervals;", "with repeated 90% confidence intervals;") + " " + a.design_text
    if s.get("kind") == "table":
        return (f"Per-image segmentation results ({', '.join(s['files'])}; {s['rows']} images of "
                f"{a.test_subjects} test subjects) were analysed with cine-harness {_installed('cine-harness')}. "
                f"Dice was computed per 2D image for the LV blood pool and LV myocardium "
                f"({EMPTY_TEXT[o.empty]}).{_annotations_text(s)} " + statistics)
    t = s["train"]
    splits = s.get("splits") or [s["split"]]
    data = (f"{s.get('dataset_name', s['data'])} ({s.get('subjects_total', '?')} subjects, labelled frames only)"
            if s.get("data") else
            f"the built-in synthetic cine phantom's 7T-like target domain ({s['target_subjects']} subjects)")
    if len(splits) > 1:
        split = (f"{len(splits)}-fold cross-validation over subjects (each subject tested once, "
                 f"{len(splits[0]['test'])} per fold; {len(splits[0]['validation'])} validation subjects per fold "
                 "from its training side)")
    else:
        split = (f"one split by subject ({len(splits[0]['pool'])} in the training pool, {len(splits[0]['validation'])} "
                 f"validation, {len(splits[0]['test'])} test)")
    models = s.get("init_models") or {"source": {"kind": "source"}}
    origin = {"source": f"a model pre-trained on {s['source_subjects']} subjects of the phantom's 1.5T-like source "
                        "domain", "imagenet": "an ImageNet encoder", "random": "random weights"}
    inits = " and ".join(origin.get(models[name]["kind"], f"the checkpoint `{name}`")
                         for name in (s.get("init_names") or list(models)))
    schedule = t.get("schedule", "fast")
    validated = bool(splits[0].get("validation"))
    steps = (f"{t['steps_frozen']} steps with the encoder frozen (BatchNorm trainable) and {t['steps_unfrozen']} "
             f"with all layers, one-cycle learning rates to {t['lr_frozen']:g} and {t['lr_unfrozen']:g}"
             if schedule == "fast" else
             f"the published two-stage schedule ({t['epochs']} epochs of the whole pool's size per stage, one-cycle "
             f"to {t['lr_frozen']:g} and {t['lr_unfrozen']:g})" if schedule == "paper" else
             f"{'as long as its validation Dice improved, ' if validated else ''}all layers at "
             f"{_plateau_rate(t, validated)} after a warm-up: {rule_text(t, validated)}")
    if schedule != "plateau" and _random_init(s):
        steps += random_stages(t)
    steps += training_ranges(a)
    scored = _scored_frames(s.get("test_stride", 1))
    checked = [name for name, found in (s.get("source_overlap") or {}).items()
               if found.get("checked") and not found.get("subjects")]
    leakage = (" The source model's training images were checked by content hash to include no pixel-identical "
               "image of a test or validation subject." if checked else "")
    if s.get("tuned"):
        leakage += (" Training settings were tuned with Optuna (TPE, median pruning) separately within each fold "
                    "(nested): on fine-tunes of subsets of that fold's training pool, scored on its validation "
                    "subjects, never on its test subjects.")
    oracle = sorted(oracles(s))
    if s.get("selection_models"):
        leakage += (" Label-free strategies chose images from the images alone and a selection model's predictions "
                    "on them (predicted LV and MY area, predictive entropy and disagreement under flips, encoder "
                    "embeddings, ED/ES from the predicted LV volume curve), computed without any label.")
    if oracle:
        leakage += (f" {', '.join(oracle)} read the labels to choose images (oracle baselines, not choices a lab can "
                    "make before labelling).")
    model = s.get("cost_model") or {}
    if model.get("unit") == "minutes":
        leakage += (f" Annotation cost was counted in expert minutes per image by slice region (cost model "
                    f"{model['name']}: {model['source']}).")
    recorded = _recorded_software(a)
    software = f" Software, as recorded by the runs: {recorded}." if recorded else ""
    return (
        f"We studied how {'much expert labelling time' if s.get('budget_minutes') else 'many labelled subjects'} "
        f"fine-tuning needs on {data}, dataset fingerprint "
        f"`{s['dataset']}`, with {split}. For each fold and each of "
        + (f"{s['seeds']} seeds, " if not s.get("until_decided") else
           f"{s['seeds']} to {s['until_decided']['max_seeds']} seeds (added in rounds, below), ")
        + (f"training subsets of n = {', '.join(map(str, s['ns']))} subjects were drawn from the fold's training pool (the same subjects "
           f"for every strategy and initialisation, nested across n), and their images selected by the sampling "
           if not s.get("budget_minutes") else
           f"budgets of {', '.join(map(str, s['budget_minutes']))} expert minutes of contouring were spent on the "
           f"fold's training pool (subjects in one random order per seed for every strategy; each strategy's "
           f"ranking of their images cut where the budget ran out, so budgets are nested), with images chosen by the sampling ")
        + f"strateg{'y' if len(s['strategies']) == 1 else 'ies'} {', '.join(s['strategies'])}. A U-Net "
        f"(segmentation-models-pytorch, {t['encoder']} encoder) initialised from {inits} was fine-tuned for "
        f"{steps}, AdamW (weight decay {t['weight_decay']:g}), batch {t['batch_size']}, cross-entropy, "
        f"flip/rotation/zoom/intensity augmentation, {t['precision']} precision, at {t['size']} px"
        + (f"; the {'last' if t.get('select', 'last') == 'last' else 'best-validation'} weights were kept"
           if schedule != "plateau" else "") + f".{validation_text(a)}{leakage} Dice was computed "
        f"per 2D test image ({scored} of each test subject) for the LV blood pool and LV myocardium "
        f"({EMPTY_TEXT[o.empty]}). " + statistics
        + f" The study comprised {len(a.runs)} fine-tuning and base-model runs (cine-harness).{software}")


def training_ranges(a: Analysis) -> str:
    """' (runs at n = 2: 60-140 steps, 12-28 epochs; ...; 18 of 18 converged)': what the runs actually trained."""
    runs = a.runs[(a.runs["state"] == "done") & a.runs["steps"].notna()] if len(a.runs) else a.runs
    if not len(runs):
        return ""
    unit = "expert minutes" if a.settings.get("budget_minutes") else "n ="
    parts = []
    for n, part in runs.groupby("n", sort=True):
        steps, epochs = part["steps"].astype(float), part["epochs"].astype(float)
        at = f"{int(n)} {unit}" if unit != "n =" else f"n = {int(n)}"
        parts.append(f"at {at} {steps.min():.0f}–{steps.max():.0f} steps, {epochs.min():.1f}–{epochs.max():.1f} epochs")
    known = runs[runs["converged"].notna()]
    if not len(known):
        splits = a.settings.get("splits") or [a.settings.get("split") or {}]
        converged = ("; convergence was not checked (no validation subjects)" if not splits[0].get("validation")
                     else "; convergence unknown (runs made before cine-harness 0.9)")
    elif set(known["stop_reason"]) <= {"plateau", "cap", "diverged"}:
        converged = f"; {int(known['converged'].astype(bool).sum())} of {len(known)} runs stopped on a plateau"
    else:
        converged = (f"; in {int(known['converged'].astype(bool).sum())} of {len(known)} runs validation Dice had "
                     "stopped improving, by the stopping rule's patience, before the schedule ended")
    return " (runs " + "; ".join(parts) + converged + ")"


def validation_text(a: Analysis) -> str:
    """The validation labels a run needs beside its training labels (they are contoured too)."""
    v = a.validation
    if not v:
        return ""
    span = f"{v['images_min']:.0f}" if v["images_min"] == v["images_max"] else \
        f"{v['images_min']:.0f}–{v['images_max']:.0f}"
    minutes = f", about {v['minutes']:.0f} expert minutes" if v["minutes"] == v["minutes"] else ""
    return (f" Validation labels: {v['subjects']} subjects per fold, distinct between folds and never test or "
            f"training subjects of that fold, their labelled ED and ES frames ({span} images{minutes}) scored at "
            "every check; a lab contours them besides the training subsets.")


def _scored_frames(stride: int) -> str:
    return ("every labelled frame" if stride == 1 else
            f"ED, ES and every {_ordinal(stride)} frame of the cycle counted from ED")


def _recorded_software(a: Analysis) -> str:
    """The software versions the runs recorded (with run counts where they differ); '' when none did."""
    recorded = a.runs["software"].replace("", np.nan).dropna().value_counts()
    return "; ".join(f"{text} ({count} run{'s' if count > 1 else ''})" if len(recorded) > 1 else text
                     for text, count in recorded.items())


def _installed(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


INIT_TEXT = {"imagenet": "encoder from ImageNet, decoder and head random from each run's init seed (TL)",
             "random": "every weight random from each run's init seed (R)"}


def init_lines(s: dict) -> list[str]:
    """One sentence per initialisation: where its weights came from (the checkpoint's card, if any)."""
    models = s.get("init_models") or {"source": {"kind": "source", "fingerprint": s.get("base_model", "?")}}
    p = s["pretrain"]
    lines = []
    for name in s.get("init_names") or list(models):
        m = models[name]
        if m["kind"] == "source":
            text = (f"pre-trained on {s['source_subjects']} source-domain (1.5T bSSFP-like) phantom subjects, "
                    f"{p['steps']} steps, encoder init {p['encoder_weights'] or 'random'}")
        elif m["kind"] == "checkpoint":
            card = m.get("card")
            if card:
                tr, v = card["training"], card.get("validation") or {}
                val = (f"; validation Dice LV {v['dice_lv']:.3f} / MY {v['dice_my']:.3f} on {v['subjects']} held-out "
                       "subjects" if v else "")
                loss = (tr.get("settings") or {}).get("loss")
                loss_text = {"ce+dice": ", cross-entropy + soft Dice", "ce": ", cross-entropy"}.get(loss, "")
                text = (f"your checkpoint, pre-trained on {tr['data']} ({tr['subjects']} subjects, {tr['images']} "
                        f"images, {tr['steps']} steps{loss_text}{val})")
            else:
                text = "your checkpoint (a plain state_dict, no model card)"
        else:
            text = INIT_TEXT[m["kind"]]
        found = (s.get("source_overlap") or {}).get(name) or {}
        if found.get("checked") and not found.get("subjects"):
            text += (f"; none of its {found['source_images']} training images has the pixels (in any flip or "
                     "transpose) of an image of this study's test or validation subjects (checked by content hash; "
                     "a resampled or rescaled copy would not be found)")
        lines.append(f"Init `{name}`: {text}; weights fingerprint `{m['fingerprint']}`.")
    if len(models) > 1:
        lines.append("Inits are compared on the same test subjects, subsets and seeds (paired), as strategies are; "
                     "a method is named strategy+init.")
    return lines


def rule_text(t: dict, checked: bool = True) -> str:
    """The stopping rule of the plateau schedule, in words (harness.train.stopping), from a run's training
    settings; ``checked`` False: the study had no validation subjects, so no check could run."""
    if not checked:
        return (f"with no validation subjects no check could run: each run trained 20 intervals of max(1, "
                f"⌈{t['check_images']} / subset images⌉) epochs and kept its last weights (their moving average, "
                f"decay {t.get('average_decay', 0.95):g} a step); no convergence check ran")
    kept = ("the weights of the best check were kept, the starting weights included" if t.get("select") != "last"
            else "the last check's weights were kept")
    reductions = t.get("reductions", 0)
    took = "the checks of the phase its last improvement took" if reductions else "the checks its last improvement took"
    plateau = (f"it had not improved by more than {t['min_delta']:g} over its last improvement for "
               f"max({t['patience']}, {t['patience_fraction']:g} × {took}) checks")
    if reductions:  # counted in a phase: from the start or the last reduction
        plateau = (f"{plateau}; the first "
                   f"{reductions} such plateau(s) multiplied the learning rate by {t.get('reduce_factor', 0.2):g} and "
                   "began a new phase, counted from that check; training stopped at the next")
        stop = f"a plateau (when {plateau})"
    else:
        stop = f"a plateau (when {plateau}; training stopped there)"
    return (f"validation Dice (mean of LV and MY on the fold's validation subjects) checked before the first step "
            f"and after every max(1, ⌈{t['check_images']} / subset images⌉) epochs, of an exponential moving "
            f"average of the weights (decay {t.get('average_decay', 0.95):g} a step); a run ended at {stop}, at a "
            f"cap of {t['max_checks']} checks (not converged), or when the loss diverged; {kept}")


def _plateau_rate(t: dict, checked: bool) -> str:
    """The plateau schedule's rate in words: lowered at plateaus only where checks ran and the rule had reductions."""
    lowered = t.get("reductions") and checked
    return f"{'a learning rate' if lowered else 'a constant learning rate'} of {t['lr_unfrozen']:g}"


def _random_init(s: dict) -> bool:
    models = s.get("init_models") or {}
    return any(m.get("kind") == "random" for m in models.values())


def random_stages(t: dict) -> str:
    """Fixed two-stage schedules from random weights: a frozen random encoder would learn nothing, so they train
    one stage of all layers for both stages' steps (train.fine_tune with frozen_stage=False)."""
    return (f"; runs from random weights trained one stage of all layers instead (no frozen stage), for both "
            f"stages' steps together, one-cycle to {t['lr_unfrozen']:g}")


def fine_tuning_text(t: dict, checked: bool = True, random_init: bool = False) -> str:
    schedule = t.get("schedule", "fast")
    if schedule == "plateau":
        steps = (f"the plateau schedule: all layers trained at {_plateau_rate(t, checked)} after "
                 f"a linear warm-up over the first check's steps; {rule_text(t, checked)}")
    elif schedule == "paper":
        steps = (f"the published schedule: stage 1 encoder frozen (BatchNorm trainable), one-cycle, max lr "
                 f"{t['lr_frozen']:g}; stage 2 unfrozen, one-cycle, max lr {t['lr_unfrozen']:g}; each stage "
                 f"E = round({t['epochs']} × pool images / subset images) epochs, so every subset gets about the same "
                 "optimiser steps")
    else:
        steps = (f"the fast schedule: stage 1 encoder frozen (BatchNorm trainable), {t['steps_frozen']} steps, "
                 f"one-cycle, max lr {t['lr_frozen']:g}; stage 2 unfrozen, {t['steps_unfrozen']} steps, one-cycle, "
                 f"max lr {t['lr_unfrozen']:g}; equal optimiser steps for every subset")
    if schedule != "plateau" and random_init:
        steps += random_stages(t)
    kept = ("the weights kept as above" if schedule == "plateau" else
            "last step kept" if t.get("select", "last") == "last" else
            f"the weights with the best validation Dice (LV and MY averaged, validation subjects only, at the start "
            f"and {t.get('checks', 10)} checks per stage) kept")
    return (f"Fine-tuning: {steps}; AdamW (weight decay {t['weight_decay']:g}), batch {t['batch_size']}, "
            f"cross-entropy; {kept}. Images {t['size']} px (zero-padded to square, resampled, scaled per image to "
            f"its 1st-99th percentiles). Augmentation: flips, rotation ±{t['rotate_deg']:g}°, zoom up to "
            f"{t['zoom']:g}, brightness/contrast ±{t['brightness']:g}/{t['contrast']:g}. Precision "
            f"{t['precision']} (autocast), channels_last {t['channels_last']}. Dice after argmax at {t['size']} px; "
            f"RV is not a learned class.")


def tuned_lines(s: dict) -> list[str]:
    """What `harness tune` chose, per configuration and fold, and on which subjects (run --tuned)."""
    tuned = s.get("tuned") or {}
    lines = []
    for key, t in sorted(tuned.items()):
        if "folds" not in t:  # a study run with 0.6, which tuned fold 0 only and used it for every fold
            lines.append(f"Tuned with Optuna (`{key}`) by cine-harness 0.6 on fold 0's validation subjects "
                         f"({', '.join(t.get('validation_subjects', []))}) and used for every fold: with "
                         "cross-validation those subjects are test subjects of another fold, so the tuned settings "
                         "saw their labels (version 0.7 tunes each fold on its own training side).")
            continue
        folds = t.get("folds") or {}
        parts = []
        for fold, part in folds.items():
            params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in sorted(part["params"].items()))
            parts.append(f"fold {fold}: {part['trials']} trials, validation Dice {part['value']:.3f} "
                         f"(defaults {part['default_value']:.3f}) with {params}")
        lines.append(f"Tuned with Optuna (`{key}`), nested in the cross-validation: each fold separately, a seeded "
                     f"TPE sampler with median pruning maximising validation Dice ({t['metric']}) on that fold's "
                     "validation subjects, fine-tuning on subsets of that fold's training pool; a fold's test "
                     "subjects were never predicted while its parameters were chosen, and before the runs every "
                     "fold's tuning subjects were checked to include none of its test subjects. "
                     + "; ".join(parts) + ".")
    return lines


def caveats(a: Analysis) -> list[str]:
    out = list(a.cautions)
    k = a.test_subjects
    if k < 6:
        out.append(
            f"Only {k} test subjects: a rank or sign-flip test over subjects cannot reach p < "
            f"{2 / 2 ** k:.3f} two-sided ({1 / 2 ** k:.3f} one-sided), so subject-level verdicts rest on a t-test "
            f"with {k - 1} degrees of freedom and its normality assumption, which {k} values cannot check. A "
            "verdict of 'not shown' here is a statement about the evidence, not about the methods.")
    if a.seeds <= 1:
        out.append("One training run per configuration: the seed-to-seed variance is unknown, so differences "
                   "between methods mix method and training noise; the tests are conditional on these runs.")
    if len(a.friedman):
        out.append("Friedman and the rank/sign-flip options treat subject means as independent; when several test "
                   "subjects share a training run (seeds within a fold) that understates the variance. The default "
                   "t-test adds the shared-run term; in simulation with the phantom's variance components it keeps "
                   "α, the rank test does not.")
    out += _cost_caveats(a)
    if not a.settings.get("data") and a.settings.get("kind") != "table":
        out.append("The data are a synthetic phantom: absolute Dice values say nothing about real scanners; the "
                   "shape of the learning curve and the ranking of strategies are what the phantom is for.")
    return out


def _cost_caveats(a: Analysis) -> list[str]:
    """Budgets of minutes a strategy could not spend (its ranking ran out), and pools that hold only the
    labelled frames (label-free strategies then choose among the frames someone chose to contour)."""
    out = []
    s = a.settings
    if s.get("budget_minutes") and len(a.costs):
        model = s.get("cost_model") or {}
        dearest = max((sum(model["seconds"][d][r] for d in model["draw"]) for r in ("basal", "mid", "apical")),
                      default=0) / 60 if model.get("seconds") else 0
        spent = a.costs.groupby(["strategy", "n"])["expert_minutes"].first().reset_index()
        short = spent[spent["expert_minutes"] < spent["n"] - dearest - 1e-6]
        if len(short):
            listed = "; ".join(f"{r.strategy} at {r.n} min spent {r.expert_minutes:.0f}" for r in short.itertuples())
            out.append(f"Not every strategy could spend its budget ({listed}): its ranking of the pool ran out (it "
                       "labels a fixed number of images per subject), so at those budgets the comparison is not at "
                       "equal expert time; the cost table gives what each spent.")
    for key, view in (s.get("pool_views") or {}).items():
        rows = (view.get("frame_error") or {}).get("per_subject") or []
        partial = [r for r in rows if r["labelled_frames"] < r["frames"]]
        if partial:
            median = float(np.median([r["labelled_frames"] for r in partial]))
            cycle = float(np.median([r["frames"] for r in partial]))
            out.append(f"Only the labelled frames are in the training pool ({len(partial)} of {len(rows)} pool subjects: "
                       f"median {median:g} of {cycle:g} frames): label-free strategies chose among the frames someone "
                       "already chose to contour, and the frame error of ed_es_predicted is over those frames, not the "
                       "whole cycle (`bench/sunnybrook_frames.py` measures that on full cines).")
    return out
