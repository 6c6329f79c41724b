"""Fine-tuning and pre-training loops, and prediction.

Stage 1 trains with the encoder frozen (its BatchNorm layers stay trainable), stage 2 with everything
unfrozen; each stage is one one-cycle schedule over the steps its schedule gives (``settings.stage_steps``).
A loss that becomes NaN/inf or diverges stops the run with ``TrainingError``; the grid records it as failed.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import TrainingError
from harness.train.model import build_model, device, resolve_precision
from harness.train.settings import PretrainSettings, TrainSettings

IGNORE = -100  # cross-entropy's ignore_index: pixels whose class was never contoured


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the pixels whose class is known (``IGNORE`` left out; 0 when none is), in
    float32: ``F.cross_entropy`` on a CPU, ``summed_cross_entropy`` on CUDA, whose ``nll_loss2d`` kernel has
    no deterministic implementation (a recorded seed would otherwise not reproduce a GPU run exactly)."""
    if logits.device.type == "cuda":
        return summed_cross_entropy(logits, target)
    known = (target != IGNORE).sum().clamp(min=1)
    return F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="sum") / known


def summed_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The same value from element-wise operations and sums only (deterministic on every device)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    known = target != IGNORE
    classes = torch.arange(logits.shape[1], device=logits.device).view(1, -1, 1, 1)
    per_pixel = -torch.where(target.unsqueeze(1) == classes, log_p, 0.0).sum(dim=1)  # IGNORE matches no class
    return (per_pixel * known).sum() / known.sum().clamp(min=1)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, averaged over the foreground classes, pooled over the batch (as nnU-Net's batch Dice);
    pixels whose class is unknown (``IGNORE``) take no part."""
    known = (target != IGNORE).unsqueeze(1)
    p = F.softmax(logits.float(), dim=1) * known
    g = F.one_hot(torch.where(known[:, 0], target, 0), logits.shape[1]).permute(0, 3, 1, 2) * known
    dims = (0, 2, 3)
    dice = (2 * (p * g).sum(dims) + smooth) / (p.sum(dims) + g.sum(dims) + smooth)
    return 1 - dice[1:].mean()


LOSSES = {"ce": cross_entropy, "ce+dice": lambda logits, target: cross_entropy(logits, target)
          + soft_dice_loss(logits, target)}


def to_classes(masks: np.ndarray) -> np.ndarray:
    """Source labels -> training classes: RV (3) is background; 255 (not contoured) is ignored."""
    classes = np.where(masks <= 2, masks, 0).astype(np.int64)
    classes[masks == 255] = IGNORE
    return classes


class Augmenter:
    """Random flips, rotation, zoom and brightness/contrast on a batch, on the batch's device, drawn from the
    run's own generator there (never the global one)."""

    def __init__(self, settings: TrainSettings, seed: int, dev: torch.device | str = "cpu"):
        self.s = settings
        self.dev = torch.device(dev)
        self.gen = torch.Generator(device=self.dev).manual_seed(seed)

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.gen, device=self.dev)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        angle = torch.deg2rad(self._uniform(n, -self.s.rotate_deg, self.s.rotate_deg))
        scale = 1.0 / self._uniform(n, 1.0, self.s.zoom)
        flip = torch.where(torch.rand(n, generator=self.gen, device=self.dev) < 0.5, -1.0, 1.0)
        cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
        theta = torch.stack([torch.stack([cos * flip, -sin, torch.zeros_like(cos)], 1),
                             torch.stack([sin * flip, cos, torch.zeros_like(cos)], 1)], 1)
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


DIVERGED = 20.0  # a loss this many times the stage's first (and above 10 nats) means the run diverged
WATCH_EVERY = 25  # steps between looks at the losses: each look waits for the device, so not every step


class _Stage:
    """One stage's optimiser, one-cycle schedule and loss watch. Losses stay on the device; every
    ``WATCH_EVERY`` steps (and at the end) they are read at once and checked for NaN/inf or divergence."""

    def __init__(self, model: torch.nn.Module, steps: int, lr: float, settings: TrainSettings, frozen: bool,
                 number: int):
        self.params = _set_stage(model, frozen)
        # one fused kernel updates every parameter (element-wise, so deterministic): on the CPU 5x faster
        # than the default per-tensor loop, which took a quarter of a default-model step there
        self.optimiser = torch.optim.AdamW(self.params, lr=lr, weight_decay=settings.weight_decay, fused=True)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(self.optimiser, max_lr=lr, total_steps=steps)
        self.lr, self.number = lr, number
        self.pending: list[torch.Tensor] = []
        self.losses: list[float] = []

    def step(self, loss: torch.Tensor) -> None:
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        self.schedule.step()
        self.pending.append(loss.detach())
        if len(self.pending) >= WATCH_EVERY:
            self.watch()

    def watch(self) -> None:
        """Read the losses since the last look (one wait for the device) and stop a run that diverged."""
        if not self.pending:
            return
        values = torch.stack(self.pending).float().cpu().tolist()
        self.pending = []
        for value in values:
            first = self.losses[0] if self.losses else math.inf  # before any update of this stage
            if not math.isfinite(value) or value > max(10.0, DIVERGED * first):
                what = f"became {value}" if not math.isfinite(value) else f"rose to {value:.3g} from {first:.3g}"
                raise TrainingError(f"training diverged: the loss {what} at step {len(self.losses) + 1} of stage "
                                    f"{self.number} (max lr {self.lr:g}); lower the learning rate")
            self.losses.append(value)


def _check_points(steps: int, checks: int) -> set[int]:
    """Steps (1-based) after which validation runs: ``checks`` evenly spaced, the last step included."""
    return {max(1, round(steps * (i + 1) / checks)) for i in range(max(1, min(checks, steps)))}


def fine_tune(model: torch.nn.Module, images: np.ndarray, masks: np.ndarray, settings: TrainSettings,
              order_seed: int, augment_seed: int, on_step: Callable[[], None] | None = None,
              steps: tuple[int, int] | None = None, validate: Callable[[torch.nn.Module], float] | None = None,
              on_check: Callable[[int, float], None] | None = None, loss: str = "ce") -> dict:
    """Two-stage fine-tuning in place; returns losses, steps, epochs and the validation checks.

    ``steps`` (stage 1, stage 2) defaults to the settings' fixed steps. With ``validate`` (a score of the
    model on validation subjects, higher is better) the model is checked ``settings.checks`` times per
    stage; ``on_check(check number, score)`` hears each (a tuner may raise there to prune), and with
    ``settings.select == "best-val"`` the best-scoring weights are kept instead of the last. ``loss`` is
    cross-entropy ("ce", the published protocol's) or "ce+dice" (pre-training's option).
    """
    if loss not in LOSSES:
        raise TrainingError(f"loss '{loss}' is not known; choose one of {', '.join(LOSSES)}")
    loss_fn = LOSSES[loss]
    if settings.select not in ("last", "best-val"):
        raise TrainingError(f"select '{settings.select}' is not known; choose last or best-val")
    if settings.select == "best-val" and validate is None:
        raise TrainingError("select best-val needs validation subjects")
    steps = steps or (settings.steps_frozen, settings.steps_unfrozen)
    precision = resolve_precision(settings.precision)
    memory = torch.channels_last if settings.channels_last else torch.contiguous_format
    model.to(device(), memory_format=memory)
    dev = next(model.parameters()).device
    order_rng = np.random.default_rng(order_seed)
    augment = Augmenter(settings, augment_seed, dev)
    # the whole training subset lives on the training device; a step only indexes it there
    x_all = torch.from_numpy(np.ascontiguousarray(images)).to(dev)
    y_all = torch.from_numpy(to_classes(masks).astype(np.int16)).to(dev)  # int16 holds IGNORE; 1/4 of int64
    checks: list[list[float]] = []
    best: tuple[float, int, dict] | None = None
    losses = []
    done = 0
    for number, (stage_steps, lr, frozen) in enumerate(
            [(steps[0], settings.lr_frozen, True), (steps[1], settings.lr_unfrozen, False)], start=1):
        if stage_steps == 0:
            losses.append(float("nan"))
            continue
        stage = _Stage(model, stage_steps, lr, settings, frozen, number)
        points = _check_points(stage_steps, settings.checks) if validate else set()
        model.train()
        # the stage's batches go to the device at once: no host-to-device copy per step
        batches = torch.from_numpy(np.stack(list(_batches(len(images), settings.batch_size, stage_steps,
                                                          order_rng)))).to(dev)
        for i, index in enumerate(batches, start=1):
            x, y = augment(x_all[index].float()[:, None], y_all[index].long())
            x = x.contiguous(memory_format=memory)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                value = loss_fn(model(x), y)
            stage.step(value)
            done += 1
            if on_step:
                on_step()
            if i in points:
                stage.watch()
                score = float(validate(model))
                checks.append([done, score])
                if settings.select == "best-val" and (best is None or score > best[0]):
                    best = (score, done, copy.deepcopy(model.state_dict()))
                if on_check:
                    on_check(len(checks), score)
                model.train()
        stage.watch()
        losses.append(float(np.mean(stage.losses[-10:])))
    if best is not None:
        model.load_state_dict(best[2])
    return {"loss_frozen": losses[0], "loss_unfrozen": losses[1], "steps": list(steps),
            "epochs": sum(steps) * settings.batch_size / len(images), "precision": precision,
            "checks": checks, "selected_step": best[1] if best else done}


def pretrain(images: np.ndarray, masks: np.ndarray, settings: PretrainSettings,
             on_step: Callable[[], None] | None = None) -> torch.nn.Module:
    """Train a base model from scratch (or ImageNet) on source-domain data, all layers at once."""
    model = build_model(settings.encoder, settings.encoder_weights, settings.decoder_channels, seed=settings.seed)
    train = TrainSettings(encoder=settings.encoder, decoder_channels=settings.decoder_channels, size=settings.size,
                          batch_size=settings.batch_size, steps_frozen=0, steps_unfrozen=settings.steps,
                          lr_unfrozen=settings.lr)
    seeds = np.random.SeedSequence(settings.seed).generate_state(2)
    fine_tune(model, images, masks, train, int(seeds[0]), int(seeds[1]), on_step, loss=settings.loss)
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

