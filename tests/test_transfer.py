"""The phantom's reason to exist: a source-trained model does clearly worse on the target domain, and
fine-tuning on a few target subjects recovers much of it. Small settings, real training."""
from __future__ import annotations

import numpy as np
import pytest

from harness import evaluate, train
from harness.data.phantom import phantom_dataset


def _dice_lv(model, data, rows) -> float:
    pred = train.predict(model, data.images[rows.index])
    return float(evaluate.image_metrics(rows, pred, data.masks[rows.index])["dice_lv"].mean())


@pytest.mark.slow
def test_source_model_is_worse_on_target_and_fine_tuning_helps(cache):
    size = 64
    source = phantom_dataset("source", 6, 0, size, cache / "phantom")
    target = phantom_dataset("target", 6, 0, size, cache / "phantom")
    model = train.pretrain(source.images, source.masks, train.PretrainSettings(size=size, steps=300))
    ed_es = target.index[target.index["phase"].notna()]
    subjects = target.subjects
    test = ed_es[ed_es["subject"].isin(subjects[4:])]
    source_test = source.index[source.index["subject"].isin(source.subjects[4:]) & source.index["phase"].notna()]

    on_source = _dice_lv(model, source, source_test)
    on_target = _dice_lv(model, target, test)
    chosen = ed_es[ed_es["subject"].isin(subjects[:3])].index.to_numpy()
    settings = train.TrainSettings(size=size, schedule="fast", select="last", steps_frozen=60, steps_unfrozen=60)
    train.fine_tune(model, target.images[chosen], target.masks[chosen], settings, 0, 1)
    fine_tuned = _dice_lv(model, target, test)
    print(f"LV Dice: base on source {on_source:.3f}, base on target {on_target:.3f}, fine-tuned {fine_tuned:.3f}")
    assert on_source > on_target + 0.1, "the domain shift must hurt the source-only model"
    assert fine_tuned > on_target + 0.1, "fine-tuning on 3 target subjects must clearly help"
    assert np.isfinite([on_source, on_target, fine_tuned]).all()
