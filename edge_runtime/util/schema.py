"""Typed, validated config sections built from plain YAML dicts.

Every section is a frozen dataclass. `build(cls, data, file=..., path=...)` checks unknown keys,
types and each field's own constraint (declared in the field's metadata), and raises ConfigError
naming the file, the dotted key path and what was expected. One mechanism serves the config file,
model sidecars and ONNX metadata alike.
"""

from __future__ import annotations

import dataclasses
import reprlib
import types
import typing
from typing import Any, Callable

from edge_runtime.util.errors import ConfigError


def field(default: Any = dataclasses.MISSING, *, check: Callable[[Any], str | None] | None = None,
          help: str = "", default_factory: Any = dataclasses.MISSING):
    """A dataclass field with an optional `check(value) -> error message or None`."""
    kwargs = {"metadata": {"check": check, "help": help}}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, **kwargs)
    return dataclasses.field(default=default, **kwargs)


# --- short values in messages -----------------------------------------------------------------

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 2, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 40, 40, 30


def short(value: Any, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters, one line. Errors show the value the user wrote; a
    repr of the whole value made a 333-byte YAML alias bomb write a 2 GB error line, and the repr of an
    integer of more than 4300 digits raises."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = _REPR.repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --- reusable checks -------------------------------------------------------------------------

def one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value):
        return None if value in choices else f"expected one of {', '.join(choices)}, got {short(value)}"
    return check


def at_least(low: float) -> Callable[[Any], str | None]:
    def check(value):
        return None if value >= low else f"expected a number >= {low}, got {short(value)}"
    return check


def at_most(high: float) -> Callable[[Any], str | None]:
    def check(value):
        return None if value <= high else f"expected a number <= {high}, got {short(value)}"
    return check


def between(low: float, high: float) -> Callable[[Any], str | None]:
    """low <= value <= high. The upper bounds keep a value from overflowing later arithmetic (OpenCV's
    int32 milliseconds, thread pools, MQTT's 16-bit keepalive)."""
    return all_of(at_least(low), at_most(high))


def greater_than(low: float) -> Callable[[Any], str | None]:
    def check(value):
        return None if value > low else f"expected a number > {low}, got {short(value)}"
    return check


def all_of(*checks: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def check(value):
        for one in checks:
            problem = one(value)
            if problem:
                return problem
        return None
    return check


class Invalid(Exception):
    """Raised from a section's __post_init__ for a constraint across keys; build() adds file and path."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(message)


def length(n: int, inner: Callable[[Any], str | None] | None = None) -> Callable[[Any], str | None]:
    def check(value):
        if len(value) != n:
            return f"expected a list of {n} items, got {len(value)}"
        for item in value:
            problem = inner(item) if inner else None
            if problem:
                return problem
        return None
    return check


# --- type checking ---------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if tp is type(None):
        return "null"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "a mapping"}
    return names.get(tp, str(tp))


def _convert(tp: Any, value: Any, file: str | None, path: str) -> Any:
    """Return `value` as type `tp`, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _convert(arg, value, file, path)
            except ConfigError as exc:
                errors.append(exc)
        for exc in errors:
            if exc.key != path:      # the right kind of container, wrong inside: that error names the key
                raise exc
        raise ConfigError(f"expected {_type_name(tp)}, got {short(value)}", file=file, key=path)
    if tp is type(None):
        if value is None:
            return None
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return build(tp, value, file=file, path=path)
    elif origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            inner = [a for a in typing.get_args(tp) if a is not Ellipsis][0]
            return tuple(_convert(inner, v, file, f"{path}[{i}]") for i, v in enumerate(value))
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
                and value not in (float("inf"), float("-inf")):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return value
    elif origin is dict:
        # dict[K, V]: every key and value checked, each error naming `path.key`.
        if isinstance(value, dict):
            key_tp, value_tp = typing.get_args(tp)
            return {_convert(key_tp, k, file, f"{path}.{k}"): _convert(value_tp, v, file, f"{path}.{k}")
                    for k, v in value.items()}
    elif tp is Any:
        return value
    raise ConfigError(f"expected {_type_name(tp)}, got {short(value)}", file=file, key=path)


def _key_text(key: Any) -> str:
    """A key as it goes into a one-line message: plain if short and printable, else a short repr."""
    return key if isinstance(key, str) and key.isprintable() and len(key) <= 60 else short(key)


def build(cls: type, data: Any, *, file: str | None = None, path: str = "") -> Any:
    """Build dataclass `cls` from a dict, validating every key. Missing keys take their defaults."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {short(data)}", file=file, key=path or None)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key (known keys here: {known})", file=file,
                              key=f"{path}.{_key_text(key)}" if path else _key_text(key))
    values = {}
    for name, f in fields.items():
        key_path = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError("required key is missing", file=file, key=key_path)
            continue
        value = _convert(hints[name], data[name], file, key_path)
        check = f.metadata.get("check")
        if check is not None and value is not None:
            problem = check(value)
            if problem:
                raise ConfigError(problem, file=file, key=key_path)
        values[name] = value
    try:
        return cls(**values)
    except Invalid as exc:
        raise ConfigError(str(exc), file=file, key=f"{path}.{exc.key}" if path else exc.key) from None


def to_dict(obj: Any) -> Any:
    """A dataclass tree back to plain YAML/JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
