"""Names the code's docstrings and comments point to (``harness.x.y``) must exist (issue 19.6: store.py named a
``harness.inits.method_label`` that never did)."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

from harness.api import ENTRY_POINT_GROUP

ROOT = Path(__file__).resolve().parents[1]


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_every_harness_name_in_a_docstring_exists():
    found = {}
    for folder in ("harness", "reports", "strategies"):
        for path in (ROOT / folder).rglob("*.py"):
            for name in re.findall(r"``(harness\.[A-Za-z_][A-Za-z0-9_.]*)``", path.read_text()):
                found.setdefault(name, str(path.relative_to(ROOT)))
    assert found, "the scan found no references at all"
    missing = {name: where for name, where in found.items() if name != ENTRY_POINT_GROUP and not _resolves(name)}
    assert not missing, missing
