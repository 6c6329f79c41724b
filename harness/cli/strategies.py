"""`harness strategies`: list the registered sampling strategies."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness import registry

EXAMPLE = """example:
  python -m harness strategies"""
HELP = "list the sampling strategies installed (entry-point group harness.strategies)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def execute(args: argparse.Namespace, console: Console) -> int:
    table = Table("name", "package", "description")
    for name, entry in registry.discover().items():
        table.add_row(escape(name), escape(entry.package), escape(str(getattr(entry.load_class(), "description", ""))))
    Console().print(table)
    return 0
