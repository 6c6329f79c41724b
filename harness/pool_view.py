"""The selection model's view of a training pool: what a lab knows about its images before contouring them.

Per image: the predicted LV and MY area, the mean predictive entropy, the disagreement between predictions
of the image flipped and transposed (test-time augmentation), and an embedding (the encoder's deepest
features, averaged over the image). Per subject: ED and ES predicted as the frames of largest and smallest
predicted LV volume (summed over slices). Strategies read it as columns of their pool (``api.PREDICTION_COLUMNS``)
and ``Pool.embeddings``; they never run a model themselves (torch lives here).

The view is computed from the images alone (no mask is read), once per subject and selection model, and
cached under ``<cache>/views/<dataset>-<model>-<precision>-<device>-t<threads>-r<revision>/``: the view of a fold's pool is its subjects'
files, so every fold, run and later study reads what was computed once. Only subjects that are in some
fold's training pool are computed; the runs of a fold read only that fold's pool subjects.
"""
from __future__ import annotations

import hashlib
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.api import PREDICTION_COLUMNS
from harness.data.dataset import CineDataset
from harness.errors import UsageError

#: Revision of what a cached view holds; part of its folder name.
VIEW_REVISION = 1
#: Test-time views whose predictions are compared: the image, flipped left-right, flipped up-down, transposed.
TRANSFORMS = ("identity", "flip-lr", "flip-ud", "transpose")
SCORES = ("pred_lv_area", "pred_my_area", "entropy", "disagreement")
#: CPU threads a view is computed with, on every machine: a CPU kernel's sums depend on the thread count, and
#: the view decides which images a run trains on, so it is fixed like a run's threads (part of the cache key).
VIEW_THREADS = 2


def view_dir(cache: Path, dataset: str, model: str, precision: str) -> Path:
    """Where the view of a dataset by a model is cached; ``precision`` (bf16 or fp32, resolved) and the device
    type are part of the key: predictions in another precision or on another device may differ in the last
    digit and so in an image chosen (a worker on another device type finds no view and says so)."""
    from harness.train.model import device

    return Path(cache) / "views" / f"{dataset}-{model}-{precision}-{device().type}-t{VIEW_THREADS}-r{VIEW_REVISION}"


def _readable(path: Path) -> bool:
    """Whether a cached view file is whole: every array in it reads (a truncated or damaged file does not)."""
    try:
        with np.load(path) as stored:
            return all(stored[name] is not None for name in ("rows", "scores", "embeddings"))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return False


def _subject_file(folder: Path, subject: str) -> Path:
    return folder / f"{hashlib.sha256(subject.encode()).hexdigest()[:16]}.npz"


def _forward(x, transform: str):
    if transform == "flip-lr":
        return x.flip(-1)
    if transform == "flip-ud":
        return x.flip(-2)
    if transform == "transpose":
        return x.transpose(-1, -2)
    return x


def image_scores(model, images: np.ndarray, precision: str = "fp32", batch_size: int = 16,
                 on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per image (N, 4) float32 scores (SCORES order) and (N, D) float32 embeddings, from ``images`` (N, H, W)
    alone. Each transform's softmax is transformed back before the predictions are compared."""
    import torch

    from harness.train.model import device, resolve_precision

    dev = device()
    precision = resolve_precision(precision, dev)
    model.to(dev, memory_format=torch.channels_last).eval()
    captured: list = []
    hook = model.encoder.register_forward_hook(lambda module, args, output: captured.append(output[-1]))
    scores = np.empty((len(images), len(SCORES)), np.float32)
    embeddings: np.ndarray | None = None
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(np.asarray(images[start:start + batch_size], dtype=np.float32))[:, None].to(dev)
                b = len(x)
                views = torch.cat([_forward(x, t) for t in TRANSFORMS]).contiguous(memory_format=torch.channels_last)
                captured.clear()
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    logits = model(views)
                probs = torch.softmax(logits.float().contiguous(), dim=1)
                back = torch.stack([_forward(probs[i * b:(i + 1) * b], t) for i, t in enumerate(TRANSFORMS)]).contiguous()
                mean = back.mean(0)  # (b, C, H, W)
                classes = mean.shape[1]
                entropy = -(mean * torch.log(mean.clamp_min(1e-8))).sum(1) / np.log(classes)
                labels = back.max(2).indices  # (k, b, H, W); max().indices: argmax over a middle axis is slow on CPU
                final = mean.max(1).indices
                foreground = (labels > 0).any(0)
                differ = (labels != labels[:1]).any(0)
                fg_pixels = foreground.flatten(1).sum(1).float()
                disagreement = torch.where(fg_pixels > 0, (differ & foreground).flatten(1).sum(1).float()
                                           / fg_pixels.clamp_min(1), torch.zeros_like(fg_pixels))
                part = torch.stack([(final == 1).flatten(1).sum(1).float(), (final == 2).flatten(1).sum(1).float(),
                                    entropy.flatten(1).mean(1), disagreement], 1)
                scores[start:start + b] = part.cpu().numpy()
                features = captured[-1][:b].float().mean((-2, -1)).cpu().numpy()  # the untransformed images
                if embeddings is None:
                    embeddings = np.empty((len(images), features.shape[1]), np.float32)
                embeddings[start:start + b] = features
                if on_batch:
                    on_batch(b)
    finally:
        hook.remove()
    return scores, embeddings if embeddings is not None else np.empty((0, 0), np.float32)


def predicted_phases(frames: pd.DataFrame) -> pd.Series:
    """ED/ES per subject from the predicted LV volume (pred_lv_area summed over the slices of each frame):
    ED the frame of the largest, ES of the smallest (ties: earliest). A subject with one frame, or no predicted
    LV anywhere, gets none."""
    phase = pd.Series(None, index=frames.index, dtype=object)
    for _, rows in frames.groupby("subject", sort=False):
        volume = rows.groupby("frame")["pred_lv_area"].sum()
        if len(volume) < 2 or volume.max() <= 0:
            continue
        ed, es = int(volume.idxmax()), int(volume.idxmin())
        phase[rows.index[rows["frame"] == ed]] = "ED"
        phase[rows.index[rows["frame"] == es]] = "ES"
    return phase


@dataclass(frozen=True)
class ViewCost:
    """What making a view cost: images predicted now, seconds, and images read from the cache."""

    computed: int
    seconds: float
    cached: int

    @property
    def seconds_per_1000(self) -> float | None:
        return round(1000 * self.seconds / self.computed, 1) if self.computed else None

    def to_dict(self) -> dict:
        return {"computed_images": self.computed, "seconds": round(self.seconds, 2), "cached_images": self.cached,
                "seconds_per_1000_images": self.seconds_per_1000}


def ensure(dataset: CineDataset, subjects: list[str], model_fingerprint: str, make_model: Callable[[], object],
           cache: Path, precision: str = "fp32", on_images: Callable[[int, int], None] | None = None) -> ViewCost:
    """Compute and cache the view of every subject in ``subjects`` that is not cached yet (or whose file cannot
    be read: it is computed again). ``make_model`` is called only when something is missing. Reads
    ``dataset.images`` of those subjects; never its masks. ``precision``: bf16 or fp32 (resolved)."""
    started = time.perf_counter()
    folder = view_dir(cache, dataset.fingerprint, model_fingerprint, precision)
    missing = [s for s in subjects if not _readable(_subject_file(folder, s))]
    cached = int(dataset.index["subject"].isin([s for s in subjects if s not in missing]).sum())
    if not missing:
        return ViewCost(0, time.perf_counter() - started, cached)  # the seconds a later study pays
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(VIEW_THREADS)
    try:
        return _compute(dataset, missing, cached, make_model, folder, precision, on_images, started)
    finally:
        torch.set_num_threads(threads)


def _compute(dataset: CineDataset, missing: list[str], cached: int,
             make_model: Callable[[], object], folder: Path, precision: str,
             on_images: Callable[[int, int], None] | None, started: float) -> ViewCost:
    model = make_model()
    folder.mkdir(parents=True, exist_ok=True)
    total = int(dataset.index["subject"].isin(missing).sum())
    done = 0
    for subject in missing:
        rows = dataset.index.index[(dataset.index["subject"] == subject).to_numpy()].to_numpy()

        def advance(count: int) -> None:
            nonlocal done
            done += count
            if on_images:
                on_images(done, total)

        scores, embeddings = image_scores(model, dataset.images[rows], precision, on_batch=advance)
        target = _subject_file(folder, subject)
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, rows=rows, scores=scores, embeddings=embeddings.astype(np.float16))
        os.replace(tmp, target)
    return ViewCost(total, time.perf_counter() - started, cached)


def load(dataset: CineDataset, subjects: list[str] | tuple[str, ...], model_fingerprint: str,
         cache: Path, precision: str = "fp32") -> tuple[pd.DataFrame, np.ndarray]:
    """The view of ``subjects``: PREDICTION_COLUMNS indexed like ``dataset.index`` rows, and the embeddings
    in the same row order. UsageError naming the fix when a subject's view is not in the cache or unreadable."""
    folder = view_dir(cache, dataset.fingerprint, model_fingerprint, precision)
    parts, vectors = [], []
    for subject in subjects:
        path = _subject_file(folder, subject)
        if not path.exists():
            raise UsageError(f"the selection model's view of subject '{subject}' is missing from {folder}: this "
                             "process cannot see the cache it was made in; put --cache-dir on a filesystem every "
                             "worker shares, or run the study again")
        try:
            with np.load(path) as stored:
                rows, scores, embeddings = stored["rows"], stored["scores"], stored["embeddings"]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise UsageError(f"the cached view {path} cannot be read ({exc.__class__.__name__}); delete it and run "
                             "the study again (it is computed anew)") from None
        expected = dataset.index.index[(dataset.index["subject"] == subject).to_numpy()].to_numpy()
        if not np.array_equal(rows, expected):
            raise UsageError(f"the cached view {path} does not match subject '{subject}' of the dataset; delete "
                             f"{folder} and run again")
        parts.append(pd.DataFrame(scores, index=pd.Index(rows), columns=list(SCORES)))
        vectors.append(embeddings.astype(np.float32))
    table = pd.concat(parts) if parts else pd.DataFrame(columns=list(SCORES))
    table = table.join(dataset.index[["subject", "frame"]])
    table["pred_phase"] = predicted_phases(table)
    return table[list(PREDICTION_COLUMNS)], (np.concatenate(vectors) if vectors else np.empty((0, 0), np.float32))


def cyclic_distance(a: int, b: int, cycle: int) -> int:
    """Frames between a and b on a cycle of ``cycle`` frames (ED at the end of one cycle is next to frame 0)."""
    gap = abs(int(a) - int(b)) % max(int(cycle), 1)
    return min(gap, int(cycle) - gap)


def frame_errors(index: pd.DataFrame, view: pd.DataFrame) -> pd.DataFrame:
    """Per subject of ``view``: ED/ES from the labels (``index`` phase) and predicted (``view`` pred_phase), and
    their cyclic frame distance. For the report only: nothing a strategy reads comes from here. Subjects
    without a label ED/ES or a prediction are left out."""
    rows = []
    joined = view[["pred_phase"]].join(index[["subject", "frame", "phase", "n_frames"]])
    for subject, part in joined.groupby("subject", sort=False):
        found = {}
        for column in ("phase", "pred_phase"):
            for phase in ("ED", "ES"):
                frames = part.loc[part[column] == phase, "frame"]
                found[(column, phase)] = int(frames.iloc[0]) if len(frames) else None
        if None in found.values():
            continue
        cycle = int(part["n_frames"].iloc[0])
        rows.append({"subject": subject, "frames": cycle, "labelled_frames": int(part["frame"].nunique()),
                     "ed": found[("phase", "ED")], "es": found[("phase", "ES")],
                     "pred_ed": found[("pred_phase", "ED")], "pred_es": found[("pred_phase", "ES")],
                     "ed_error": cyclic_distance(found[("phase", "ED")], found[("pred_phase", "ED")], cycle),
                     "es_error": cyclic_distance(found[("phase", "ES")], found[("pred_phase", "ES")], cycle)})
    return pd.DataFrame(rows, columns=["subject", "frames", "labelled_frames", "ed", "es", "pred_ed", "pred_es",
                                       "ed_error", "es_error"])
