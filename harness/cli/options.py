"""Parsing of study options shared by `run` and `pretrain`."""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from harness import registry
from harness.errors import UsageError
from harness.grid import StudySettings
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
    p.add_argument("--encoder", default=None,
                   help=f"U-Net encoder (smp name; default: a checkpoint's card, else {d.encoder})")
    p.add_argument("--decoder-channels", default=None,
                   help=f"U-Net decoder widths, 5 numbers (default: a checkpoint's card, else "
                        f"{','.join(map(str, d.decoder_channels))}; smp's default is 256,128,64,32,16)")
    p.add_argument("--encoder-weights", default="none",
                   help="encoder init for pre-training: none (default) or imagenet (needs the network)")
    p.add_argument("--size", type=int, default=None,
                   help=f"training image size in px (default: a checkpoint's card, else {d.size})")
    p.add_argument("--pretrain-steps", type=int, default=pd_.steps,
                   help=f"optimiser steps to pre-train the phantom base model (default {pd_.steps})")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=d.precision,
                   help="auto: bf16 autocast where the CPU/GPU has native bf16 (default)")
    p.add_argument("--cache-dir", default=None,
                   help="where phantoms and base models are cached (default $CINE_HARNESS_CACHE or ~/.cache/cine-harness)")


def card_architecture(inits: tuple[str, ...] | None, classes: str | None) -> tuple[dict[str, Any], str] | None:
    """Encoder, decoder widths and size from the cards of the study's harness checkpoints (they must agree)."""
    from harness.inits import parse_inits
    from harness.train import read_checkpoint
    from harness.train.model import parse_classes

    found = []
    for init in parse_inits(",".join(inits)) if inits else ():
        if init.kind == "checkpoint":
            checkpoint = read_checkpoint(init.path, parse_classes(classes) if classes else None)
            if checkpoint.architecture is not None:
                found.append((checkpoint.architecture, str(init.path)))
    keys = ("encoder", "decoder_channels", "size")
    for arch, path in found[1:]:
        if any(arch[k] != found[0][0][k] for k in keys):
            raise UsageError(f"checkpoints '{found[0][1]}' and '{path}' have different architectures or sizes "
                             f"({', '.join(str(found[0][0][k]) for k in keys)} vs {', '.join(str(arch[k]) for k in keys)}); "
                             "a study compares inits of one architecture")
    return found[0] if found else None


def _resolve(flag: str, given: Any, from_card: Any, default: Any, path: str | None) -> Any:
    if given is not None and from_card is not None and given != from_card:
        raise UsageError(f"{flag} {given if not isinstance(given, tuple) else ','.join(map(str, given))} differs from "
                         f"checkpoint '{path}', which was trained with "
                         f"{from_card if not isinstance(from_card, tuple) else ','.join(map(str, from_card))}; "
                         f"leave {flag} out (the checkpoint's card sets it)")
    return given if given is not None else from_card if from_card is not None else default


def settings_from(args: argparse.Namespace, study: dict[str, Any] | None = None,
                  train_overrides: dict[str, Any] | None = None) -> StudySettings:
    """Study settings from the model options in ``args``, study fields and training overrides. A harness
    checkpoint among the inits sets encoder, decoder widths and size (flags that contradict it are errors)."""
    study = study or {}
    weights = None if args.encoder_weights.lower() == "none" else args.encoder_weights
    d = TrainSettings()
    found = card_architecture(study.get("inits"), study.get("checkpoint_classes"))
    card, path = found if found else ({}, None)
    decoder = None
    if args.decoder_channels is not None:
        try:
            decoder = tuple(int(c) for c in args.decoder_channels.split(","))
        except ValueError:
            decoder = ()
        if len(decoder) != 5 or min(decoder) < 1:
            raise UsageError(f"--decoder-channels '{args.decoder_channels}': give 5 positive widths, "
                             "e.g. 256,128,64,32,16")
    encoder = _resolve("--encoder", args.encoder, card.get("encoder"), d.encoder, path)
    decoder = _resolve("--decoder-channels", decoder,
                       tuple(card["decoder_channels"]) if "decoder_channels" in card else None, d.decoder_channels, path)
    size = _resolve("--size", args.size, card.get("size"), d.size, path)
    if size < 32 or size % 32:
        raise UsageError(f"--size {size}: the U-Net needs a multiple of 32 (e.g. 128 or 256)")
    train = replace(TrainSettings(), encoder=encoder, decoder_channels=decoder, size=size,
                    precision=args.precision, **(train_overrides or {}))
    pretrain = replace(PretrainSettings(), encoder=encoder, decoder_channels=decoder,
                       encoder_weights=weights, size=size, steps=args.pretrain_steps)
    return StudySettings(train=train, pretrain=pretrain, **study)
