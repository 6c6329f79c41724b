"""Parsing of study options shared by `run` and `pretrain`."""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from harness import registry
from harness.errors import UsageError
from harness.runner import StudySettings
from harness.train import PretrainSettings, TrainSettings


def parse_ns(text: str) -> tuple[int, ...]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise UsageError(f"--n '{text}' is not a comma list of positive whole numbers; e.g. --n 2,5,10")
    return tuple(sorted(set(values)))


def parse_strategies(text: str) -> tuple[str, ...]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError("--strategy is empty; give one or more names (comma list) or 'all'")
    if names == ["all"]:
        return tuple(registry.discover())
    for name in names:
        registry.entry(name)  # unknown names fail here, with a did-you-mean
    return tuple(dict.fromkeys(names))


def parse_params(items: list[str]) -> dict[str, dict[str, str]]:
    params: dict[str, dict[str, str]] = {}
    for item in items:
        name, _, rest = item.partition(".")
        key, eq, value = rest.partition("=")
        if not (name and key and eq):
            raise UsageError(f"--strategy-param '{item}' must look like STRATEGY.KEY=VALUE, "
                             "e.g. subject_random.per_subject=20")
        params.setdefault(name, {})[key] = value
    return params


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    d, pd_ = TrainSettings(), PretrainSettings()
    p.add_argument("--encoder", default=d.encoder, help=f"U-Net encoder (smp name; default {d.encoder})")
    p.add_argument("--decoder-channels", default=",".join(map(str, d.decoder_channels)),
                   help=f"U-Net decoder widths, 5 numbers (default {','.join(map(str, d.decoder_channels))}; "
                        "smp's default is 256,128,64,32,16)")
    p.add_argument("--encoder-weights", default="none",
                   help="encoder init for pre-training: none (default) or imagenet (needs the network)")
    p.add_argument("--size", type=int, default=d.size, help=f"training image size in px (default {d.size})")
    p.add_argument("--pretrain-steps", type=int, default=pd_.steps,
                   help=f"optimiser steps to pre-train the base model (default {pd_.steps})")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=d.precision,
                   help="auto: bf16 autocast where the CPU/GPU has native bf16 (default)")
    p.add_argument("--cache-dir", default=None,
                   help="where phantoms and base models are cached (default $CINE_HARNESS_CACHE or ~/.cache/cine-harness)")


def settings_from(args: argparse.Namespace, study: dict[str, Any] | None = None,
                  train_overrides: dict[str, Any] | None = None) -> StudySettings:
    """Study settings from the model options in ``args``, study fields and training overrides."""
    weights = None if args.encoder_weights.lower() == "none" else args.encoder_weights
    if args.size < 32 or args.size % 32:
        raise UsageError(f"--size {args.size}: the U-Net needs a multiple of 32 (e.g. 128 or 256)")
    try:
        decoder = tuple(int(c) for c in args.decoder_channels.split(","))
    except ValueError:
        decoder = ()
    if len(decoder) != 5 or min(decoder) < 1:
        raise UsageError(f"--decoder-channels '{args.decoder_channels}': give 5 positive widths, e.g. 256,128,64,32,16")
    train = replace(TrainSettings(), encoder=args.encoder, decoder_channels=decoder, size=args.size,
                    precision=args.precision, **(train_overrides or {}))
    pretrain = replace(PretrainSettings(), encoder=args.encoder, decoder_channels=decoder,
                       encoder_weights=weights, size=args.size,
                       steps=args.pretrain_steps)
    return StudySettings(train=train, pretrain=pretrain, **(study or {}))
