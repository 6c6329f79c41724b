"""Training: settings and schedules (``settings``), the model, its inits and checkpoints (``model``, the only
place that imports segmentation_models_pytorch) and the loops (``loop``)."""
from __future__ import annotations

from harness.train.loop import IGNORE, cross_entropy, fine_tune, predict, pretrain, to_classes
from harness.train.model import (Checkpoint, build_model, check_weights_reachable, device, model_from_checkpoint,
                                 read_checkpoint, resolve_precision, save_checkpoint)
from harness.train.settings import (CLASSES, DECODER_CHANNELS, SCHEDULES, PretrainSettings, TrainSettings,
                                    stage_steps)

__all__ = ["CLASSES", "Checkpoint", "DECODER_CHANNELS", "IGNORE", "PretrainSettings", "SCHEDULES",
           "TrainSettings", "build_model", "check_weights_reachable", "cross_entropy", "device", "fine_tune",
           "model_from_checkpoint", "predict", "pretrain", "read_checkpoint", "resolve_precision",
           "save_checkpoint", "stage_steps", "to_classes"]
