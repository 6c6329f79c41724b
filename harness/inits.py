"""Where a fine-tune starts: the initialisations a study compares (``--init``), a grid axis like strategy.

Torch-free: parsing and naming only; ``harness.train.model`` builds the weights. Inits with a trained head
(``source``, ``checkpoint:PATH``) are also evaluated without fine-tuning (the ``base`` runs); ``imagenet``
and ``random`` have a random decoder and head, so a base evaluation would mean nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError

#: The kinds of initialisation, as written after --init (checkpoint takes a path).
INITS = {
    "source": "the built-in base model, pre-trained on the phantom's 1.5T-like source domain (default)",
    "checkpoint": "checkpoint:PATH, a model of yours: `harness pretrain --data` output or an smp U-Net state_dict",
    "imagenet": "encoder from ImageNet (downloaded once), decoder and head random from the run's init seed",
    "random": "every weight random from the run's init seed (the published R)",
}
BASE_KINDS = ("source", "checkpoint")


@dataclass(frozen=True)
class Init:
    kind: str
    path: Path | None = None  # checkpoint only

    @property
    def name(self) -> str:
        """Short, folder-safe name used in run folders and reports: source, imagenet, random, ckpt-<stem>."""
        if self.kind != "checkpoint":
            return self.kind
        return "ckpt-" + re.sub(r"[^A-Za-z0-9._-]+", "-", Path(self.path).stem)

    @property
    def has_base(self) -> bool:
        return self.kind in BASE_KINDS

    @property
    def text(self) -> str:
        return f"checkpoint:{self.path}" if self.kind == "checkpoint" else self.kind


def parse_inits(text: str) -> tuple[Init, ...]:
    """'checkpoint:models/acdc.pt,imagenet,random' -> Inits, in the order given."""
    inits = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        kind, colon, path = part.partition(":")
        if kind == "checkpoint":
            if not path:
                raise UsageError("--init checkpoint needs a path: checkpoint:PATH, e.g. checkpoint:models/acdc.pt")
            inits.append(Init("checkpoint", Path(path).expanduser().resolve()))
        elif kind in INITS and not colon:
            inits.append(Init(kind))
        else:
            raise UsageError(f"--init '{part}' is not known; use source, checkpoint:PATH, imagenet or random "
                             "(comma list to compare them)")
    if not inits:
        raise UsageError("--init is empty; give source, checkpoint:PATH, imagenet or random (comma list)")
    names = [i.name for i in inits]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"--init names {', '.join(twice)} twice (checkpoints are named by file stem); "
                         "give each init once, and checkpoints distinct file names")
    return tuple(inits)
