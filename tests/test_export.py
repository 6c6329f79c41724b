"""The phantom on disk: DICOM series + NIfTI label maps that the real loaders read back unchanged."""
from __future__ import annotations

import numpy as np
import pydicom

from harness.cli import main
from harness.data.phantom import phantom_dataset
from harness.data.sources import load_dataset, locate


def test_phantom_written_to_disk_loads_back_as_the_same_dataset(tmp_path, capsys):
    out = tmp_path / "phantom"
    assert main(["data", "phantom", "--out", str(out), "--subjects", "2"]) == 0
    assert "2 subjects written" in capsys.readouterr().err
    located = locate(out)
    assert located.format == "dicom-nifti" and [p.name for p in located.subjects] == ["target-000", "target-001"]
    header = pydicom.dcmread(next((out / "target-000").glob("*.dcm")), stop_before_pixels=True)
    assert header.MagneticFieldStrength == 7.0 and header.Modality == "MR"

    from_disk = load_dataset(out, size=64)
    in_memory = phantom_dataset("target", 2, 0, 64)
    assert from_disk.index.equals(in_memory.index)
    assert np.array_equal(from_disk.masks, in_memory.masks)
    assert np.abs(from_disk.images.astype(np.float32) - in_memory.images.astype(np.float32)).max() < 2e-3
    info = from_disk.subjects_info.set_index("subject")
    assert (info["field_strength_t"] == 7.0).all() and (info["source"] == "LV area").all()


def test_writing_into_an_unwritable_place(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["data", "phantom", "--out", str(blocker / "x"), "--subjects", "1"]) == 2
    assert "cannot write" in capsys.readouterr().err
