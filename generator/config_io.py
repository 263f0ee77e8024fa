"""Nested dataclass configs ↔ YAML through pydantic, dot-list overrides, errors naming the dotted field.

``load_config(ExperimentConfig, "configs/debug.yaml", ["train.lr=1e-4"])``. Validation and
conversion are pydantic's (``TypeAdapter`` over the stdlib dataclasses, unknown fields
forbidden); what is hand-written here is what pydantic does not do: the ``base:`` file chain,
``a.b=value`` overrides, and ``diff`` of two configs.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: safe


class ConfigError(ValueError):
    """A config value is wrong; the message starts with the dotted path of the field."""


def _forbid_extra(cls: type, seen: set[type]) -> None:
    """Unknown fields are errors in ``cls`` and every dataclass nested in it."""
    if cls in seen:
        return
    seen.add(cls)
    cls.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    for hint in typing.get_type_hints(cls).values():
        for arg in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(arg) and isinstance(arg, type):
                _forbid_extra(arg, seen)


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    _forbid_extra(cls, set())
    return TypeAdapter(cls)


def _dotted(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc if p != "__post_init__")


def _fields_at(cls: type, loc: Sequence[Any]) -> list[str]:
    """Field names of the dataclass that ``loc`` (minus its last part) leads to."""
    for part in loc[:-1]:
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        nxt = hints.get(str(part))
        nxt = next((a for a in (nxt, *typing.get_args(nxt)) if dataclasses.is_dataclass(a)), None)
        if nxt is None:
            return []
        cls = nxt
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def _message(cls: type, err: ValidationError) -> str:
    first = err.errors()[0]
    where, msg = _dotted(first["loc"]), first["msg"].removeprefix("Value error, ")
    if first["type"] == "unexpected_keyword_argument":
        fields = _fields_at(cls, first["loc"])
        close = difflib.get_close_matches(str(first["loc"][-1]), fields, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        msg = f"unknown field{hint} Expected one of {sorted(fields)}"
    elif first["type"] in ("missing_argument", "missing"):
        msg = "missing required field"
    elif first["type"] != "value_error":
        msg = f"{msg}, got {first['input']!r}"
    more = len(err.errors()) - 1
    return f"{where or cls.__name__}: {msg}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build dataclass ``cls`` from plain data; unknown, missing or mistyped fields raise ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {data!r} ({type(data).__name__})")
    try:
        # strict JSON mode: YAML's plain values as JSON would read them, with no lax coercion
        # (true is not 1, 64.0 is not an int), while enums, tuples and paths still come from text
        return _adapter(cls).validate_json(json.dumps(dict(data)), strict=True)
    except (TypeError, ValueError) as err:
        if not isinstance(err, ValidationError):
            raise ConfigError(f"{cls.__name__}: a value is not plain data ({err})") from None
        raise ConfigError(_message(cls, err)) from None


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass → plain YAML/JSON-safe dict (enums → values, tuples → lists, paths → str)."""
    if not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(obj).__name__}")
    return _adapter(type(obj)).dump_python(obj, mode="json")


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``a.b.c=value`` items (value parsed as YAML) applied to a copy of ``data``."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
            raise ConfigError(f"{item!r}: an override must look like section.field=value")
        try:
            value = _load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"{key}: cannot parse override value {raw!r}: {err}") from err
        node = out
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parts[:i + 1])}: is a value, cannot set {key}")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = _deep_copy(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping; ``base: other.yaml`` (relative to the file) is merged underneath."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: base chain loops back to itself")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = _load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base must be a file name, got {base!r}")
        data = _merge(read_yaml(path.parent / base, (*_seen, path.resolve())), data)
    return data


def load_config(cls: type[T], path: str | Path, overrides: Sequence[str] = ()) -> T:
    """Read ``path`` (with its ``base`` chain), apply dot-list ``overrides``, build ``cls``."""
    data = apply_overrides(read_yaml(path), overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{err} (in {path})") from None


def dump_yaml(obj: Any) -> str:
    """``obj`` as YAML in field order, loadable again with ``load_config``."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Fields that differ between two configs (dataclasses or their dicts): 'x.y: 1 != 2'."""
    a = to_dict(a) if dataclasses.is_dataclass(a) else a
    b = to_dict(b) if dataclasses.is_dataclass(b) else b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for key in list(dict.fromkeys([*a, *b])):
            here = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                left = repr(a[key]) if key in a else "<missing>"
                right = repr(b[key]) if key in b else "<missing>"
                out.append(f"{here}: {left} != {right}")
            else:
                out += diff(a[key], b[key], here)
        return out
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]
