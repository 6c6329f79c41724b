"""Write the built-in phantom to disk as real files: one DICOM series per subject (one file per image)
with a 4D NIfTI label map beside it, so the default study can also run through the real loaders."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.data.dicom import LABEL_MAP_NAME
from harness.data.phantom import FIELD_STRENGTH, SLICE_THICKNESS_MM, PhantomSubject, generate_subject

def write_subject(subject: PhantomSubject, folder: Path, uid_root: str) -> None:
    import nibabel as nib
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    n_slices, n_frames, rows, cols = subject.images.shape
    scale = 4000.0 / max(float(subject.images.max()), 1e-6)
    study, series = generate_uid(entropy_srcs=[uid_root, "study"]), generate_uid(entropy_srcs=[uid_root, "series"])
    for s in range(n_slices):
        for f in range(n_frames):
            number = s * n_frames + f + 1
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uid_root, str(number)])
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = pydicom.Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.Modality, ds.SeriesDescription = "MR", f"synthetic cine phantom ({subject.domain})"
            ds.PatientName, ds.PatientID = "Synthetic^Phantom", "SYNTHETIC"
            ds.MagneticFieldStrength = FIELD_STRENGTH[subject.domain]
            ds.InstanceNumber = number
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [0.0, 0.0, s * SLICE_THICKNESS_MM]
            ds.SliceThickness = SLICE_THICKNESS_MM
            ds.PixelSpacing = [subject.spacing_mm, subject.spacing_mm]
            ds.TriggerTime = round(float(subject.trigger_ms[s, f]), 3)
            ds.NominalInterval = int(round(subject.rr_ms))  # IS: whole milliseconds
            ds.CardiacNumberOfImages = n_frames
            ds.Rows, ds.Columns = rows, cols
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.PixelData = np.round(subject.images[s, f] * scale).astype(np.uint16).tobytes()
            ds.save_as(folder / f"{number}.dcm", enforce_file_format=True)
    affine = np.diag([subject.spacing_mm, subject.spacing_mm, SLICE_THICKNESS_MM, 1.0])
    nib.save(nib.Nifti1Image(subject.labels.transpose(3, 2, 0, 1).astype(np.uint8), affine),
             str(folder / LABEL_MAP_NAME))


def write_phantom(out: Path, domain: str, n_subjects: int, seed: int,
                  on_subject: Callable[[int, int], None] | None = None) -> list[Path]:
    folders = []
    for number in range(n_subjects):
        subject = generate_subject(seed, domain, number)
        folder = Path(out) / subject.name
        write_subject(subject, folder, f"{seed}-{domain}-{number}")
        folders.append(folder)
        if on_subject:
            on_subject(number + 1, n_subjects)
    return folders
