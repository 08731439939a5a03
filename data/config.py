"""One typed config per stage: YAML into a dataclass, ``a.b=value`` overrides on top.

Strict on purpose (nanoGPT's configurator is the model): an unknown key or a value of the
wrong type is an error that names the key, never a silently ignored setting. Values are
parsed with YAML's rules and then checked against the dataclass annotation, so
``lr=5e-3`` is a float even though PyYAML on its own reads ``5e-3`` as a string.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the stage's dataclass."""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; convert where YAML is lossy (ints, tuples)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} fits none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, prefix=f"{key}.")
    if origin in (list, tuple):
        if isinstance(value, str):
            # "18,1000" from the command line, or a PyYAML string such as "(243, 257)".
            value = yaml.safe_load("[" + value.strip("()[] ") + "]")
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # PyYAML reads "1e-3" (no dot) as a string
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: {value!r} is not a {tp}")


def _build(cls: type[T], values: dict, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]} (known: {', '.join(sorted(fields))})"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """``["cqt.fmin=20", "model=resnet34"]`` -> nested dict; values parsed as YAML scalars."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        _set_path(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return tree


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Build a ``cls`` from the YAML at ``path`` (if any) with ``key.sub=value`` overrides.

    Keys missing from both keep the dataclass defaults; unknown keys and wrong types raise
    ``ConfigError`` naming the key.
    """
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        values = loaded or {}
    values = _merge(_defaults_tree(cls), _merge(values, parse_overrides(list(overrides))))
    return _build(cls, values)


def _defaults_tree(cls: type) -> dict:
    # Nested dataclasses must exist as mappings so that "a.b=1" can merge into them.
    out = {}
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(
            typing.get_type_hints(cls)[f.name]
        ):
            out[f.name] = to_dict(f.default_factory())
    return out


def to_dict(cfg: Any) -> dict:
    """A config as plain YAML-able data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def flat_dict(cfg: Any) -> dict[str, bool | int | float | str]:
    """A config (or ``to_dict`` output) as one level of dotted keys and scalars, which is what
    experiment trackers take (TensorBoard's hparams refuse lists and None): lists and None are
    given as their YAML text (``"[0.3, 3.3]"``, ``"null"``)."""

    def walk(d: dict, prefix: str) -> dict:
        out: dict = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(walk(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v if isinstance(v, (bool, int, float, str)) else show_value(v)
        return out

    return walk(cfg if isinstance(cfg, dict) else to_dict(cfg), "")


def from_dict(cls: type[T], values: dict) -> T:
    """Rebuild a config from ``to_dict`` output (e.g. read back from a store or checkpoint)."""
    return _build(cls, values)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML next to an output."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


MISSING = object()  # a key present on one side of a diff only


def dict_diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Every dotted key where nested dicts ``a`` and ``b`` differ, with both values.

    Lists and tuples compare equal by content (a config read back from YAML has lists where
    the dataclass had tuples). A key on one side only is paired with ``MISSING``.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += dict_diff(a.get(k, MISSING), b.get(k, MISSING), f"{prefix}{k}.")
        return out
    sequences = isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))
    if a == b or (sequences and list(a) == list(b)):
        return []
    return [(prefix.rstrip("."), a, b)]


def format_diff(diff: list[tuple[str, Any, Any]], a_name: str, b_name: str) -> str:
    """``"cqt.hop_length: model 32, store 16; ..."`` from :func:`dict_diff` output."""

    def show(v: Any) -> str:
        if v is MISSING:
            return "<missing>"
        if isinstance(v, str) and len(v) > 16:  # hashes
            return v[:12] + "..."
        return str(v)

    return "; ".join(f"{k}: {a_name} {show(x)}, {b_name} {show(y)}" for k, x, y in diff)


# ---------------------------------------------------------------------------------------------
# --help: every key, its type, default and meaning


def field_comments(cls: type) -> dict[str, str]:
    """The meaning of each field of dataclass ``cls``, read from its source: the comment on the
    field's line(s), else the comment lines right above it (joined into one line); "" if none.
    """
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        own = [comments[i] for i in range(node.lineno, node.end_lineno + 1) if i in comments]
        above: list[str] = []
        i = node.lineno - 1  # 1-based line above the field
        while i >= 1 and lines[i - 1].strip().startswith("#"):
            above.insert(0, comments[i])
            i -= 1
        out[node.target.id] = " ".join(own or above)
    return out


def config_fields(cls: type) -> list[tuple[str, Any, Any, str]]:
    """``(dotted key, annotation, default, meaning)`` for every leaf key of config ``cls``,
    nested sections flattened (``cqt.fmin``); meanings from :func:`field_comments`."""

    def walk(tp: type, default: Any, prefix: str) -> list[tuple[str, Any, Any, str]]:
        hints = typing.get_type_hints(tp)
        meaning = field_comments(tp)
        out = []
        for f in dataclasses.fields(tp):
            value = getattr(default, f.name)
            if dataclasses.is_dataclass(hints[f.name]):
                out += walk(hints[f.name], value, f"{prefix}{f.name}.")
            else:
                out.append((prefix + f.name, hints[f.name], value, meaning[f.name]))
        return out

    return walk(cls, cls(), "")


def type_name(tp: Any) -> str:
    """An annotation as a user types the value: ``float | null``, ``fft | grouped``,
    ``[int, int]``, ``list of str``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType) or origin is typing.Literal:
        return " | ".join(str(a) if origin is typing.Literal else type_name(a) for a in args)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def show_value(value: Any) -> str:
    """A value as YAML and the command line write it: ``null``, ``true``, ``[0.3, 3.3]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value else '""'
    return str(value)


def config_help(cls: type, width: int = 100) -> str:
    """Every key of config ``cls`` as ``key.sub  (type, default X)  meaning``, wrapped to
    ``width``: the epilog of a stage's ``--help`` (argparse.RawDescriptionHelpFormatter)."""
    lines = ["config keys (YAML via --config, or key=value / section.key=value arguments):"]
    for key, tp, default, meaning in config_fields(cls):
        head = f"  {key}  ({type_name(tp)}, default {show_value(default)})"
        lines += textwrap.wrap(meaning, width, initial_indent=head + "  ",
                               subsequent_indent=" " * 6) if meaning else [head]
    return "\n".join(lines)
