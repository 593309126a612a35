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
    """dict -> dataclass; unknown keys are an error (a typo must not be silently ignored). A class may list
    settings it renamed as `RENAMED_FIELDS = {old: new}` (a ClassVar): checkpoints written before the rename
    store the old key, read as the new one."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a table of settings, got {type(data).__name__}")
    data = rename_fields(data, getattr(cls, "RENAMED_FIELDS", {}), cls.__name__)
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


def rename_fields(data: dict[str, Any], renamed: dict[str, str], where: str) -> dict[str, Any]:
    """`data` with each old key of `renamed` ({old: new}) under its new name; both present is an error."""
    if not any(old in data for old in renamed):
        return data
    data = dict(data)
    for old, new in renamed.items():
        if old in data:
            if new in data:
                raise ValueError(f"{where}: both {old} and {new} given ({old} is the old name of {new})")
            data[new] = data.pop(old)
    return data


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
