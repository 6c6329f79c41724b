from __future__ import annotations

import numpy as np
import pytest

from harness.data.dataset import find_phases, index_stack
from harness.data.phantom import (
    LABEL_LV, LABEL_MY, CONTRASTS, _shading, contraction, draw_anatomy, generate_subject, phantom_dataset,
)


@pytest.fixture(scope="module")
def subjects():
    return {d: [generate_subject(7, d, i) for i in range(4)] for d in ("source", "target")}


def test_same_seed_same_arrays_other_seed_other_arrays():
    a, b, c = generate_subject(3, "target", 1), generate_subject(3, "target", 1), generate_subject(4, "target", 1)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels) or not np.array_equal(a.images, c.images)


def test_domains_share_anatomy_draws_but_not_images(subjects):
    src, tgt = subjects["source"][0], subjects["target"][0]
    assert src.images.shape[-1] == CONTRASTS["source"].matrix
    assert tgt.images.shape[-1] == CONTRASTS["target"].matrix
    assert tgt.spacing_mm < src.spacing_mm  # the 7T-like domain has finer pixels


def test_stacks_cover_a_cardiac_cycle_and_end_diastole_moves():
    anatomies = [draw_anatomy(np.random.default_rng(i)) for i in range(60)]
    assert all(8 <= a.n_slices <= 14 and 20 <= a.n_frames <= 30 for a in anatomies)
    assert len({a.ed_frame for a in anatomies}) > 3 and any(a.ed_frame != 0 for a in anatomies)


def test_contraction_is_zero_at_end_diastole_and_peaks_once():
    a = draw_anatomy(np.random.default_rng(5))
    c = contraction(a)
    assert c[a.ed_frame] == 0 and c.max() > 0.95
    assert np.argmax(c) != a.ed_frame


def _lv_volume(subject):
    return (subject.labels == LABEL_LV).sum(axis=(0, 2, 3)).astype(float)


def test_ejection_fraction_in_physiological_range(subjects):
    for subject in subjects["source"] + subjects["target"]:
        volume = _lv_volume(subject)
        ef = 1 - volume.min() / volume.max()
        assert 0.35 <= ef <= 0.75, f"{subject.name}: EF {ef:.2f}"


def test_myocardium_thickens_in_systole(subjects):
    for subject in subjects["source"]:
        volume = _lv_volume(subject)
        ed, es = int(volume.argmax()), int(volume.argmin())
        mid = subject.labels.shape[0] // 2
        # mean wall thickness ~ myocardial area / mean circumference; area is kept, radius shrinks
        def thickness(frame):
            lv = (subject.labels[mid, frame] == LABEL_LV).sum()
            my = (subject.labels[mid, frame] == LABEL_MY).sum()
            r_in = np.sqrt(lv / np.pi)
            return np.sqrt(r_in ** 2 + my / np.pi) - r_in
        assert thickness(es) > 1.2 * thickness(ed)


def test_apex_is_smaller_than_base(subjects):
    for subject in subjects["source"]:
        lv = (subject.labels == LABEL_LV).sum(axis=(1, 2, 3))
        assert lv[-1] < 0.5 * lv[: len(lv) // 2].max()


def test_end_diastole_found_from_lv_area_is_the_generated_one(subjects):
    for subject in subjects["target"]:
        index = find_phases(index_stack(subject.name, subject.labels, subject.spacing_mm)).index
        assert index[index["phase"] == "ED"]["frame"].unique().tolist() == [subject.anatomy.ed_frame]


def _contrast_to_noise(subject):
    """Blood-myocardium contrast relative to the blood pool's local spread, mid-ventricular ED slice."""
    mid, ed = subject.labels.shape[0] // 2, subject.anatomy.ed_frame
    img, lab = subject.images[mid, ed], subject.labels[mid, ed]
    blood, myo = img[lab == LABEL_LV], img[lab == LABEL_MY]
    return (np.median(blood) - np.median(myo)) / np.std(blood)


def test_target_has_lower_blood_myocardium_contrast_to_noise(subjects):
    src = np.mean([_contrast_to_noise(s) for s in subjects["source"]])
    tgt = np.mean([_contrast_to_noise(s) for s in subjects["target"]])
    assert tgt < 0.5 * src



def test_target_shading_is_strong_with_signal_voids_and_source_shading_is_mild():
    n = 96
    yy, xx = (np.mgrid[0:n, 0:n].astype(np.float32) - n / 2) * 2.5
    for seed in range(10):
        source = _shading(np.random.default_rng(seed), CONTRASTS["source"], xx, yy, 0.0, 0.0)
        target = _shading(np.random.default_rng(seed), CONTRASTS["target"], xx, yy, 0.0, 0.0)
        assert source.max() / source.min() < 1.4
        assert target.max() / target.min() > 2 * source.max() / source.min()
        assert target.min() < 0.35 * np.median(target)  # a void: signal nearly cancelled


def test_prepared_dataset_is_cached_and_identical(tmp_path):
    first = phantom_dataset("target", 2, 0, 64, tmp_path)
    assert len([p for p in tmp_path.glob("phantom-*") if p.is_dir()]) == 1
    second = phantom_dataset("target", 2, 0, 64, tmp_path)
    assert np.array_equal(first.images, second.images) and np.array_equal(first.masks, second.masks)
    assert first.index.equals(second.index) and first.fingerprint == second.fingerprint
    assert first.images.shape[1:] == (64, 64) and first.images.dtype == np.float16
    assert 0 <= float(first.images.min()) and float(first.images.max()) <= 1
    assert sorted(first.index["phase"].dropna().unique()) == ["ED", "ES"]


def test_subjects_rendered_in_worker_processes_equal_those_rendered_here(monkeypatch):
    from harness.data import phantom

    parallel = phantom_dataset("target", 3, 0, 64)
    monkeypatch.setattr(phantom.os, "cpu_count", lambda: 1)
    serial = phantom_dataset("target", 3, 0, 64)
    assert np.array_equal(parallel.images, serial.images) and np.array_equal(parallel.masks, serial.masks)
    assert parallel.index.equals(serial.index)
