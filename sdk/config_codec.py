"""One serialiser for ProtoInspect's config dataclasses: dataclass <-> JSON-safe dict, and ``key=value`` overrides.

Every settings class (``InspectorConfig``, ``DetectorConfig``, ``DetectorTrainConfig``, ``DiscoverySettings``,
...) and every typed manifest section is a frozen dataclass read and written here, so they all follow one
set of rules:

* :func:`to_dict`: nested dataclasses become dicts, tuples lists, paths and enums strings, numpy scalars
  Python numbers, non-finite floats the strings ``"inf"`` / ``"-inf"`` / ``"nan"`` (JSON has no infinities).
* :func:`from_dict`: the inverse, driven by the field annotations. Unknown keys are refused with the valid
  ones named; a missing key takes the field's default; nested dataclasses, ``X | None``, ``tuple`` (fixed
  length or ``...``), ``list``, ``dict[str, X]``, ``Literal`` choices, ``bool`` / ``int`` / ``float`` /
  ``str`` / ``Path`` and enums are checked. Errors are :class:`ConfigError` naming the key path
  (``key 'classifier.kappa' must be a number, got 'high'``). Checks of values (ranges, cross-field rules)
  stay in each class's ``__post_init__``.
* :func:`merge`: partial dicts (config files, overrides) applied on top of a config, validated once. The one
  implementation behind every command-line ``--set`` builds on it
  (:func:`protoinspect.sdk.config_overrides.apply_overrides`).

Two opt-in hooks keep files written by older versions readable without special cases here:

* a field declared with :func:`rest_field` collects the keys a record does not declare (records that tools
  extend over time); :func:`to_dict` writes them back at the same level, so the on-disk layout is kept;
* a classmethod ``_migrate_dict(cls, data: dict) -> dict`` rewrites an older layout (a moved or renamed
  key, a shorthand value) before decoding. It runs for nested sections too and must return a current
  layout unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import math
import numbers
import os
import re
import types
import typing
from collections.abc import Mapping
from functools import lru_cache
from pathlib import PurePath
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from protoinspect.sdk.errors import ConfigError, InputError

__all__ = ["NON_FINITE", "UNION_TYPES", "decode", "encode", "field_types", "from_dict", "join_key", "merge",
           "rest_field", "section_type", "to_dict", "unknown_key_error"]

T = TypeVar("T")

_REST = "protoinspect.config_codec.rest"
_MIGRATE = "_migrate_dict"
#: Texts of non-finite floats (JSON has none): what :func:`encode` writes and :func:`decode` / ``--set`` read.
NON_FINITE = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "infinity": math.inf, "+infinity": math.inf,
              "-infinity": -math.inf, ".inf": math.inf, "-.inf": -math.inf, "nan": math.nan, ".nan": math.nan}
UNION_TYPES: tuple[Any, ...] = (Union, types.UnionType)  # typing.Optional / X | None


def rest_field() -> Any:
    """A ``dict[str, Any]`` field collecting the keys a record does not declare (see the module docstring)."""
    return dataclasses.field(default_factory=dict, metadata={_REST: True})


# ----------------------------------------------------------------------------- schema of a class


@dataclasses.dataclass(frozen=True)
class _Schema:
    fields: dict[str, Any]  # init field name -> resolved annotation (the rest field excluded)
    required: frozenset[str]
    rest: str | None


def field_types(cls: type) -> dict[str, Any]:
    """Init field name -> resolved annotation of the dataclass ``cls`` (its :func:`rest_field` excluded)."""
    return _schema(cls).fields


@lru_cache(maxsize=None)
def _schema(cls: type) -> _Schema:
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    required: set[str] = set()
    rest = None
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.metadata.get(_REST):
            rest = f.name
            continue
        fields[f.name] = hints[f.name]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.add(f.name)
    return _Schema(fields, frozenset(required), rest)


def _is_config_class(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def section_type(tp: Any) -> type | None:
    """The dataclass behind ``tp`` (``X`` or ``X | None``), else None."""
    if _is_config_class(tp):
        return tp
    if get_origin(tp) in UNION_TYPES:
        classes = [a for a in get_args(tp) if _is_config_class(a)]
        return classes[0] if len(classes) == 1 else None
    return None


def _is_optional(tp: Any) -> bool:
    return get_origin(tp) in UNION_TYPES and type(None) in get_args(tp)


def join_key(path: str, key: str) -> str:
    """``classifier`` + ``kappa`` -> ``classifier.kappa`` (a key path of error messages)."""
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _error(path: str, problem: str) -> ConfigError:
    return ConfigError(f"key '{path}' {problem}" if path else problem)


def unknown_key_error(cls: type, path: str, *keys: str) -> ConfigError:
    """The ConfigError for unknown ``keys`` of ``cls`` at ``path``: the valid keys and a close match named."""
    schema = _schema(cls)
    valid = sorted(schema.fields)
    key = keys[0]
    hints = difflib.get_close_matches(key, valid, n=1)
    nested = [f"{name}.{key}" for name, tp in schema.fields.items()
              if (sub := section_type(tp)) is not None and key in _schema(sub).fields]
    suggestion = f"; did you mean '{join_key(path, (hints or nested)[0])}'?" if hints or nested else ""
    where = f"section '{path}' ({cls.__name__})" if path else cls.__name__
    named = ", ".join(f"'{join_key(path, k)}'" for k in keys)
    return ConfigError(f"unknown key{'s' if len(keys) > 1 else ''} {named} in {where}; valid keys: {', '.join(valid)}"
                       f"{suggestion}")


# ----------------------------------------------------------------------------- encoding


def encode(value: Any) -> Any:
    """Any config value (a dataclass, container, path, enum, number, ...) -> its JSON-safe form.

    Raises:
        TypeError: a value that has no JSON form (an arbitrary object).
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        schema = _schema(type(value))
        out = {name: encode(getattr(value, name)) for name in schema.fields}
        if schema.rest is not None:
            out.update({str(k): encode(v) for k, v in getattr(value, schema.rest).items() if k not in out})
        return out
    if isinstance(value, enum.Enum):
        return encode(value.value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isfinite(v):
            return v
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(value, (PurePath, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(encode(v) for v in value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy arrays and scalars
        return encode(value.tolist())
    raise TypeError(f"a {type(value).__name__} cannot be stored as JSON")


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-safe dict of a config dataclass (see the module docstring); :func:`from_dict` reads it back.

    Raises:
        TypeError: ``cfg`` is not a dataclass instance, or holds a value with no JSON form.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"to_dict needs a dataclass instance, got {type(cfg).__name__}")
    return encode(cfg)


# ----------------------------------------------------------------------------- decoding


def from_dict(cls: type[T], data: Any, *, path: str = "") -> T:
    """Build ``cls`` from a (possibly partial) dict: missing keys take their defaults.

    Args:
        cls: a dataclass.
        data: a mapping, e.g. parsed JSON / YAML (an instance of ``cls`` is returned as it is).
        path: key path of ``data`` inside a larger document, used in error messages.

    Raises:
        ConfigError: an unknown or missing key, a value of the wrong type, or a value ``cls`` refuses,
            naming the key path. (Errors of a top-level ``__post_init__`` propagate unchanged.)
    """
    if not _is_config_class(cls):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    return decode(cls, data, path=path)


def decode(tp: Any, value: Any, *, path: str = "") -> Any:
    """Check and convert ``value`` (parsed JSON / YAML) to the annotation ``tp``; see :func:`from_dict`.

    Raises:
        ConfigError: naming ``path`` and what was expected.
        TypeError: ``tp`` is an annotation this codec does not handle (a programming error).
    """
    if tp is Any or tp is object:
        return copy.deepcopy(value)
    origin = get_origin(tp)
    if origin in UNION_TYPES:
        return _decode_union(tp, value, path)
    if origin is Literal:
        choices = get_args(tp)
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        raise _error(path, f"must be one of {', '.join(repr(c) for c in choices)}, got {_describe(value)}")
    if _is_config_class(tp):
        return _decode_dataclass(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _error(path, f"must be true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise _error(path, f"must be an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and value.strip().lower() in NON_FINITE:
            return NON_FINITE[value.strip().lower()]
        hint = ""
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+(\.\d*)?[eE][+-]?\d+\s*", value):
            hint = f" (YAML reads {value.strip()} as text: write it with a decimal point, e.g. 1.0e-3)"
        raise _error(path, f"must be a number, got {_describe(value)}{hint}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _error(path, f"must be a string, got {_describe(value)}")
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, (str, os.PathLike)):
            return tp(value)
        raise _error(path, f"must be a path string, got {_describe(value)}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in tp)
            raise _error(path, f"must be one of {choices}, got {_describe(value)}") from None
    if origin in (tuple, list) or tp in (tuple, list):
        return _decode_sequence(tp, value, path)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return _decode_mapping(tp, value, path)
    raise TypeError(f"config_codec cannot decode the annotation {tp!r} (key '{path}')")


def _decode_union(tp: Any, value: Any, path: str) -> Any:
    args = get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise _error(path, "must not be null")
    arms = [a for a in args if a is not type(None)]
    errors = []
    for arm in arms:
        try:
            return decode(arm, value, path=path)
        except ConfigError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    names = " or ".join(getattr(a, "__name__", str(a)) for a in arms)
    raise _error(path, f"must be {names}{' or null' if type(None) in args else ''}, got {_describe(value)}")


def _decode_sequence(tp: Any, value: Any, path: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _error(path, f"must be a list, got {_describe(value)}")
    args = get_args(tp)
    if get_origin(tp) is tuple or tp is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item = args[0] if args else Any
            return tuple(decode(item, v, path=f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _error(path, f"must be a list of {len(args)} items, got {len(value)}")
        return tuple(decode(a, v, path=f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    item = args[0] if args else Any
    return [decode(item, v, path=f"{path}[{i}]") for i, v in enumerate(value)]


def _decode_mapping(tp: Any, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _error(path, f"must be a mapping (JSON object), got {_describe(value)}")
    args = get_args(tp)
    key_tp, item_tp = args if args else (Any, Any)
    out = {}
    for k, v in value.items():
        if key_tp is str and not isinstance(k, str):
            raise _error(path, f"must have string keys, got {k!r}")
        out[k] = decode(item_tp, v, path=join_key(path, str(k)))
    return out


def _decode_dataclass(cls: type[T], data: Any, path: str) -> T:
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        what = f"must be a mapping of {cls.__name__} settings (a JSON object / YAML section), got {_describe(data)}"
        raise _error(path, what) if path else ConfigError(f"{cls.__name__} settings {what}")
    data = _migrated(cls, data)
    schema = _schema(cls)
    unknown = [k for k in data if k not in schema.fields]
    if unknown and schema.rest is None:
        raise unknown_key_error(cls, path, *sorted(map(str, unknown)))
    missing = sorted(schema.required - set(data))
    if missing:
        raise _error(join_key(path, missing[0]), f"is missing (required in {cls.__name__})")
    kwargs = {name: decode(tp, data[name], path=join_key(path, name))
              for name, tp in schema.fields.items() if name in data}
    if schema.rest is not None:
        bad = [k for k in unknown if not isinstance(k, str)]
        if bad:
            raise _error(path, f"must have string keys, got {bad[0]!r}")
        kwargs[schema.rest] = {k: copy.deepcopy(data[k]) for k in unknown}
    try:
        return cls(**kwargs)
    except (ConfigError, InputError) as exc:  # raised by the class's own __post_init__ checks
        if not path:
            raise
        raise ConfigError(f"key '{path}': {exc}") from exc
    except (TypeError, ValueError) as exc:
        where = f"key '{path}' ({cls.__name__})" if path else cls.__name__
        raise ConfigError(f"{where}: {exc}") from exc


def _migrated(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    migrate = getattr(cls, _MIGRATE, None)
    return dict(migrate(dict(data))) if migrate is not None else dict(data)


# ----------------------------------------------------------------------------- partial updates and overrides


def merge(cfg: T, *parts: Mapping[str, Any]) -> T:
    """A copy of the config ``cfg`` with the keys of each partial mapping in ``parts`` set, in order;
    nested sections are merged key by key. The result is validated once, at the end.

    This is how config files (partial YAML / JSON mappings) and overrides apply on top of defaults.

    Raises:
        ConfigError: as :func:`from_dict`.
    """
    cls = type(cfg)
    data = to_dict(cfg)
    for part in parts:
        if not isinstance(part, Mapping):
            raise ConfigError(f"{cls.__name__} settings must be a mapping (a JSON object / YAML section), "
                              f"got {_describe(part)}")
        data = _merged(cls, data, part, "")
    return from_dict(cls, data)


def _merged(cls: type, base: dict[str, Any], data: Mapping[str, Any], path: str) -> dict[str, Any]:
    data = _migrated(cls, data)
    out = dict(base)
    schema = _schema(cls)
    for key, value in data.items():
        tp = schema.fields.get(key)
        sub = section_type(tp) if tp is not None else None
        if sub is not None and value is None and not _is_optional(tp):
            continue  # an empty YAML section (``detector:``) changes nothing
        if sub is not None and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(sub, dict(out[key]), value, join_key(path, key))
        else:
            out[key] = value
    return out
