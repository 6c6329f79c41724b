"""`harness strategies`: list the registered sampling strategies."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from harness import registry

EXAMPLE = """example:
  python -m harness strategies"""
HELP = "list the sampling strategies installed (entry-point group harness.strategies)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def execute(args: argparse.Namespace, console: Console) -> int:
    from harness.api import is_oracle, uses_of

    table = Table("reads", "description")
    table.columns.insert(0, Column("package", no_wrap=True))
    table.columns.insert(0, Column("name", no_wrap=True))
    for name, entry in registry.discover().items():
        cls = entry.load_class()
        uses = uses_of(cls)
        reads = "labels: oracle" if is_oracle(cls) else (", ".join(sorted(uses)) or "geometry, timing")
        ranks = "" if callable(getattr(cls, "rank", None)) else " (no --budget-minutes)"
        table.add_row(escape(name), escape(entry.package), escape(reads + ranks),
                      escape(str(getattr(cls, "description", ""))))
    Console().print(table)
    return 0
