"""Configs: dataclass schemas filled from YAML (with ``base:`` inheritance) and ``a.b=c`` overrides.

Unknown keys and values of the wrong type are errors that name the key. A resolved config converts
back to plain dicts (``to_dict``) for saving beside runs and inside checkpoints.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

__all__ = ["CONFIG_DIR", "ConfigError", "InputError", "apply_overrides", "check_overrides", "from_dict", "from_saved", "load_config",
           "load_yaml", "to_dict"]

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # the shipped configs (pretrain/, finetune/)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


class InputError(ConfigError):
    """A file, folder, row or argument the user gave cannot be used; the message names it. Commands end with this
    one line and status 2 (without the "config error" of :class:`ConfigError`)."""


class Interrupted(Exception):
    """A command stopped by Ctrl-C (or SIGTERM); the message says what it kept and how to go on. Commands end with
    this one line and status 130 (143 for SIGTERM)."""

    def __init__(self, message: str, exit_status: int = 130) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {list(choices)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def _apply_renames(cls: type, data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Keys a schema renamed or moved (``__renamed__ = {"old.dotted": "new.dotted"}`` on the dataclass), still
    read from older configs and checkpoints; the old and the new key at once is an error."""
    renamed = getattr(cls, "__renamed__", {})
    if not renamed:
        return data
    data = _merge({}, data)
    for old, new in renamed.items():
        *old_path, old_key = old.split(".")
        node = data
        for part in old_path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or old_key not in node:
            continue
        value = node.pop(old_key)
        *new_path, new_key = new.split(".")
        target = data
        for part in new_path:
            target = target.setdefault(part, {})
        if target.get(new_key) not in (None, value):
            raise ConfigError(f"'{prefix}{old}' is the old name of '{prefix}{new}': give one of them")
        target[new_key] = value
    return data


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise :class:`ConfigError`."""
    data = _apply_renames(cls, data, prefix)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    removed = getattr(cls, "__removed__", {})
    gone = [k for k in unknown if k in removed]
    if gone:
        raise ConfigError("; ".join(f"'{prefix}{k}' was removed: {removed[k]}" for k in gone))
    if unknown:
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} "
            + ", ".join(f"'{prefix}{k}'" for k in unknown)
            + f" (valid keys{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(sorted(names))})"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        default = next(f for f in dataclasses.fields(cls) if f.name == name)
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = _apply_renames(tp, value, f"{prefix}{name}.")  # before the defaults fill in the new names
            base = to_dict(_default_of(default))
            value = _merge(base, value) if base else value
        kwargs[name] = _coerce(tp, value, prefix + name)
    return cls(**kwargs)


def _drop_removed(cls: type, data: Any) -> Any:
    """``data`` without the keys ``cls`` (and the dataclasses under it) lists in ``__removed__``."""
    if not isinstance(data, dict) or not dataclasses.is_dataclass(cls):
        return data
    removed = getattr(cls, "__removed__", {})
    hints = typing.get_type_hints(cls)
    return {k: _drop_removed(hints[k], v) if k in hints else v for k, v in data.items() if k not in removed}


def from_saved(cls: type[T], data: dict[str, Any]) -> T:
    """:func:`from_dict` for a config saved by an earlier version (inside a checkpoint): keys since removed from
    the schema (``__removed__``) are dropped, keys since added take their defaults."""
    return from_dict(cls, _drop_removed(cls, data))


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def to_dict(obj: Any) -> Any:
    """Plain (YAML/JSON/``torch.load(weights_only=True)`` friendly) version of a config."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config, resolving ``base: other.yaml`` (relative to the file) recursively."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = data.pop("base", None)
    if base:
        bases = base if isinstance(base, list) else [base]
        merged: dict[str, Any] = {}
        for b in bases:
            merged = _merge(merged, load_yaml(path.parent / b))
        data = _merge(merged, data)
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested mapping."""
    data = _merge({}, data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {key!r}: '{p}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def check_overrides(overrides: list[str], allowed: tuple[str, ...], command: str) -> None:
    """A command that takes its model from a checkpoint acts on some keys only (e.g. ``data.``): any other
    ``--set`` key is a :class:`ConfigError` naming it, instead of being silently ignored."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not any(key == a.rstrip(".") or key.startswith(a) for a in allowed):
            raise ConfigError(f"{command}: --set {key} has no effect here (the model comes from the checkpoint); "
                              f"keys that act: {', '.join(a + '*' if a.endswith('.') else a for a in allowed)}")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load ``cls`` from a YAML file (or defaults when ``path`` is None) with dotted overrides."""
    data = load_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data)
