"""Discovery and lookup of sampling strategies through the ``harness.strategies`` entry-point group.

Discovery reads package metadata only; ``load`` imports the one strategy asked for.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
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
    """Text values -> the types of the strategy's dataclass fields (a path field stays text even if it
    looks like a number); fields of other or no annotation get the value's own type (int, float, bool)."""
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    try:
        hints = typing.get_type_hints(cls) if fields else {}
    except Exception:  # an annotation that does not resolve: fall back to guessing from the text
        hints = {}
    kwargs: dict[str, Any] = {}
    for key, text in params.items():
        if key not in fields or not fields[key].init:
            settable = [f for f, v in fields.items() if v.init]
            raise UsageError(
                f"strategy '{name}' has no parameter '{key}'; its parameters: {', '.join(settable) or 'none'}"
            )
        kwargs[key] = _typed(name, key, text, hints.get(key))
    return kwargs


_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _typed(name: str, key: str, text: str, hint: Any) -> Any:
    """``text`` as the type ``hint`` (int, float, bool, str, Path, X | None); a value of the wrong kind is
    one line naming the parameter and the type it needs."""
    from pathlib import Path

    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if type(None) in options and text.strip().lower() == "none":
        return None
    kinds = [o for o in options if o is not type(None)]
    kind = kinds[0] if len(kinds) == 1 else None
    if kind is None or kind is Any:
        return _parse_value(text)
    try:
        if kind is bool:
            return _BOOLS[text.strip().lower()]
        if kind in (int, float, str, Path):
            return kind(text)
    except (KeyError, ValueError):
        what = {bool: "true or false", int: "a whole number", float: "a number"}[kind]
        raise UsageError(f"--strategy-param {name}.{key}={text}: {key} must be {what}"
                         + ("" if type(None) not in options else " or none")) from None
    return _parse_value(text)


def _parse_value(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"none": None, "true": True, "false": False}.get(text.lower(), text)
