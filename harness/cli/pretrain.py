"""`harness pretrain`: train (or find cached) the base model on the source-domain phantom."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from harness.cli.options import add_model_arguments, settings_from
from harness.runner import Study

HELP = "pre-train the base model on the source-domain phantom (cached; `run` does this on first use)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)


def execute(args: argparse.Namespace, console: Console) -> int:
    study = Study(settings_from(args), store=None, console=console,
                  cache=Path(args.cache_dir) if args.cache_dir else None)
    path, key = study.base_model()
    console.print(f"base model {key}: {path}")
    return 0
