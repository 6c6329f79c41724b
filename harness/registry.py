"""Discovery and lookup of sampling strategies through the ``harness.strategies`` entry-point group.

Discovery reads package metadata only; ``load`` imports the one strategy asked for.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from harness.api import ENTRY_POINT_GROUP, SamplingStrategy
from harness.errors import UsageError


@dataclass(frozen=True)
class StrategyEntry:
    name: str
    package: str
    target: str  # "module:Class"

    def load_class(self) -> type:
        return metadata.EntryPoint(self.name, self.target, ENTRY_POINT_GROUP).load()


def discover() -> dict[str, StrategyEntry]:
    """All registered strategies by name. The same name from two packages is an error naming both."""
    found: dict[str, StrategyEntry] = {}
    for dist in metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP:
                continue
            entry = StrategyEntry(ep.name, dist.metadata["Name"], ep.value)
            previous = found.get(ep.name)
            if previous is not None and previous != entry:
                raise UsageError(
                    f"strategy '{ep.name}' is registered twice: by package '{previous.package}' "
                    f"({previous.target}) and by '{entry.package}' ({entry.target}); uninstall one"
                )
            found[ep.name] = entry
    return dict(sorted(found.items()))


def entry(name: str) -> StrategyEntry:
    available = discover()
    if name not in available:
        close = difflib.get_close_matches(name, available, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown strategy '{name}'{hint} available: {', '.join(available) or 'none'}")
    return available[name]


def load(name: str, params: dict[str, str] | None = None) -> SamplingStrategy:
    """Instantiate strategy ``name``; ``params`` are text values converted to the fields' types."""
    cls = entry(name).load_class()
    kwargs = _convert_params(name, cls, params or {})
    strategy = cls(**kwargs)
    if not isinstance(strategy, SamplingStrategy):
        raise UsageError(f"strategy '{name}' ({entry(name).target}) has no select() or description")
    return strategy


def parameters(strategy: Any) -> dict[str, Any]:
    """A strategy's parameters as recorded in a run spec (its dataclass fields)."""
    return dataclasses.asdict(strategy) if dataclasses.is_dataclass(strategy) else {}


def _convert_params(name: str, cls: type, params: dict[str, str]) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    kwargs: dict[str, Any] = {}
    for key, text in params.items():
        if key not in fields:
            raise UsageError(
                f"strategy '{name}' has no parameter '{key}'; its parameters: {', '.join(fields) or 'none'}"
            )
        kwargs[key] = _parse_value(text)
    return kwargs


def _parse_value(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"none": None, "true": True, "false": False}.get(text.lower(), text)
