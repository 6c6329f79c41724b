"""Model building, pre-training and the published two-stage fine-tuning schedule.

The only module that imports segmentation_models_pytorch. Stage 1 trains with the encoder frozen
(its BatchNorm layers stay trainable), stage 2 with everything unfrozen; each stage is a one-cycle
schedule of a fixed number of optimiser steps, so every subset, whatever its size, gets the same
number of steps (the study scaled epochs as round(10 * 5076 / size) for the same reason).
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import UsageError

N_CLASSES = 3  # background, LV, MY
# Half the width of smp's default decoder (256, 128, 64, 32, 16): 1.5x faster on a CPU at 128 px.
DECODER_CHANNELS = (128, 64, 32, 16, 16)


@dataclass(frozen=True)
class TrainSettings:
    """Everything about training that changes its result; recorded in every run spec."""

    encoder: str = "resnet18"
    decoder_channels: tuple[int, ...] = DECODER_CHANNELS
    size: int = 128
    batch_size: int = 8
    steps_frozen: int = 100
    steps_unfrozen: int = 100
    lr_frozen: float = 1e-3
    lr_unfrozen: float = 3e-4
    weight_decay: float = 1e-4
    precision: str = "auto"  # "bf16", "fp32" or "auto" (bf16 where the CPU has native bf16)
    channels_last: bool = True
    rotate_deg: float = 90.0
    zoom: float = 1.2
    brightness: float = 0.4
    contrast: float = 0.4

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PretrainSettings:
    encoder: str = "resnet18"
    decoder_channels: tuple[int, ...] = DECODER_CHANNELS
    encoder_weights: str | None = None  # "imagenet" needs the network once
    size: int = 128
    batch_size: int = 8
    steps: int = 600
    lr: float = 1e-3
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def device() -> torch.device:
    """The GPU when there is one, set up for run-to-run reproducible kernels; else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    # Deterministic cuBLAS/cuDNN choices, so a recorded seed reproduces a run. Ops without a
    # deterministic CUDA kernel (e.g. nearest-upsampling backward) warn instead of failing.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device("cuda")


def resolve_precision(precision: str, dev: torch.device | None = None) -> str:
    """'auto' picks bf16 on a GPU with bf16 or a CPU with native bf16 instructions, else fp32."""
    if precision in ("bf16", "fp32"):
        return precision
    if precision != "auto":
        raise UsageError(f"precision must be bf16, fp32 or auto, got '{precision}'")
    dev = dev or device()
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "fp32"
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def check_weights_reachable(encoder_weights: str | None) -> None:
    """Fail in seconds, not after minutes of retries, when pretrained weights cannot be downloaded."""
    if not encoder_weights:
        return
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise UsageError(
            f"encoder weights '{encoder_weights}' must be downloaded but HF_HUB_OFFLINE is set; "
            "unset it, or use --encoder-weights none"
        )
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError as exc:
        raise UsageError(
            f"encoder weights '{encoder_weights}' must be downloaded from huggingface.co, which is not "
            f"reachable ({exc.__class__.__name__}); connect to the network or use --encoder-weights none"
        ) from None


def build_model(encoder: str, encoder_weights: str | None = None,
                decoder_channels: tuple[int, ...] = DECODER_CHANNELS) -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    check_weights_reachable(encoder_weights)
    try:
        return smp.Unet(encoder, encoder_weights=encoder_weights, in_channels=1, classes=N_CLASSES,
                        decoder_channels=tuple(decoder_channels))
    except (KeyError, ValueError) as exc:
        raise UsageError(f"segmentation_models_pytorch cannot build encoder '{encoder}': {exc}") from None


IGNORE = -100  # cross-entropy's ignore_index: pixels whose class was never contoured


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the pixels whose class is known (``IGNORE`` left out), in float32.

    The same value as ``F.cross_entropy(logits, target, ignore_index=IGNORE)``, built from element-wise
    operations and sums only: CUDA's ``nll_loss2d`` kernel has no deterministic implementation, so a
    recorded seed would otherwise not reproduce a GPU run exactly.
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    known = target != IGNORE
    one_hot = F.one_hot(torch.where(known, target, 0), logits.shape[1]).permute(0, 3, 1, 2)
    per_pixel = -(log_p * one_hot).sum(dim=1)
    return (per_pixel * known).sum() / known.sum().clamp(min=1)


def to_classes(masks: np.ndarray) -> np.ndarray:
    """Source labels -> training classes: RV (3) is background; 255 (not contoured) is ignored."""
    classes = np.where(masks <= 2, masks, 0).astype(np.int64)
    classes[masks == 255] = IGNORE
    return classes


class Augmenter:
    """Random flips, rotation, zoom and brightness/contrast on a batch, from its own generator."""

    def __init__(self, settings: TrainSettings, seed: int):
        self.s = settings
        self.gen = torch.Generator().manual_seed(seed)

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.gen)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        angle = torch.deg2rad(self._uniform(n, -self.s.rotate_deg, self.s.rotate_deg))
        scale = 1.0 / self._uniform(n, 1.0, self.s.zoom)
        flip = torch.where(torch.rand(n, generator=self.gen) < 0.5, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = scale * torch.cos(angle) * flip
        theta[:, 0, 1] = -scale * torch.sin(angle)
        theta[:, 1, 0] = scale * torch.sin(angle) * flip
        theta[:, 1, 1] = scale * torch.cos(angle)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        y = F.grid_sample(y[:, None].float(), grid, mode="nearest", align_corners=False)[:, 0].long()
        bright = self._uniform(n, -self.s.brightness, self.s.brightness).view(n, 1, 1, 1) * 0.5
        contrast = self._uniform(n, 1 - self.s.contrast, 1 + self.s.contrast).view(n, 1, 1, 1)
        return ((x - 0.5) * contrast + 0.5 + bright).clamp(0, 1), y


def _set_stage(model: torch.nn.Module, frozen_encoder: bool) -> list[torch.nn.Parameter]:
    """Freeze or unfreeze the encoder; BatchNorm layers always train. Returns trainable parameters."""
    for p in model.parameters():
        p.requires_grad = True
    if frozen_encoder:
        for module in model.encoder.modules():
            trainable = isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
            for p in module.parameters(recurse=False):
                p.requires_grad = trainable
    return [p for p in model.parameters() if p.requires_grad]


def _batches(n_images: int, batch_size: int, steps: int, rng: np.random.Generator):
    """Index batches over shuffled epochs until ``steps`` batches were given."""
    given = 0
    while given < steps:
        order = rng.permutation(n_images)
        for start in range(0, n_images, batch_size):
            if given == steps:
                return
            batch = order[start:start + batch_size]
            if len(batch) < min(batch_size, n_images):  # keep batch statistics stable
                batch = np.concatenate([batch, order[: batch_size - len(batch)]])
            yield batch
            given += 1


def _train_stage(model: torch.nn.Module, images: np.ndarray, targets: np.ndarray, steps: int, lr: float,
                 settings: TrainSettings, frozen_encoder: bool, order_rng: np.random.Generator,
                 augment: Augmenter, precision: str, on_step: Callable[[], None] | None) -> float:
    if steps == 0:
        return float("nan")
    dev = next(model.parameters()).device
    params = _set_stage(model, frozen_encoder)
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    model.train()
    memory = torch.channels_last if settings.channels_last else torch.contiguous_format
    losses = []
    for batch in _batches(len(images), settings.batch_size, steps, order_rng):
        x = torch.from_numpy(images[batch].astype(np.float32))[:, None]
        y = torch.from_numpy(targets[batch])
        x, y = augment(x, y)
        x, y = x.to(dev, memory_format=memory), y.to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = cross_entropy(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if on_step:
            on_step()
    return float(np.mean(losses[-10:]))


def fine_tune(model: torch.nn.Module, images: np.ndarray, masks: np.ndarray, settings: TrainSettings,
              order_seed: int, augment_seed: int,
              on_step: Callable[[], None] | None = None) -> dict[str, float]:
    """Two-stage fine-tuning in place; returns the final training losses and the epochs they took."""
    precision = resolve_precision(settings.precision)
    model.to(device(), memory_format=torch.channels_last if settings.channels_last else torch.contiguous_format)
    order_rng = np.random.default_rng(order_seed)
    augment = Augmenter(settings, augment_seed)
    targets = to_classes(masks)
    loss1 = _train_stage(model, images, targets, settings.steps_frozen, settings.lr_frozen, settings, True,
                         order_rng, augment, precision, on_step)
    loss2 = _train_stage(model, images, targets, settings.steps_unfrozen, settings.lr_unfrozen, settings,
                         False, order_rng, augment, precision, on_step)
    epochs = (settings.steps_frozen + settings.steps_unfrozen) * settings.batch_size / len(images)
    return {"loss_frozen": loss1, "loss_unfrozen": loss2, "epochs": epochs, "precision": precision}


def pretrain(images: np.ndarray, masks: np.ndarray, settings: PretrainSettings,
             on_step: Callable[[], None] | None = None) -> torch.nn.Module:
    """Train a base model from scratch (or ImageNet) on source-domain data, all layers at once."""
    torch.manual_seed(settings.seed)
    model = build_model(settings.encoder, settings.encoder_weights, settings.decoder_channels)
    train = TrainSettings(encoder=settings.encoder, decoder_channels=settings.decoder_channels, size=settings.size, batch_size=settings.batch_size,
                          steps_frozen=0, steps_unfrozen=settings.steps, lr_unfrozen=settings.lr)
    seeds = np.random.SeedSequence(settings.seed).generate_state(2)
    fine_tune(model, images, masks, train, int(seeds[0]), int(seeds[1]), on_step)
    return model


def save_model(model: torch.nn.Module, path: Path, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, tmp)
    tmp.replace(path)


def load_model(path: Path, encoder: str, decoder_channels: tuple[int, ...] = DECODER_CHANNELS,
               init_seed: int | None = None) -> torch.nn.Module:
    """The base model from a checkpoint. ``init_seed`` seeds anything not in it (nothing for a U-Net)."""
    if init_seed is not None:
        torch.manual_seed(init_seed)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(encoder, decoder_channels=decoder_channels)
    model.load_state_dict(checkpoint["state_dict"])
    return model


@torch.inference_mode()
def predict(model: torch.nn.Module, images: np.ndarray, precision: str = "auto", batch_size: int = 32,
            on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Class labels (N, H, W) uint8 after argmax."""
    dev = device()
    precision = resolve_precision(precision, dev)
    model.to(dev, memory_format=torch.channels_last).eval()
    out = np.empty(images.shape, np.uint8)
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size].astype(np.float32))[:, None]
        x = x.to(dev, memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        out[start:start + len(x)] = logits.argmax(1).to(torch.uint8).cpu().numpy()
        if on_batch:
            on_batch(len(x))
    return out

