"""A synthetic short-axis cine phantom in two domains: the built-in default dataset.

Each subject is a stack of short-axis slices (base -> apex) over a full cardiac cycle, every frame
labelled: 0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool. Per subject the generator
draws heart size, position, rotation, ejection fraction (40-70 %), the frame of end-diastole, wall
thickness and apex taper; the myocardium keeps its area over the cycle, so it thickens in systole. Each
subject has a heart rate (55-90 /min) and its frames trigger times spread evenly over the cycle, as
retrospective gating gives; systole's timing does not depend on the heart rate.

The two domains share the anatomy generator and differ in how it is imaged:

* ``source``: 1.5T/3T bSSFP-like. Bright blood, dark myocardium, bright fat, mild coil shading,
  Rician noise sigma ~0.03, 1.8 mm pixels.
* ``target``: 7T GRE-like. Blood-myocardium contrast about a third of the source's, strong smooth B1
  shading with one or two signal voids near the heart, stronger and spatially correlated noise, flow
  ghosts along the phase-encoding direction, 1.2 mm pixels (the heart spans more pixels).

Everything is deterministic given (seed, domain, subject number).
"""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from harness.data.dataset import (PREPARED_REVISION, CineDataset, PreparedStack, RawStack, fingerprint, is_cached,
                                  load, prepare, prepare_stack, save)
from harness.errors import UsageError

LABEL_LV, LABEL_MY, LABEL_RV = 1, 2, 3
DOMAINS = ("source", "target")
_DOMAIN_ID = {"source": 1, "target": 2}
FIELD_STRENGTH = {"source": 1.5, "target": 7.0}  # what the exported DICOM headers say
SLICE_THICKNESS_MM = 8.0  # contiguous slices: also the distance between slice centres


@dataclass(frozen=True)
class Contrast:
    """Tissue signal and imaging settings of one domain."""

    blood: float
    myocardium: float
    fat: float
    muscle: float
    liver: float
    lung: float
    spacing_mm: float
    matrix: int
    noise: tuple[float, float]  # range of the noise sigma, relative to blood signal ~1
    noise_corr_px: float  # smoothing of the noise field (0 = white)
    shading: tuple[float, float]  # range of the smooth multiplicative field
    voids: tuple[int, int]  # number of signal voids (min, max)
    ghost: float  # flow-ghost strength


CONTRASTS = {
    "source": Contrast(blood=0.95, myocardium=0.22, fat=0.85, muscle=0.30, liver=0.38, lung=0.04,
                       spacing_mm=1.8, matrix=160, noise=(0.02, 0.04), noise_corr_px=0.0,
                       shading=(0.85, 1.15), voids=(0, 0), ghost=0.0),
    "target": Contrast(blood=0.62, myocardium=0.30, fat=0.62, muscle=0.36, liver=0.30, lung=0.08,
                       spacing_mm=1.2, matrix=192, noise=(0.03, 0.05), noise_corr_px=0.8,
                       shading=(0.45, 1.4), voids=(1, 2), ghost=0.10),
}


@dataclass(frozen=True)
class Anatomy:
    """The per-subject draw: geometry and motion in millimetres, independent of the domain."""

    n_slices: int
    n_frames: int
    ed_frame: int
    ejection_fraction: float
    lv_radius_mm: float  # end-diastolic endocardial radius at the widest slice
    wall_mm: float  # end-diastolic wall thickness
    eccentricity: float
    rotation: float  # radians
    centre_mm: tuple[float, float]  # heart centre relative to the image centre
    tilt_mm: tuple[float, float]  # centre shift from base to apex
    taper: float  # how fast the LV narrows toward the apex
    rv_scale: float
    papillary: int  # number of papillary muscles visible in the blood pool
    systole_fraction: float


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    return Anatomy(
        n_slices=int(rng.integers(8, 12)),
        n_frames=int(rng.integers(20, 26)),
        ed_frame=int(rng.integers(0, 6)),
        ejection_fraction=float(rng.uniform(0.36, 0.60)),  # whole-LV EF ends up ~40-70 %
        lv_radius_mm=float(rng.uniform(21.0, 29.0)),
        wall_mm=float(rng.uniform(7.0, 11.0)),
        eccentricity=float(rng.uniform(0.80, 1.0)),
        rotation=float(rng.uniform(0, np.pi)),
        centre_mm=(float(rng.uniform(-25, 25)), float(rng.uniform(-25, 20))),
        tilt_mm=(float(rng.uniform(-8, 8)), float(rng.uniform(-8, 8))),
        taper=float(rng.uniform(0.75, 0.95)),
        rv_scale=float(rng.uniform(1.0, 1.35)),
        papillary=int(rng.integers(1, 3)),
        systole_fraction=float(rng.uniform(0.32, 0.42)),
    )


def contraction(anatomy: Anatomy) -> np.ndarray:
    """Fraction of systolic contraction per frame: 0 at end-diastole, 1 at end-systole."""
    phase = ((np.arange(anatomy.n_frames) - anatomy.ed_frame) % anatomy.n_frames) / anatomy.n_frames
    ts = anatomy.systole_fraction
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip(phase / ts, 0, 1))
    # rapid early filling, a short diastasis, then the atrial kick
    fall = (phase - ts) / (1 - ts)
    fill = np.where(fall < 0.45, 0.8 * np.sin(0.5 * np.pi * fall / 0.45),
                    0.8 + 0.2 * np.clip((fall - 0.75) / 0.25, 0, 1))
    return np.where(phase <= ts, rise, 1 - np.clip(fill, 0, 1))


@dataclass(frozen=True)
class PhantomSubject:
    """One generated subject: images (slices, frames, H, W) float32 and labels of the same shape."""

    name: str
    domain: str
    images: np.ndarray
    labels: np.ndarray
    spacing_mm: float
    anatomy: Anatomy
    rr_ms: float = 900.0  # the cardiac cycle; frame f is acquired f * rr_ms / frames after the R wave

    @property
    def trigger_ms(self) -> np.ndarray:
        """(slices, frames) trigger times: retrospective gating spreads the frames evenly over the cycle."""
        n_slices, n_frames = self.labels.shape[:2]
        return np.tile(np.arange(n_frames) * self.rr_ms / n_frames, (n_slices, 1))


def cycle_ms(seed: int, domain: str, number: int) -> float:
    """A subject's RR interval (heart rate 55-90 /min), from a stream of its own: the images do not depend on it,
    and neither does the timing of systole (the phantom's ED and ES frames are drawn without it)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _DOMAIN_ID[domain], number, 1]))
    return float(round(60_000 / float(rng.uniform(55, 90))))  # whole ms, as DICOM's NominalInterval holds it


def subject_rng(seed: int, domain: str, number: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _DOMAIN_ID[domain], number]))


def generate_subject(seed: int, domain: str, number: int) -> PhantomSubject:
    """Render subject ``number`` of ``domain``; the same arguments always give the same arrays."""
    rng = subject_rng(seed, domain, number)
    anatomy = draw_anatomy(rng)
    contrast = CONTRASTS[domain]
    n = contrast.matrix
    half = (n - 1) / 2
    yy, xx = (np.mgrid[0:n, 0:n].astype(np.float32) - half) * contrast.spacing_mm
    squeeze = contraction(anatomy)

    images = np.empty((anatomy.n_slices, anatomy.n_frames, n, n), np.float32)
    labels = np.empty((anatomy.n_slices, anatomy.n_frames, n, n), np.uint8)
    body = _body(rng, xx, yy)
    cos, sin = np.cos(anatomy.rotation), np.sin(anatomy.rotation)
    pap_angles = rng.uniform(0.6, 1.4, size=anatomy.papillary) * np.pi * (1 + np.arange(anatomy.papillary))
    ghost_shift = int(rng.integers(n // 5, n // 3))
    for s in range(anatomy.n_slices):
        z = s / (anatomy.n_slices - 1)  # 0 base, 1 apex
        taper = np.sqrt(np.clip(1 - (anatomy.taper * z) ** 2.2, 0.0, 1.0))
        cx = anatomy.centre_mm[0] + anatomy.tilt_mm[0] * z
        cy = anatomy.centre_mm[1] + anatomy.tilt_mm[1] * z
        u = (xx - cx) * cos + (yy - cy) * sin
        v = -(xx - cx) * sin + (yy - cy) * cos
        background = _background(body, contrast, z)
        shading = _shading(rng, contrast, xx, yy, cx, cy)
        noise_sigma = rng.uniform(*contrast.noise)
        for f in range(anatomy.n_frames):
            r_ed = anatomy.lv_radius_mm * taper
            # blood-pool area shrinks by the ejection fraction; apical slices empty almost completely
            ef_slice = min(anatomy.ejection_fraction * (1 + 0.3 * z), 0.92)
            r_endo = r_ed * np.sqrt(1 - ef_slice * squeeze[f])
            myo_area = np.pi * ((r_ed + anatomy.wall_mm) ** 2 - r_ed ** 2) * (0.55 + 0.45 * taper)
            r_epi = np.sqrt(r_endo ** 2 + myo_area / np.pi)
            radial = np.sqrt((u / anatomy.eccentricity) ** 2 + v ** 2)
            endo = radial < r_endo
            epi = radial < r_epi
            # the RV wraps the septum on one side; it empties with the LV
            rv_r = anatomy.rv_scale * r_epi * (1.0 - 0.35 * squeeze[f]) * (1.05 - 0.5 * z)
            rv_dist = np.sqrt(((u + 0.85 * r_epi) / 1.25) ** 2 + (v / 1.05) ** 2)
            rv = (rv_dist < rv_r) & ~(radial < r_epi + 2.5)
            label = np.zeros((n, n), np.uint8)
            label[rv] = LABEL_RV
            label[epi] = LABEL_MY
            label[endo] = LABEL_LV
            img = background.copy()
            img[rv | epi] = contrast.blood
            img[epi & ~endo] = contrast.myocardium
            # epicardial fat on part of the free wall blurs the epicardial border
            fat = (radial >= r_epi) & (radial < r_epi + 2.0) & (np.arctan2(v, u) > 0.3) & ~rv
            img[fat] = contrast.fat
            for angle in pap_angles:  # papillary muscles: dark in the image, LV in the label
                px = 0.55 * r_endo * np.cos(angle)
                py = 0.55 * r_endo * np.sin(angle)
                pap = (u - px) ** 2 + (v - py) ** 2 < (0.22 * r_endo) ** 2
                img[pap & endo] = contrast.myocardium
            if contrast.ghost:
                img = img + contrast.ghost * np.roll(np.where(endo | rv, img, 0), ghost_shift, axis=0)
            images[s, f] = _acquire(rng, img * shading, contrast, noise_sigma)
            labels[s, f] = label
    return PhantomSubject(f"{domain}-{number:03d}", domain, images, labels, contrast.spacing_mm, anatomy,
                          cycle_ms(seed, domain, number))


def _body(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> dict[str, np.ndarray]:
    """Chest outline and organs that stay still over the cycle."""
    bx, by = rng.uniform(125, 150), rng.uniform(90, 110)
    body = (xx / bx) ** 2 + (yy / by) ** 2
    lung_x, lung_y = rng.uniform(55, 75), rng.uniform(-10, 10)
    lungs = np.minimum(((xx - lung_x) / 45) ** 2 + ((yy - lung_y) / 60) ** 2,
                       ((xx + lung_x + 10) / 40) ** 2 + ((yy - lung_y) / 55) ** 2)
    aorta = (xx - rng.uniform(10, 25)) ** 2 + (yy - rng.uniform(55, 70)) ** 2
    spine = (xx - rng.uniform(-5, 5)) ** 2 + ((yy - 85) / 0.8) ** 2
    liver = ((xx + rng.uniform(30, 50)) / 70) ** 2 + ((yy - rng.uniform(40, 60)) / 45) ** 2
    return {"body": body, "lungs": lungs, "aorta": aorta, "spine": spine, "liver": liver}


def _background(body: dict[str, np.ndarray], c: Contrast, z: float) -> np.ndarray:
    img = np.zeros_like(body["body"])
    img[body["body"] < 1.0] = c.fat
    img[body["body"] < 0.85] = c.muscle
    img[body["lungs"] < 1.0] = c.lung
    img[body["liver"] < 0.4 + 0.8 * z] = c.liver  # the liver comes into view toward the apex
    img[body["aorta"] < 12.0 ** 2] = c.blood
    img[body["spine"] < 15.0 ** 2] = c.muscle * 0.6
    return img


def _shading(rng: np.random.Generator, c: Contrast, xx: np.ndarray, yy: np.ndarray,
             cx: float, cy: float) -> np.ndarray:
    """Smooth multiplicative field (coil profile / B1 inhomogeneity) with optional signal voids."""
    field = np.zeros_like(xx)
    for _ in range(4):
        mx, my = rng.uniform(-120, 120, size=2)
        width = rng.uniform(50, 120)
        field += rng.uniform(-1, 1) * np.exp(-((xx - mx) ** 2 + (yy - my) ** 2) / (2 * width ** 2))
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    low, high = c.shading
    field = low + (high - low) * field
    for _ in range(int(rng.integers(c.voids[0], c.voids[1] + 1))):
        # destructive B1 interference: a dark band or blob, often across the heart at 7T
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(-25, 25)
        across = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle) - offset
        along = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        width = rng.uniform(3, 8)
        length = rng.uniform(20, 60)
        void = np.exp(-across ** 2 / (2 * width ** 2) - along ** 2 / (2 * length ** 2))
        field = field * (1 - rng.uniform(0.7, 0.95) * void)
    return field.astype(np.float32)


def _acquire(rng: np.random.Generator, img: np.ndarray, c: Contrast, sigma: float) -> np.ndarray:
    """Point-spread blur and magnitude (Rician) noise."""
    img = ndimage.gaussian_filter(img, 0.7)
    shape = img.shape
    real = rng.normal(0, sigma, shape)
    imag = rng.normal(0, sigma, shape)
    if c.noise_corr_px:
        scale = 1.0 / (2 * np.sqrt(np.pi) * c.noise_corr_px)  # keep the noise variance after smoothing
        real = ndimage.gaussian_filter(real, c.noise_corr_px) / scale
        imag = ndimage.gaussian_filter(imag, c.noise_corr_px) / scale
    return np.sqrt((img + real) ** 2 + imag ** 2).astype(np.float32)


def generator_version() -> str:
    """Hash of this module's source: cached phantoms are rebuilt whenever the generator changes."""
    import hashlib

    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:8]


def phantom_fingerprint(domain: str, n_subjects: int, seed: int, size: int) -> str:
    """The prepared phantom's identity, known before (and without) generating it."""
    if domain not in DOMAINS:
        raise UsageError(f"unknown phantom domain '{domain}'; choose one of {', '.join(DOMAINS)}")
    return fingerprint({"phantom": generator_version(), "domain": domain, "subjects": n_subjects,
                        "seed": seed, "size": size, "prepared": PREPARED_REVISION})


def phantom_dataset(domain: str, n_subjects: int, seed: int, size: int,
                    cache_dir: Path | None = None,
                    on_subject: Callable[[int, int], None] | None = None) -> CineDataset:
    """The phantom of one domain at the training size, cached on disk when ``cache_dir`` is given."""
    key = phantom_fingerprint(domain, n_subjects, seed, size)
    path = cache_dir / f"phantom-{domain}-{key}" if cache_dir else None
    if path is not None and is_cached(path):
        return load(path)

    def stacks() -> Iterator[RawStack | PreparedStack]:
        workers = min(n_subjects, os.cpu_count() or 1)
        if workers <= 1:
            made: Iterator[RawStack | PreparedStack] = map(subject_stack, [seed] * n_subjects, [domain] * n_subjects,
                                           range(n_subjects))
            yield from _counted(made, n_subjects, on_subject)
            return
        # subjects are independent (each has its own generator): render and resize them on every core, in
        # order; only the training-size arrays come back
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
            made = pool.map(prepared_subject, [seed] * n_subjects, [domain] * n_subjects, range(n_subjects),
                            [size] * n_subjects)
            yield from _counted(made, n_subjects, on_subject)

    dataset = prepare(f"phantom-{domain}", stacks(), size, key)
    if path is not None:
        dataset = save(dataset, path)
    return dataset


def subject_stack(seed: int, domain: str, number: int) -> RawStack:
    """One rendered subject as the loaders' RawStack (top level, so worker processes can run it)."""
    subject = generate_subject(seed, domain, number)
    n_frames = subject.labels.shape[1]
    return RawStack(subject.name, subject.images, subject.labels, subject.spacing_mm, tuple(range(n_frames)),
                    n_frames, None, FIELD_STRENGTH[domain], SLICE_THICKNESS_MM, SLICE_THICKNESS_MM,
                    subject.trigger_ms, np.full(subject.labels.shape[:2], subject.rr_ms))


def prepared_subject(seed: int, domain: str, number: int, size: int) -> PreparedStack:
    """One subject rendered and brought to the training size (top level, for worker processes)."""
    return prepare_stack(subject_stack(seed, domain, number), size)


def _counted(stacks: Iterator, total: int,
             on_subject: Callable[[int, int], None] | None) -> Iterator:
    for number, stack in enumerate(stacks, start=1):
        yield stack
        if on_subject:
            on_subject(number, total)
