"""PNG image/mask pairs in the published 7T study's naming:
``<subject>_slice<SSS>_frame<FFF>-image.png`` and ``...-mask.png`` (mask values 1 LV, 2 MY by default).
PNGs carry no pixel spacing; it is recorded as unknown."""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np

from harness.data.dataset import RawStack, check_voxels, order_base_to_apex
from harness.data.nifti import LabelMap
from harness.errors import DataError

PNG_NAME = re.compile(r"^(?P<subject>.+)_slice(?P<slice>\d+)_frame(?P<frame>\d+)-(?P<kind>image|mask)\.png$")


def read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            check_voxels(path, (image.height, image.width, len(image.getbands())))
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable PNG ({exc.__class__.__name__}); replace or remove it") from None
    return array if array.ndim == 2 else array[..., 0]  # grey stored as RGB(A): one channel


def group(root: Path) -> dict[str, dict[tuple[int, int], dict[str, Path]]]:
    """{subject: {(slice, frame): {"image": path, "mask": path}}} for every matching file under root.

    A subject is a file prefix; where one prefix's images lie in more than one folder (siteA/26_... and
    siteB/26_...), those are different subjects, named by what tells their folders apart and the prefix
    (siteA/26, also for siteA/images/ beside siteB/images/). A mask belongs to the subject whose image folder
    shares most of its path (siteA/masks/ pairs with siteA/images/). The same image or mask twice, or a mask
    that could belong to two subjects, is an error.
    """
    files: dict[str, list[tuple[Path, tuple[int, int], str, Path]]] = {}
    for path in sorted(root.rglob("*.png")):
        match = PNG_NAME.match(path.name)
        if match:
            key = (int(match["slice"]), int(match["frame"]))
            files.setdefault(match["subject"], []).append((path.parent, key, match["kind"], path))
    found: dict[str, dict[tuple[int, int], dict[str, Path]]] = {}
    for prefix, items in files.items():
        folders = sorted({folder for folder, _, kind, _ in items if kind == "image"})
        names = _distinct(root, folders) if len(folders) > 1 else {}
        for folder, key, kind, path in items:
            if not names:
                subject = prefix
            else:
                home = folder if kind == "image" else _nearest(folder, folders, path)
                subject = f"{names[home]}/{prefix}"
            pair = found.setdefault(subject, {}).setdefault(key, {})
            if kind in pair:
                raise DataError(f"{path}: subject '{subject}' has this {kind} twice (also {pair[kind]}); "
                                "remove one, or keep each subject's files in one folder")
            pair[kind] = path
    return found


def _distinct(root: Path, folders: list[Path]) -> dict[Path, str]:
    """Short names that tell folders apart: their paths under root without the trailing parts they all share
    (siteA/images and siteB/images -> siteA and siteB)."""
    parts = [folder.relative_to(root).parts for folder in folders]
    keep = min(len(p) for p in parts)
    while keep > 1 and len({p[-1] for p in parts}) == 1:
        parts = [p[:-1] for p in parts]
        keep -= 1
    return {folder: "/".join(p) or root.name for folder, p in zip(folders, parts)}


def _nearest(folder: Path, candidates: list[Path], path: Path) -> Path:
    """The image folder that shares the longest leading path with a mask's folder (one, or an error); the
    mask's own folder where it holds images."""
    if folder in candidates:
        return folder

    def shared(other: Path) -> int:
        return len(list(itertools.takewhile(lambda pair: pair[0] == pair[1], zip(folder.parts, other.parts))))

    best = max(shared(c) for c in candidates)
    nearest = [c for c in candidates if shared(c) == best]
    if len(nearest) > 1:
        raise DataError(f"{path}: this mask could belong to the images in {nearest[0]} or in {nearest[1]}; keep "
                        "each site's masks beside (or next to) its images")
    return nearest[0]


def load_png_subject(subject: str, pairs: dict[tuple[int, int], dict[str, Path]], labels: LabelMap) -> RawStack:
    """One subject's labelled images; every labelled frame must cover every slice."""
    unpaired = [p for kinds in pairs.values() for k, p in kinds.items() if len(kinds) == 1]
    if unpaired:
        other = "mask" if "-image" in unpaired[0].name else "image"
        raise DataError(f"{unpaired[0]}: has no {other} file beside it")
    slices = sorted({s for s, _ in pairs})
    frames = sorted({f for _, f in pairs})
    missing = [(s, f) for s in slices for f in frames if (s, f) not in pairs]
    if missing:
        s, f = missing[0]
        raise DataError(f"subject '{subject}': no image for slice {s}, frame {f} although other slices of that "
                        f"frame are labelled ({len(missing)} missing); add it or remove the frame")
    first = read_png(pairs[(slices[0], frames[0])]["image"])
    images = np.zeros((len(slices), len(frames)) + first.shape, np.float32)
    masks = np.zeros(images.shape, np.uint8)
    for i, s in enumerate(slices):
        for j, f in enumerate(frames):
            image, mask = read_png(pairs[(s, f)]["image"]), read_png(pairs[(s, f)]["mask"])
            if image.shape != first.shape:
                raise DataError(f"{pairs[(s, f)]['image']}: image is {image.shape} but the subject's images are {first.shape}")
            if mask.shape != image.shape:
                raise DataError(f"{pairs[(s, f)]['mask']}: mask is {mask.shape} but image is {image.shape}")
            images[i, j] = image
            masks[i, j] = labels.apply(mask.astype(int), str(pairs[(s, f)]["mask"]))
    images, masks, _ = order_base_to_apex(images, masks)
    return RawStack(subject, images, masks, float("nan"), tuple(frames), max(frames) + 1)
