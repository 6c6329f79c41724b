"""Training: settings and schedules (``settings``), the model, its inits and checkpoints (``model``, the only
place that imports segmentation_models_pytorch) and the loops (``loop``).

Settings import without torch (the grid and the CLI's ``--help`` need them); the rest loads torch on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from harness.train.settings import (CLASSES, DECODER_CHANNELS, SCHEDULES, PretrainSettings, TrainSettings,
                                    stage_steps)

_LAZY = {name: "harness.train.loop" for name in ("IGNORE", "cross_entropy", "fine_tune", "predict", "pretrain",
                                                 "to_classes")}
_LAZY.update({name: "harness.train.model" for name in (
    "Checkpoint", "build_model", "card_path", "check_weights_reachable", "device", "model_from_checkpoint", "read_checkpoint",
    "resolve_precision", "save_checkpoint")})

__all__ = ["CLASSES", "DECODER_CHANNELS", "PretrainSettings", "SCHEDULES", "TrainSettings", "stage_steps",
           *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness.train' has no attribute '{name}'")
