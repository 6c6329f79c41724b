"""How far ED/ES predicted by a selection model lie from the contoured ED/ES over a whole real cine.

A study's pool holds labelled frames only, and Sunnybrook labels two per slice, so ``ed_es_predicted`` there
chooses between those two. This measures what it would do on the whole unlabelled cycle, as a lab has it:
every frame of each contoured slice is read from the DICOM series, the selection model predicts each one
(``pool_view.image_scores``: images only), ED/ES are the frames of largest / smallest predicted LV volume
(summed over slices), and the error is the cyclic frame distance to the contoured ED (the frame with the
larger contoured LV area) and ES.

    python bench/sunnybrook_frames.py ../shared/data/sunnybrook checkpoint.pt

Prints one line per subject (no patient field: subjects are named by the harness's salted id) and the means.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def main(root: Path, checkpoint_path: Path) -> pd.DataFrame:
    import torch

    from harness import pool_view, train
    from harness.data import dicom
    from harness.data.dataset import normalise, to_training_size
    from harness.data.sources import _sunnybrook_links

    checkpoint = train.read_checkpoint(checkpoint_path)
    arch = checkpoint.architecture or {"encoder": "resnet18", "decoder_channels": train.DECODER_CHANNELS, "size": 128}
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
        images, labels = dicom.fill(grid, slices, frames, lambda s, f, shape: (np.zeros(shape, np.uint8), ""))
        images, _ = to_training_size(images, labels, int(arch["size"]))
        flat = normalise(images).reshape(-1, images.shape[-2], images.shape[-1])
        started = time.perf_counter()
        scores, _ = pool_view.image_scores(model, flat, "auto")
        seconds = time.perf_counter() - started
        volume = scores[:, 0].reshape(len(slices), len(frames)).sum(0)
        pred_ed, pred_es = int(np.argmax(volume)), int(np.argmin(volume))
        cycle = len(frames)
        rows.append({"subject": stack.subject, "frames": cycle, "slices": len(slices), "ed": ed, "es": es,
                     "pred_ed": pred_ed, "pred_es": pred_es,
                     "ed_error": pool_view.cyclic_distance(ed, pred_ed, cycle),
                     "es_error": pool_view.cyclic_distance(es, pred_es, cycle),
                     "seconds_per_1000": round(1000 * seconds / len(flat), 1)})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    table = main(Path(sys.argv[1]), Path(sys.argv[2]))
    print(table.to_string(index=False))
    print(f"mean cyclic frame error: ED {table['ed_error'].mean():.2f}, ES {table['es_error'].mean():.2f} frames "
          f"({len(table)} subjects)")
