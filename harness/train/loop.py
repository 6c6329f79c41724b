"""Fine-tuning and pre-training loops, and prediction.

The default (plateau) schedule trains every layer until the stopping rule (``harness.train.stopping``) finds
that validation stopped improving, and keeps the best check's weights, the starting ones included; a loss
that becomes NaN/inf or explodes stops it there (reason "diverged"). The fixed schedules (fast, paper) train
stage 1 with the encoder frozen (its BatchNorm layers trainable) and stage 2 with everything unfrozen, each one
one-cycle schedule over the steps the schedule gives (``settings.stage_steps``); a loss that diverges stops
them with ``TrainingError`` (the grid records the run as failed). Every fine-tune returns its training record.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import TrainingError
from harness.train.model import build_model, device, resolve_precision
from harness.train.settings import FIXED_CHECKS, PUBLISHED_AUGMENTATION, PretrainSettings, TrainSettings

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
    """One stage's optimiser, learning-rate schedule and loss watch. Losses stay on the device; every
    ``WATCH_EVERY`` steps (and at each look) they are read at once and checked for NaN/inf or divergence.
    ``steps`` None: an open-ended stage (the plateau schedule) at a constant rate after a linear warm-up of
    ``warmup`` steps; else one one-cycle schedule over ``steps``."""

    def __init__(self, model: torch.nn.Module, steps: int | None, lr: float, settings: TrainSettings, frozen: bool,
                 number: int, warmup: int = 0):
        self.params = _set_stage(model, frozen)
        # one fused kernel updates every parameter (element-wise, so deterministic): on the CPU 5x faster
        # than the default per-tensor loop, which took a quarter of a default-model step there
        self.optimiser = torch.optim.AdamW(self.params, lr=lr, weight_decay=settings.weight_decay, fused=True)
        self.scale = 1.0  # an open-ended stage's rate, lowered by the stopping rule at a plateau
        if steps is None:
            ramp = max(1, warmup)
            self.schedule = torch.optim.lr_scheduler.LambdaLR(
                self.optimiser, lambda i: self.scale * min(1.0, (i + 1) / ramp))
        else:
            self.schedule = torch.optim.lr_scheduler.OneCycleLR(self.optimiser, max_lr=lr, total_steps=steps)
        self.lr, self.number = lr, number
        self.pending: list[torch.Tensor] = []
        self.losses: list[float] = []
        self.looked = 0  # losses already handed to the training record

    def rate(self) -> float:
        return float(self.optimiser.param_groups[0]["lr"])

    def lower(self, factor: float) -> None:
        """Multiply an open-ended stage's learning rate by ``factor`` from the next step on."""
        self.scale *= factor
        for group in self.optimiser.param_groups:
            group["lr"] *= factor

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

    def mean_loss(self) -> float:
        """Mean training loss since the previous call (NaN where no step ran)."""
        self.watch()
        recent = self.losses[self.looked:]
        self.looked = len(self.losses)
        return float(np.mean(recent)) if recent else float("nan")


class _Average:
    """An exponential moving average of a model's weights and BatchNorm statistics, updated after every step
    with one fused kernel per kind: the plateau schedule checks and keeps the average, whose validation score
    moves smoothly where the raw weights of a constant learning rate jump from step to step."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.pairs = [(a, m) for a, m in zip(self.model.parameters(), model.parameters())]
        floats = [(a, m) for a, m in zip(self.model.buffers(), model.buffers())]
        self.float_buffers = [(a, m) for a, m in floats if a.is_floating_point()]
        self.other_buffers = [(a, m) for a, m in floats if not a.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.decay
        pairs = self.pairs + self.float_buffers
        torch._foreach_lerp_([a for a, _ in pairs], [m for _, m in pairs], weight)
        for a, m in self.other_buffers:
            a.copy_(m)


def _check_points(steps: int, checks: int) -> set[int]:
    """Steps (1-based) after which validation runs: ``checks`` evenly spaced, the last step included."""
    return {max(1, round(steps * (i + 1) / checks)) for i in range(max(1, min(checks, steps)))}


class _Record:
    """The training record of one fine-tune (train.csv): a row at the start and at every check, with the mean
    training loss since the row before, and the validation Dice where there are validation subjects; the
    weights of the best check (the start included) are kept in memory while training goes on."""

    def __init__(self, model: torch.nn.Module, images: int, batch_size: int,
                 validate: Callable[[torch.nn.Module], dict[str, float]] | None,
                 on_check: Callable[[int, dict[str, float]], None] | None):
        self.model, self.images, self.batch_size = model, images, batch_size
        self.per_epoch = math.ceil(images / batch_size)  # batches of an epoch (the last one padded)
        self.validate, self.on_check = validate, on_check
        self.rows: list[dict[str, float | int | str]] = []
        self.scores: list[float] = []
        self.steps = 0
        self.best: tuple[float, int, dict] | None = None  # score, row, state_dict

    def check(self, stage: int, lr: float, loss: float, scored: torch.nn.Module | None = None,
              diverged: bool = False) -> None:
        row: dict[str, float | int | str] = {
            "step": self.steps, "stage": stage, "epoch": round(self.steps / self.per_epoch, 4),
            "images_seen": self.steps * self.batch_size, "lr": lr, "loss": loss,
            "val_dice_lv": math.nan, "val_dice_my": math.nan, "val_score": math.nan}
        if self.validate is not None:
            scored = scored if scored is not None else self.model
            values = ({"dice_lv": math.nan, "dice_my": math.nan, "score": math.nan} if diverged
                      else self.validate(scored))
            row.update(val_dice_lv=values["dice_lv"], val_dice_my=values["dice_my"], val_score=values["score"])
            score = float(values["score"])
            self.scores.append(score)
            if math.isfinite(score) and (self.best is None or score > self.best[0]):
                self.best = (score, len(self.rows), copy.deepcopy(scored.state_dict()))
            if self.on_check and not diverged:
                self.on_check(len(self.scores) - 1, values)
        self.rows.append(row)
        self.model.train()


def fine_tune(model: torch.nn.Module, images: np.ndarray, masks: np.ndarray, settings: TrainSettings,
              order_seed: int, augment_seed: int, on_step: Callable[[], None] | None = None,
              steps: tuple[int, int] | None = None,
              validate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
              on_check: Callable[[int, dict[str, float]], None] | None = None, loss: str = "ce",
              frozen_stage: bool = True) -> dict:
    """Fine-tuning in place; returns the training record, the stop reason, the kept check and steps run.

    The plateau schedule (``settings.schedule == "plateau"``, the default) trains all layers at a constant rate
    after a warm-up, checks the weight average on the validation subjects before the first step and every
    ``StoppingRule.interval_epochs`` epochs, and stops as the rule (``harness.train.stopping``) decides, keeping
    the best check's weights, the starting weights included. Without ``validate`` it trains a fixed number of
    checks' epochs and keeps the last weights. The fixed schedules (fast, paper) run their two stages' ``steps``
    (stage 1 with the encoder frozen, skipped with ``frozen_stage=False``: a random encoder is not frozen);
    with ``validate`` they are checked ``settings.checks`` times a stage (and at the start), and
    ``settings.select == "best-val"`` keeps the best check instead of the last. ``validate`` returns
    ``{"dice_lv", "dice_my", "score"}`` of a model (the rule reads "score"); ``on_check(check number, those
    values)`` hears each check (a tuner may raise there to prune). ``loss``: "ce" (the published protocol's) or "ce+dice" (pre-training's option).
    """
    from harness.train.stopping import decide

    if loss not in LOSSES:
        raise TrainingError(f"loss '{loss}' is not known; choose one of {', '.join(LOSSES)}")
    loss_fn = LOSSES[loss]
    if settings.select not in ("last", "best-val"):
        raise TrainingError(f"select '{settings.select}' is not known; choose last or best-val")
    if settings.select == "best-val" and validate is None and settings.schedule != "plateau":
        raise TrainingError("select best-val needs validation subjects")
    precision = resolve_precision(settings.precision)
    memory = torch.channels_last if settings.channels_last else torch.contiguous_format
    model.to(device(), memory_format=memory)
    dev = next(model.parameters()).device
    order_rng = np.random.default_rng(order_seed)
    augment = Augmenter(settings, augment_seed, dev)
    # the whole training subset lives on the training device; a step only indexes it there
    x_all = torch.from_numpy(np.ascontiguousarray(images)).to(dev)
    y_all = torch.from_numpy(to_classes(masks).astype(np.int16)).to(dev)  # int16 holds IGNORE; 1/4 of int64
    record = _Record(model, len(images), settings.batch_size, validate, on_check)

    def train_steps(stage: _Stage, count: int, average: _Average | None = None, points: set[int] = frozenset(),
                    on_point: Callable[[], None] = lambda: None) -> None:
        model.train()
        # the steps' batches go to the device at once: no host-to-device copy per step
        batches = torch.from_numpy(np.stack(list(_batches(len(images), settings.batch_size, count,
                                                          order_rng)))).to(dev)
        for i, index in enumerate(batches, start=1):
            x, y = augment(x_all[index].float()[:, None], y_all[index].long())
            x = x.contiguous(memory_format=memory)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                value = loss_fn(model(x), y)
            stage.step(value)
            if average is not None:
                average.update()
            record.steps += 1
            if on_step:
                on_step()
            if i in points:
                on_point()

    if settings.schedule == "plateau":
        rule = settings.rule()
        per_check = rule.interval_epochs(len(images)) * math.ceil(len(images) / settings.batch_size)
        stage = _Stage(model, None, settings.lr_unfrozen, settings, False, 2, warmup=per_check)
        average = _Average(model, settings.average_decay)
        record.check(2, stage.rate(), math.nan, average.model)
        reason = "fixed"
        for _ in range(rule.max_checks if validate is not None else FIXED_CHECKS):
            try:
                train_steps(stage, per_check, average)
                record.check(2, stage.rate(), stage.mean_loss(), average.model)
            except TrainingError:
                if validate is None:
                    raise
                record.check(2, stage.rate(), math.nan, diverged=True)
            if validate is not None:
                decision = decide(record.scores, rule)
                if decision.stop:
                    reason = decision.reason
                    break
                if decision.reduce:
                    stage.lower(rule.reduce_factor)
        else:
            reason = "cap" if validate is not None else "fixed"
        last = (settings.select == "last" or validate is None) and reason != "diverged"
        kept = average.model.state_dict() if last else None
        run_steps = [0, record.steps]
    else:
        steps = steps or (settings.steps_frozen, settings.steps_unfrozen)
        if not frozen_stage:
            steps = (0, steps[0] + steps[1])
        if validate is not None:
            record.check(0, math.nan, math.nan)
        for number, (count, lr, frozen) in enumerate(
                [(steps[0], settings.lr_frozen, True), (steps[1], settings.lr_unfrozen, False)], start=1):
            if count == 0:
                continue
            stage = _Stage(model, count, lr, settings, frozen, number)
            points = _check_points(count, settings.checks)
            train_steps(stage, count, points=points,
                        on_point=lambda stage=stage, number=number: record.check(number, stage.rate(),
                                                                                 stage.mean_loss()))
        reason = "schedule"
        kept = model.state_dict() if settings.select == "last" else None
        run_steps = list(steps)
    if kept is None and record.best is None:  # no check had a finite score: nothing better than the last
        kept = average.model.state_dict() if settings.schedule == "plateau" else model.state_dict()
    if kept is None:  # the best check's weights
        kept_row = record.best[1]
        model.load_state_dict(record.best[2])
    else:
        kept_row = len(record.rows) - 1
        model.load_state_dict(kept)
    if settings.schedule == "plateau" or validate is None:
        converged = reason == "plateau" if validate is not None else None
    else:  # a fixed schedule: had validation stopped improving for the rule's patience before it ended?
        decision = decide(record.scores, replace(settings.rule(), reductions=0)) if record.scores else None
        converged = decision.since >= decision.needed if decision is not None else None
    rows = record.rows
    for i, row in enumerate(rows):
        row["kept"] = i == kept_row
    checks = [[r["step"], r["val_score"]] for r in rows] if validate is not None else []
    losses = [r["loss"] for r in rows]
    return {"steps": run_steps, "steps_run": record.steps, "epochs": round(record.steps / record.per_epoch, 2),
            "precision": precision, "record": rows, "stop_reason": reason, "converged": converged,
            "kept_step": rows[kept_row]["step"] if rows else record.steps, "checks": checks,
            "selected_step": rows[kept_row]["step"] if rows else record.steps,
            "loss_last": next((v for v in reversed(losses) if v == v), float("nan"))}




def pretrain(images: np.ndarray, masks: np.ndarray, settings: PretrainSettings,
             on_step: Callable[[], None] | None = None) -> torch.nn.Module:
    """Train a base model from scratch (or ImageNet) on source-domain data, all layers at once."""
    model = build_model(settings.encoder, settings.encoder_weights, settings.decoder_channels, seed=settings.seed)
    train = TrainSettings(encoder=settings.encoder, decoder_channels=settings.decoder_channels, size=settings.size,
                          batch_size=settings.batch_size, schedule="fast", select="last", steps_frozen=0,
                          steps_unfrozen=settings.steps,
                          lr_unfrozen=settings.lr, **PUBLISHED_AUGMENTATION)
    seeds = np.random.SeedSequence(settings.seed).generate_state(2)
    fine_tune(model, images, masks, train, int(seeds[0]), int(seeds[1]), on_step, loss=settings.loss)
    return model


def predict(model: torch.nn.Module, images: np.ndarray, precision: str = "auto", batch_size: int = 32,
            on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Class labels (N, H, W) uint8 after argmax. The model moves to the device channels-last outside inference
    mode, so that a model checked during training keeps trainable parameters."""
    dev = device()
    precision = resolve_precision(precision, dev)
    model.to(dev, memory_format=torch.channels_last)
    memory = torch.channels_last
    model.eval()
    out = np.empty(images.shape, np.uint8)
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start:start + batch_size].astype(np.float32))[:, None]
            x = x.to(dev, memory_format=memory)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(x)
            out[start:start + len(x)] = logits.argmax(1).to(torch.uint8).cpu().numpy()
            if on_batch:
                on_batch(len(x))
    return out
