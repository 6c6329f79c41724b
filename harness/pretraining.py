"""Pre-training a source model: on the built-in phantom's source domain, or on any labelled dataset the
loaders read (``harness pretrain --data``), with validation subjects held out and a model card.

The checkpoint and its card (JSON beside it) are written atomically; ``run --init checkpoint:PATH`` rebuilds
the model from the card alone.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import evaluate, train
from harness.data.dataset import CineDataset
from harness.errors import UsageError
from harness.train.model import architecture, versions
from harness.train.settings import PretrainSettings


def split_validation(subjects: list[str], val_subjects: int, seed: int) -> tuple[list[str], list[str]]:
    """(training, validation) subjects: ``val_subjects`` drawn at random with ``seed``."""
    if val_subjects < 0 or val_subjects >= len(subjects):
        raise UsageError(f"--val-subjects {val_subjects}: {len(subjects)} subjects need at least 1 for training; "
                         f"use 0 to {len(subjects) - 1}")
    order = np.random.default_rng(seed).permutation(len(subjects))
    val = sorted(subjects[i] for i in order[:val_subjects])
    return sorted(s for s in subjects if s not in val), val


def validate(model, dataset: CineDataset, subjects: list[str], precision: str, empty: str = "both-one",
             on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Mean subject Dice (image Dice averaged within subject, then over subjects) on held-out subjects."""
    rows = dataset.rows_of(subjects)
    pred = train.predict(model, dataset.images[rows.index], precision, on_batch=on_batch)
    per_subject = evaluate.subject_metrics(evaluate.image_metrics(rows, pred, dataset.masks[rows.index], empty), empty)
    return {"dice_lv": float(per_subject["dice_lv"].mean()), "dice_my": float(per_subject["dice_my"].mean()),
            "dice3d_lv": float(per_subject["dice3d_lv"].mean()), "dice3d_my": float(per_subject["dice3d_my"].mean()),
            "subjects": len(per_subject), "images": len(rows), "empty": empty,
            "per_subject": {r.subject: {"dice_lv": round(float(r.dice_lv), 4), "dice_my": round(float(r.dice_my), 4)}
                            for r in per_subject.itertuples()}}


def pretrain_on(dataset: CineDataset, settings: PretrainSettings, out: Path, val_subjects: int = 0,
                source: dict[str, Any] | None = None, on_step: Callable[[], None] | None = None,
                on_validate: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train on every labelled image of the training subjects, validate on the held-out ones, and write
    the checkpoint with its card to ``out``. Returns the card."""
    started = time.perf_counter()
    train_ids, val_ids = split_validation(dataset.subjects, val_subjects, settings.seed)
    rows = dataset.rows_of(train_ids).index.to_numpy()
    model = train.pretrain(dataset.images[rows], dataset.masks[rows], settings, on_step)
    seconds = time.perf_counter() - started
    validation = None
    if val_ids:
        progress = on_validate and (lambda k: on_validate(k, len(dataset.rows_of(val_ids))))
        validation = validate(model, dataset, val_ids, train.resolve_precision("auto"), on_batch=progress)
    hashes = None if dataset.hashes is None else sorted(set(dataset.hashes[rows].tolist()) - {""})
    card = {
        "architecture": architecture(settings.encoder, settings.decoder_channels, settings.size),
        "training": {"data": dataset.name, "data_fingerprint": dataset.fingerprint, **(source or {}),
                     "image_hashes": hashes, "image_hash": HASH_TEXT,
                     "subjects": len(train_ids), "images": int(len(rows)), "train_subjects": train_ids,
                     "validation_subjects": val_ids, "steps": settings.steps, "settings": settings.to_dict(),
                     "seconds": round(seconds, 1), "device": str(train.device())},
        "validation": validation,
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    train.save_checkpoint(model, out, card)
    return card


HASH_TEXT = ("sha256 of each image's pixel values as loaded (float32, original size), the smallest over its 8 flips "
             "and transposes, first 16 hex digits; images without content left out")


def source_overlap(card: dict[str, Any] | None, dataset: CineDataset, subjects: list[str]) -> dict[str, Any]:
    """Which of ``subjects`` (a study's test and validation subjects) have an image that the source model
    was trained on, by content hash (ids differ between copies of a dataset; pixels do not). ``checked`` is
    False, with ``why``, where the card or the data carry no hashes."""
    if card is None:
        return {"checked": False, "why": "a plain state_dict has no model card, so the images it was trained on "
                                         "are unknown"}
    hashes = (card.get("training") or {}).get("image_hashes")
    if hashes is None:
        return {"checked": False, "why": "its model card records no image hashes (written before cine-harness "
                                         "0.7; `harness pretrain` again records them)"}
    if dataset.hashes is None:
        return {"checked": False, "why": "the study's data were prepared before cine-harness 0.7 (no image "
                                         "hashes); delete the prepared copy in the cache to prepare them again"}
    rows = dataset.rows_of(subjects)
    known = np.asarray([h for h in hashes if h], dtype="<U16")  # '' = an image without content: no identity
    mine = dataset.hashes[rows.index.to_numpy()]
    hit = (mine != "") & np.isin(mine, known)
    overlapping = sorted(rows.loc[hit, "subject"].unique().tolist())
    return {"checked": True, "subjects": overlapping, "images": int(hit.sum()),
            "of_subjects": len(set(subjects)), "source_images": len(hashes)}


def describe(card: dict[str, Any]) -> pd.DataFrame:
    """The card's headline as a one-row table (for the CLI)."""
    t, v = card["training"], card.get("validation") or {}
    return pd.DataFrame([{"subjects": t["subjects"], "images": t["images"], "steps": t["steps"],
                          "minutes": round(t["seconds"] / 60, 1), "val subjects": v.get("subjects", 0),
                          "val LV": v.get("dice_lv"), "val MY": v.get("dice_my")}])
