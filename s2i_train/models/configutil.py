"""Model configs are plain dataclasses; this turns them into JSON/TOML-friendly dicts and back."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Dataclass -> dict of plain values (tuples become lists, so JSON and TOML can hold them)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return _plain(dataclasses.asdict(config))


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """dict -> dataclass; unknown keys are an error (a typo must not be silently ignored)."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a table of settings, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown settings: {', '.join(unknown)}")
    values = {}
    for name, value in data.items():
        default = _default_of(fields[name])
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
