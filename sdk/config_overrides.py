"""The one ``--set`` implementation: ``key=value`` overrides on a config dataclass.

``apply_overrides(cfg, ["classifier.kappa=16", "steps=300"])`` is behind every command-line ``--set``
(training, the demo, discovery training, evaluation and recalibration). Keys are field names, dotted keys
reach into nested sections; values are read as JSON / YAML scalars (:func:`parse_value`) and checked
against the field types; the result goes through :func:`protoinspect.sdk.config_codec.merge`, so it is
decoded and validated exactly as a config file is.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any, Literal, TypeVar, get_args, get_origin

from protoinspect.sdk.config_codec import (
    NON_FINITE,
    UNION_TYPES,
    decode,
    field_types,
    join_key,
    merge,
    section_type,
    unknown_key_error,
)
from protoinspect.sdk.errors import ConfigError

__all__ = ["apply_overrides", "overrides_dict", "parse_value"]

T = TypeVar("T")

_INT_TEXT = re.compile(r"[+-]?\d+")


def parse_value(text: str) -> Any:
    """A ``--set`` value as JSON / YAML scalars read it: numbers, ``true`` / ``false``, ``null`` / ``none``,
    ``inf`` / ``-inf`` / ``nan``, JSON lists and objects (``[512,512]``); anything else is the text itself."""
    s = text.strip()
    if not s:
        return ""
    try:
        return json.loads(s)
    except ValueError:
        pass
    low = s.lower()
    if low in ("none", "null", "~"):
        return None
    if low in ("true", "false"):
        return low == "true"
    if low in NON_FINITE:
        return NON_FINITE[low]
    if _INT_TEXT.fullmatch(s):
        return int(s)
    try:
        return float(s)
    except ValueError:
        return s


def _accepts_str(tp: Any) -> bool:
    if tp is str or tp is Any or (isinstance(tp, type) and issubclass(tp, (PurePath, enum.Enum))):
        return True
    origin = get_origin(tp)
    if origin is Literal:
        return any(isinstance(c, str) for c in get_args(tp))
    if origin in UNION_TYPES:
        return any(_accepts_str(a) for a in get_args(tp))
    return False


def _is_scalar(tp: Any) -> bool:
    if tp in (bool, int, float, str) or get_origin(tp) is Literal:
        return True
    if get_origin(tp) in UNION_TYPES:
        return all(_is_scalar(a) or a is type(None) for a in get_args(tp))
    return isinstance(tp, type) and issubclass(tp, (PurePath, enum.Enum))


def _fits(tp: Any, value: Any) -> bool:
    try:
        decode(tp, value)
    except (ConfigError, TypeError):
        return False
    return True


def _override_value(tp: Any, text: str, key: str, item: str) -> Any:
    value = parse_value(text)
    if not isinstance(value, str) and _accepts_str(tp) and not _fits(tp, value):
        value = text  # e.g. masker=none, device=0, a file name that looks like a number
    if _is_scalar(tp):
        try:
            decode(tp, value, path=key)
        except ConfigError as exc:
            raise ConfigError(f"override {item!r}: {exc}") from None
    return value


def apply_overrides(cfg: T, overrides: Iterable[str]) -> T:
    """A copy of ``cfg`` with ``key=value`` overrides applied: every command-line ``--set``.

    Keys are field names; dotted keys reach into nested sections (``classifier.kappa=16``). Values are
    parsed by :func:`parse_value` (``steps=300``, ``pretrained=none``, ``image_size=[512,512]``); a field
    that takes text keeps the text when the parsed value does not fit it (``masker=none``). All overrides
    are applied, then the result is validated once (so ``image_size=[64,64] crop=32`` works in any order).

    Raises:
        ConfigError: a malformed item, an unknown key (with the valid keys and a close match), a key that
            is not a section used as one, or a value the config refuses (naming the key).
    """
    return merge(cfg, overrides_dict(type(cfg), overrides))


def overrides_dict(cls: type, overrides: Iterable[str]) -> dict[str, Any]:
    """``["classifier.kappa=16", "steps=300"]`` -> the partial mapping ``{"classifier": {"kappa": 16}, "steps": 300}``
    for :func:`merge`, keys checked against ``cls`` and scalar values against their field types.

    Raises:
        ConfigError: as :func:`apply_overrides`.
    """
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a list of 'key=value' strings, got the single string {overrides!r}")
    partial: dict[str, Any] = {}
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. steps=300 or classifier.kappa=16)")
        key, text = (s.strip() for s in item.split("=", 1))
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} must look like key=value (e.g. steps=300 or classifier.kappa=16)")
        node, node_cls, where = partial, cls, ""
        for i, part in enumerate(parts):
            fields = field_types(node_cls)
            if part not in fields:
                raise ConfigError(f"override {item!r}: {unknown_key_error(node_cls, where, part)}")
            full = join_key(where, part)
            if i == len(parts) - 1:
                node[part] = _override_value(fields[part], text, full, item)
                break
            sub = section_type(fields[part])
            if sub is None:
                raise ConfigError(f"override {item!r}: '{full}' is not a section (it holds a value): "
                                  f"set it with {full}=VALUE")
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node, node_cls, where = node[part], sub, full
    return partial
