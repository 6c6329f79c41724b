"""Training settings and the fine-tuning schedules: plain data, no torch.

Everything here that changes a result is recorded in every run spec. A schedule turns the settings and
the size of a run's training subset into optimiser steps per stage.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from harness.errors import UsageError

CLASSES = ("background", "LV", "MY")  # what the harness's models predict, in head order
# Half the width of smp's default decoder (256, 128, 64, 32, 16): 1.5x faster on a CPU at 128 px.
DECODER_CHANNELS = (128, 64, 32, 16, 16)
SMP_DECODER_CHANNELS = (256, 128, 64, 32, 16)
# bumped whenever the training arithmetic changes (2: fused AdamW on the CPU too): part of the cached base
# model's identity, so a cache never serves weights the current code would not produce
TRAINING_REVISION = 2
# the plateau schedule without validation subjects: this many check intervals, the last weights kept
FIXED_CHECKS = 20


@dataclass(frozen=True)
class TrainSettings:
    """Everything about fine-tuning that changes its result; recorded in every run spec."""

    encoder: str = "resnet18"
    decoder_channels: tuple[int, ...] = DECODER_CHANNELS
    size: int = 128
    batch_size: int = 8
    # "plateau": until validation stops improving (harness.train.stopping); "fast": fixed steps per stage;
    # "paper": the published epochs scaled to the subset (see SCHEDULES)
    schedule: str = "plateau"
    steps_frozen: int = 100  # fast schedule: optimiser steps with the encoder frozen
    steps_unfrozen: int = 100
    epochs: int = 10  # paper schedule: epochs per stage on the whole pool (E_full); subsets get more
    lr_frozen: float = 1e-3
    lr_unfrozen: float = 1e-3  # the plateau schedule's; the fast schedule sets 3e-4 (SCHEDULES)
    weight_decay: float = 1e-4
    select: str = "best-val"  # "best-val": the best validation Dice at the checks (the start included); "last"
    checks: int = 10  # fixed schedules: validation checks per stage (the training record, best-val, tuning's pruner)
    # the stopping rule of the plateau schedule (harness.train.stopping.StoppingRule; fixed schedules are judged
    # by its patience and delta): checks every max(1 epoch, check_images images), patience, delta, cap
    patience: int = 5
    min_delta: float = 0.002
    patience_fraction: float = 0.5
    max_checks: int = 40
    check_images: int = 160
    reductions: int = 2  # plateau schedule: plateaus that lower the learning rate (x reduce_factor) before one stops
    reduce_factor: float = 0.2
    average_decay: float = 0.95  # plateau schedule: the checked weights' moving average (half-life ~14 steps)
    precision: str = "auto"  # "bf16", "fp32" or "auto" (bf16 where the CPU has native bf16)
    channels_last: bool = True
    # CPU threads of a run: CPU kernels split their sums by thread, so the count changes the last digits of
    # a result; fixing it per run makes a run give the same Dice in any executor or worker count
    threads: int = 1
    # the plateau schedule's augmentation, a quarter of the published strength (PUBLISHED_AUGMENTATION): on the
    # phantom the full strength kept n = 10 learning past 80 epochs; a quarter reached more in half the epochs
    # (docs/benchmarks.md#convergence)
    rotate_deg: float = 22.5
    zoom: float = 1.05
    brightness: float = 0.1
    contrast: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)

    def rule(self):
        """The stopping rule these settings give (``harness.train.stopping.StoppingRule``)."""
        from harness.train.stopping import StoppingRule

        return StoppingRule(self.patience, self.min_delta, self.patience_fraction, self.max_checks,
                            self.check_images, self.reductions, self.reduce_factor)

    @classmethod
    def from_dict(cls, data: dict) -> TrainSettings:
        """Settings of a run spec; specs written before 0.9 (no "schedule" plateau) keep what they ran:
        their schedule and selection were recorded, the rule's fields take their defaults."""
        fields = {**data, "decoder_channels": tuple(data["decoder_channels"])}
        if "reductions" not in data:  # written before the rule lowered the rate: every plateau stopped
            fields["reductions"] = 0
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


#: The published study's augmentation: flips, rotation up to 90 degrees, zoom up to 1.2, brightness/contrast 0.4
PUBLISHED_AUGMENTATION = {"rotate_deg": 90.0, "zoom": 1.2, "brightness": 0.4, "contrast": 0.4}

#: What each schedule sets; a flag given on the command line overrides it. The paper schedule is the
#: published protocol: stage 1 encoder frozen (BatchNorm trainable), one-cycle to 1e-4; stage 2 unfrozen,
#: one-cycle to 1e-5; E = round(epochs * pool images / subset images) epochs each; batch 8; flips, rotation
#: up to 90 degrees, brightness/contrast 0.4, zoom up to 1.2; last epoch kept.
SCHEDULES: dict[str, dict[str, object]] = {
    "plateau": {},  # the TrainSettings defaults are the plateau schedule's
    "fast": {"lr_frozen": 1e-3, "lr_unfrozen": 3e-4, "select": "last", **PUBLISHED_AUGMENTATION},
    "paper": {"lr_frozen": 1e-4, "lr_unfrozen": 1e-5, "batch_size": 8, "epochs": 10, **PUBLISHED_AUGMENTATION,
              "select": "last"},
}


def stage_steps(settings: TrainSettings, subset_images: int, pool_images: int) -> tuple[int, int]:
    """Optimiser steps of stage 1 (encoder frozen) and stage 2 for a subset of ``subset_images`` under a fixed
    schedule; the plateau schedule has none fixed (0, 0): its rule decides while it trains."""
    if settings.schedule == "plateau":
        return 0, 0
    if settings.schedule == "fast":
        return settings.steps_frozen, settings.steps_unfrozen
    if settings.schedule != "paper":
        raise UsageError(f"schedule '{settings.schedule}' is not known; choose one of {', '.join(SCHEDULES)}")
    epochs = max(1, round(settings.epochs * pool_images / max(subset_images, 1)))
    steps = epochs * math.ceil(subset_images / settings.batch_size)
    return steps, steps


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
    loss: str = "ce"  # "ce", or "ce+dice": cross-entropy plus soft Dice of LV and MY

    def to_dict(self) -> dict:
        return asdict(self)


def config_key(strategy: str, init: str, n: int) -> str:
    """Names one tuned configuration (strategy, init, n)."""
    return f"{strategy}__{init}__n{n}"


def with_params(settings: TrainSettings, params: dict[str, object]) -> TrainSettings:
    """Settings with tuned parameters in place; 'augment' is one strength in [0, 1] that scales rotation (up
    to 90 degrees), zoom (up to 1.2), brightness and contrast (up to 0.4) together."""
    from dataclasses import replace

    params = dict(params)
    strength = params.pop("augment", None)
    if strength is not None:
        s = float(strength)
        params.update(rotate_deg=90.0 * s, zoom=1.0 + 0.2 * s, brightness=0.4 * s, contrast=0.4 * s)
    return replace(settings, **params)
