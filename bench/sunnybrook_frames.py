"""How far ED/ES predicted by a selection model, and ED/ES from the cine's timing alone (``ed_es_timing``),
lie from the contoured ED/ES over a whole real cine.

A study's pool holds labelled frames only, and Sunnybrook labels two per slice, so ``ed_es_predicted`` there
chooses between those two. This measures what it would do on the whole unlabelled cycle, as a lab has it:
every frame of each contoured slice is read from the DICOM series, the selection model predicts each one
(``pool_view.image_scores``: images only), ED/ES are the frames of largest / smallest predicted LV volume
(summed over slices), and the error is the cyclic frame distance to the contoured ED (the frame with the
larger contoured LV area) and ES. The timing rule reads the DICOM trigger times and RR interval of every
frame (no model); without a checkpoint only it is measured.

    python bench/sunnybrook_frames.py ../shared/data/sunnybrook [checkpoint.pt]
    python bench/sunnybrook_frames.py phantom     # the timing rule on the default study's target phantom

Prints one line per subject (no patient field: subjects are named by the harness's salted id) and the means.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def timing_phases(grid, slices: list[int], frames: list[int]) -> tuple[int, int]:
    """ED/ES of ``ed_es_timing`` over every frame of the series (its own rule, on the whole cine)."""
    from harness.strategies.label_free import EdEsTimingStrategy

    times, cycles = grid.trigger_ms(slices, frames), grid.rr_ms(slices, frames)
    table = pd.DataFrame({"subject": "s", "slice": np.repeat(slices, len(frames)), "frame": np.tile(frames, len(slices)),
                          "n_frames": len(frames), "rr_ms": np.nan if cycles is None else cycles.ravel(),
                          "trigger_ms": np.nan if times is None else times.ravel()})
    chosen = table.loc[EdEsTimingStrategy().phases(table), "frame"].unique()
    return int(chosen[0]), int(chosen[-1])


def main(root: Path, checkpoint_path: Path | None) -> pd.DataFrame:
    import torch

    from harness import pool_view, train
    from harness.data import dicom
    from harness.data.dataset import normalise, to_training_size
    from harness.data.sources import _sunnybrook_links

    model = None
    if checkpoint_path is not None:
        checkpoint = train.read_checkpoint(checkpoint_path)
        arch = checkpoint.architecture or {"encoder": "resnet18", "decoder_channels": train.DECODER_CHANNELS,
                                           "size": 128}
        model = train.model_from_checkpoint(checkpoint, arch["encoder"], tuple(arch["decoder_channels"]))
    torch.set_num_threads(2)
    rows = []
    for dicom_id, contour_id in sorted(_sunnybrook_links(root).items()):
        stack = dicom.load_sunnybrook_subject(root / "dicoms" / dicom_id, root / "contourfiles" / contour_id,
                                              salt="bench", name=dicom_id)
        area = (stack.labels == 1).sum(axis=(0, 2, 3))
        ed, es = stack.frame_numbers[int(np.argmax(area))], stack.frame_numbers[int(np.argmin(area))]
        grid = dicom.read_series(root / "dicoms" / dicom_id)
        slices = [s for s in range(grid.files.shape[0])]
        frames = list(range(grid.files.shape[1]))
        cycle = len(frames)
        timed_ed, timed_es = timing_phases(grid, slices, frames)
        row = {"subject": stack.subject, "frames": cycle, "slices": len(slices),
               "rr_ms": float(np.nanmedian(grid.rr_ms(slices, frames))), "ed": ed,
               "es": es, "timing_ed": timed_ed, "timing_es": timed_es,
               "timing_ed_error": pool_view.cyclic_distance(ed, timed_ed, cycle),
               "timing_es_error": pool_view.cyclic_distance(es, timed_es, cycle)}
        rows.append(row)
        if model is None:
            continue
        images, labels = dicom.fill(grid, slices, frames, lambda s, f, shape: (np.zeros(shape, np.uint8), ""))
        images, _ = to_training_size(images, labels, int(arch["size"]))
        flat = normalise(images).reshape(-1, images.shape[-2], images.shape[-1])
        started = time.perf_counter()
        scores, _ = pool_view.image_scores(model, flat, "auto")
        seconds = time.perf_counter() - started
        volume = scores[:, 0].reshape(len(slices), len(frames)).sum(0)
        pred_ed, pred_es = int(np.argmax(volume)), int(np.argmin(volume))
        row.update({"pred_ed": pred_ed, "pred_es": pred_es,
                    "ed_error": pool_view.cyclic_distance(ed, pred_ed, cycle),
                    "es_error": pool_view.cyclic_distance(es, pred_es, cycle),
                    "seconds_per_1000": round(1000 * seconds / len(flat), 1)})
    return pd.DataFrame(rows)


def phantom_timing(subjects: int = 24, seed: int = 0) -> pd.DataFrame:
    """The timing rule on the default study's target phantom (every frame labelled): its error against the
    ED/ES of the labels' LV area. ``python bench/sunnybrook_frames.py phantom``"""
    from harness import pool_view
    from harness.data.dataset import find_phases, index_stack
    from harness.data.phantom import generate_subject
    from harness.strategies.label_free import EdEsTimingStrategy

    rows = []
    for number in range(subjects):
        subject = generate_subject(seed, "target", number)
        index = find_phases(index_stack(subject.name, subject.labels, subject.spacing_mm, None, None,
                                        subject.trigger_ms, np.full(subject.labels.shape[:2], subject.rr_ms))).index
        ed, es = (int(index.loc[index["phase"] == p, "frame"].iloc[0]) for p in ("ED", "ES"))
        chosen = index.loc[EdEsTimingStrategy().phases(index), "frame"].unique()
        cycle = int(index["n_frames"].iloc[0])
        rows.append({"subject": subject.name, "frames": cycle, "rr_ms": subject.rr_ms, "ed": ed, "es": es,
                     "timing_ed": int(chosen[0]), "timing_es": int(chosen[-1]),
                     "timing_ed_error": pool_view.cyclic_distance(ed, chosen[0], cycle),
                     "timing_es_error": pool_view.cyclic_distance(es, chosen[-1], cycle)})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    if sys.argv[1] == "phantom":
        table = phantom_timing()
    else:
        table = main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(table.to_string(index=False))
    for name, prefix in (("predicted", ""), ("timing", "timing_")):
        if f"{prefix}ed_error" in table:
            print(f"mean cyclic frame error, {name}: ED {table[prefix + 'ed_error'].mean():.2f}, "
                  f"ES {table[prefix + 'es_error'].mean():.2f} frames ({len(table)} subjects)")
