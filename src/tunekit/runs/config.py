"""Typed configs of ``tunekit train`` and the experiments: a dataclass whose fields have defaults and
``metadata={"help": ...}``, filled from, in increasing precedence, the defaults, the class's ``QUICK``
overrides (with ``quick=True``), a YAML file and command-line overrides.

Field types: ``int``, ``float``, ``str``, ``bool``, ``Path``, ``tuple[X, ...]`` of those, ``Literal[...]``
choices, ``X | None`` and ``dict[str, Any]``. Strings convert by the field's type: ``"a,b"`` for a tuple
(``""`` is the empty tuple), ``true``/``false`` (also ``yes``/``no``, ``on``/``off``, ``1``/``0``) for a
bool, ``none`` or ``null`` for ``None`` where the type admits it, a YAML flow mapping (``"gamma: 2, alpha:
[1, 2]"``, braces optional) for a dict. A field made with ``group(OptionsClass, help)`` holds a dataclass
whose fields are options of the outer config as if they were its own (same flags, same YAML keys, one flat
dict), so a config composes another library's options class instead of copying its fields. A field with
``metadata={"changes_results": False}`` (which arms or seeds run, where output goes) may differ between an
interrupted run and its resumption; every other field must match (see `tunekit.runs.RunFolder`).

Why not transformers' ``HfArgumentParser``, which also turns dataclasses into flags and reads YAML: the
experiments' configs and ``tunekit run --help`` must not import transformers, and a run folder needs what
it does not do: one precedence order over defaults < ``--quick`` < YAML < flags (it parses a YAML file or
the flags), ``changes_results`` for resuming, ``none`` for optional fields, comma lists, NaN refused before
the config's own checks, and errors that name the flag and suggest the closest one.

Example::

    @dataclass
    class MyConfig:
        QUICK: ClassVar[dict] = {"epochs": 1}
        epochs: int = option(5, "fine-tuning epochs")
        loss: Literal["ce", "dece"] = option("ce", "training objective")
        seeds: int = option(3, "seeds per arm", changes_results=False)

        def validate(self) -> None:
            if self.epochs < 1:
                raise ValueError(f"epochs must be >= 1, got {self.epochs}")

    config = config_from_sources(MyConfig, yaml_path="my.yaml", overrides={"epochs": "3"})
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, Literal, Union

from .report import require

__all__ = [
    "add_config_arguments",
    "check_arms",
    "check_at_least",
    "config_diff",
    "config_from_sources",
    "config_overrides",
    "config_to_dict",
    "field_changes_results",
    "format_value",
    "group",
    "option",
    "validate_config",
]

_NONE_WORDS = ("none", "null")
_GROUP = "group"  # metadata key of a field holding a dataclass of options
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def option(default: Any, help: str, *, changes_results: bool = True) -> Any:
    """A config field with its help text; ``changes_results=False`` for fields a finished run may change
    (which arms and seeds run, the device). Immutable defaults only (a tuple, not a list)."""
    return dataclasses.field(default=default, metadata={"help": help, "changes_results": changes_results})


def group(options_class: type, help: str) -> Any:
    """A config field holding an instance of the dataclass ``options_class``, whose fields become options
    of the config (flags, YAML keys, `config_to_dict` entries) under their own names."""
    return dataclasses.field(default_factory=options_class, metadata={"help": help, _GROUP: True})


def check_arms(arms: tuple[str, ...], known: Mapping[str, Any]) -> None:
    """ValueError unless `arms` is a non-empty selection of the names in `known`.

    Example::

        >>> check_arms(("ce",), {"ce": 1, "dece": 2})
        >>> check_arms(("ce", "nope"), {"ce": 1, "dece": 2})
        Traceback (most recent call last):
        ValueError: arms must be some of ('ce', 'dece'), got ('ce', 'nope')
    """
    if not arms or any(arm not in known for arm in arms):
        raise ValueError(f"arms must be some of {tuple(known)}, got {arms!r}")


def check_at_least(config: Any, names: tuple[str, ...], minimum: int = 1) -> None:
    """ValueError naming the first field of `names` whose value in `config` is below `minimum`.

    Example::

        >>> import types
        >>> check_at_least(types.SimpleNamespace(epochs=0, seeds=1), ("seeds", "epochs"))
        Traceback (most recent call last):
        ValueError: epochs must be >= 1, got 0
    """
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


class _ConversionError(ValueError):
    """A value that does not convert to a type; the message says what was expected."""


def config_from_sources(
    config_class: type,
    *,
    yaml_path: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    quick: bool = False,
) -> Any:
    """An instance of ``config_class`` from its defaults < ``config_class.QUICK`` (when ``quick``) < the YAML
    file < ``overrides`` (field name, or its ``--flag-name`` spelling, to a string or a value).

    Raises ValueError naming the field and where its value came from for an unknown field, a value that does
    not convert, a choice not among a ``Literal``'s, a YAML file that is not a mapping, and whatever the
    class's own ``validate()`` raises; FileNotFoundError for a missing YAML file.
    """
    types_ = _field_types(config_class)
    values: dict[str, Any] = {}
    if quick:
        quick_values = getattr(config_class, "QUICK", None) or {}
        values.update(_convert_all(config_class, types_, quick_values, f"{config_class.__name__}.QUICK"))
    if yaml_path is not None:
        values.update(
            _convert_all(config_class, types_, _read_yaml(Path(yaml_path)), f"config file {yaml_path}")
        )
    if overrides:
        values.update(_convert_all(config_class, types_, overrides, "the command line", flags=True))
    missing = [
        name
        for name, (f, _) in _flat_fields(config_class).items()
        if name not in values and _default(f) is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(
            f"{config_class.__name__} has no default for {', '.join(missing)}: "
            f"set {'it' if len(missing) == 1 else 'them'} in the config file or with "
            + ", ".join(_flag(name) for name in missing)
        )
    for f, options_class in _group_fields(config_class):
        inner = {g.name: values.pop(g.name) for g in dataclasses.fields(options_class) if g.name in values}
        values[f.name] = options_class(**inner)  # its own checks run here, before the config's
    config = config_class(**values)
    validate_config(config)
    return config


def validate_config(config: Any) -> None:
    """Refuse a float field (or an item of a tuple of floats) that is NaN or infinite, then call the config's
    ``validate()`` if its class defines one (it raises ValueError for a bad value).

    The finite check comes first: NaN fails every comparison, so ``if not 0 < rate < 1`` style checks would
    let it through and ``if rate <= 0`` ones would pass it on to training.
    """
    if dataclasses.is_dataclass(config):
        for name, value in config_to_dict(config).items():
            items = value if isinstance(value, list) else (value,)
            if any(isinstance(item, float) and not math.isfinite(item) for item in items):
                raise ValueError(f"{name} must be a finite number, got {format_value(value)}")
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config's fields as a flat JSON-able dict (a group's fields inline): paths as strings, tuples as
    lists."""
    return {name: _jsonable(_value(config, name)) for name in _flat_fields(type(config))}


def config_diff(config_class: type, old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple]:
    """Fields (of ``config_to_dict`` form) whose values differ between ``old`` and ``new``, as name ->
    (old, new); a field absent on one side shows as ``"(absent)"``. Fields marked
    ``changes_results=False`` are left out."""
    neutral = {name for name, (f, _) in _flat_fields(config_class).items() if not field_changes_results(f)}
    absent = "(absent)"
    return {
        name: (old.get(name, absent), new.get(name, absent))
        for name in sorted(set(old) | set(new), key=lambda n: (n not in new, n))
        if name not in neutral and old.get(name, absent) != new.get(name, absent)
    }


def field_changes_results(field: dataclasses.Field) -> bool:
    """False for a field marked ``metadata={"changes_results": False}``: a run may resume with another
    value (it selects arms or seeds, or does not affect any arm's result)."""
    return bool(field.metadata.get("changes_results", True))


def add_config_arguments(
    parser: argparse.ArgumentParser, config_class: type, *, title: str | None = None
) -> argparse._ArgumentGroup:
    """Add a ``--field-name VALUE`` option per field of ``config_class`` to ``parser`` (in a group), with
    the field's help, its default, and its ``--quick`` value where ``QUICK`` sets one.

    The options keep their values as strings (``dest`` is the field name) and are absent from the parsed
    namespace unless given: pass ``config_overrides(namespace, config_class)`` to `config_from_sources`,
    which converts them. A bool option given without a value means true; ``--no-field-name`` means false.
    """
    types_ = _field_types(config_class)
    quick = getattr(config_class, "QUICK", None) or {}
    main = parser.add_argument_group(title or f"experiment options ({config_class.__name__})")
    groups = {
        f.name: parser.add_argument_group(f.metadata.get("help")) for f, _ in _group_fields(config_class)
    }
    for f, owner in _flat_fields(config_class).values():
        group = main if owner is None else groups[owner]
        tp = types_[f.name]
        default = _default(f)
        help_text = f.metadata.get("help", "").rstrip(".")
        notes = [f"default: {format_value(default)}" if default is not dataclasses.MISSING else "required"]
        if f.name in quick:
            notes.append(f"--quick: {format_value(quick[f.name])}")
        is_bool = _strip_optional(tp) is bool
        extra = {"nargs": "?", "const": "true"} if is_bool else {}
        group.add_argument(
            _flag(f.name),
            dest=f.name,
            default=argparse.SUPPRESS,
            metavar=_metavar(tp),
            help=f"{help_text} ({'; '.join(notes)})".replace("%", "%%"),
            **extra,
        )
        if is_bool:
            group.add_argument(
                "--no-" + _flag(f.name)[2:],
                dest=f.name,
                action="store_const",
                const="false",
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,  # listed with its --field-name
            )
    return main


def config_overrides(namespace: argparse.Namespace, config_class: type) -> dict[str, str]:
    """The config options given on the command line, as field name -> string."""
    return {name: getattr(namespace, name) for name in _flat_fields(config_class) if hasattr(namespace, name)}


def format_value(value: Any) -> str:
    """A value as it is written on the command line: ``none``, ``true``, ``a,b``.

    >>> format_value(("ce", "dece")), format_value(None), format_value(False), format_value(0.001)
    ('ce,dece', 'none', 'false', '0.001')
    """
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {json.dumps(_jsonable(v))}" for k, v in value.items())
    return str(value)


# ---------------------------------------------------------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _group_fields(config_class: type) -> list[tuple[dataclasses.Field, type]]:
    """(field, options class) of each field of `config_class` that holds a group of options (`group`)."""
    fields = [f for f in dataclasses.fields(config_class) if f.metadata.get(_GROUP)]
    hints = typing.get_type_hints(config_class) if fields else {}
    return [(f, hints[f.name]) for f in fields]


def _flat_fields(config_class: type) -> dict[str, tuple[dataclasses.Field, str | None]]:
    """Option name -> (its field, the group field holding it or None), groups expanded in place."""
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise TypeError(f"a config class must be a dataclass, got {config_class!r}")
    out: dict[str, tuple[dataclasses.Field, str | None]] = {}
    groups = {f.name: options_class for f, options_class in _group_fields(config_class)}
    for f in dataclasses.fields(config_class):
        inner = [(g, f.name) for g in dataclasses.fields(groups[f.name])] if f.name in groups else [(f, None)]
        for g, owner in inner:
            if g.init:
                if g.name in out:
                    raise TypeError(f"{config_class.__name__}: option {g.name!r} is defined twice")
                out[g.name] = (g, owner)
    return out


def _value(config: Any, name: str) -> Any:
    _, owner = _flat_fields(type(config))[name]
    return getattr(config if owner is None else getattr(config, owner), name)


def _field_types(config_class: type) -> dict[str, Any]:
    """Option name -> resolved type, checking that the class is a dataclass with supported field types
    (a TypeError: that is the experiment author's mistake, not the user's)."""
    classes = {None: config_class, **{f.name: c for f, c in _group_fields(config_class)}}
    hints = {owner: typing.get_type_hints(c) for owner, c in classes.items()}
    out = {}
    for name, (_, owner) in _flat_fields(config_class).items():
        _check_supported(hints[owner][name], f"{classes[owner].__name__}.{name}")
        out[name] = hints[owner][name]
    return out


def _check_supported(tp: Any, where: str) -> None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in (int, float, str, bool) or (isinstance(tp, type) and issubclass(tp, PurePath)):
        return
    if origin is Literal and args:
        return
    if origin in (Union, types.UnionType) and type(None) in args:
        for arg in args:
            if arg is not type(None):
                _check_supported(arg, where)
        return
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        _check_supported(args[0], where)
        return
    if origin is dict and args == (str, Any):
        return
    raise TypeError(
        f"{where}: unsupported config field type {tp!r} (use int, float, str, bool, Path, "
        "tuple[X, ...], Literal[...], X | None or dict[str, Any])"
    )


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _metavar(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [_metavar(a) for a in args if a is not type(None)]
        return "|".join([*inner, "none"])
    if origin is Literal:
        return "{" + ",".join(format_value(a) for a in args) + "}"
    if origin is tuple:
        return f"{_metavar(args[0])},..."
    if origin is dict:
        return "'KEY: VALUE, ...'"
    if tp is bool:
        return "{true,false}"
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "PATH"
    return {int: "INT", float: "FLOAT", str: "TEXT"}[tp]


def _read_yaml(path: Path) -> Mapping[str, Any]:
    yaml = require("yaml", "Reading a YAML config file")
    if not path.is_file():
        raise FileNotFoundError(
            f"config file {path} not found" + (" (it is a folder)" if path.is_dir() else "")
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"config file {path} is not valid YAML: {error}") from None
    if data is None:  # an empty file sets nothing
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {path} must be a mapping of field names to values (like `epochs: 3`), "
            f"got a {type(data).__name__}"
        )
    return data


def _convert_all(
    config_class: type, types_: dict[str, Any], values: Mapping[Any, Any], source: str, *, flags: bool = False
) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        name = key.replace("-", "_").removeprefix("__") if isinstance(key, str) else key
        if name not in types_:
            close = difflib.get_close_matches(str(name), list(types_), n=1)
            hint = f" (did you mean {_flag(close[0]) if flags else close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown field {key!r} in {source}{hint}; the fields of {config_class.__name__} are: "
                + ", ".join(types_)
            )
        try:
            out[name] = _convert(types_[name], value)
        except _ConversionError as error:
            where = f"{name} ({_flag(name)})" if flags else name
            raise ValueError(f"invalid value for {where} in {source}: {error}") from None
    return out


def _convert(tp: Any, value: Any) -> Any:
    """``value`` (a string, or a value as YAML gives it) converted to ``tp``, or _ConversionError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value)
            except _ConversionError as error:
                errors.append(str(error))
        raise _ConversionError(" or ".join(errors) + ", or none")
    if origin is Literal:
        for choice in args:
            if type(value) is type(choice) and value == choice:
                return choice
        text = value.strip() if isinstance(value, str) else format_value(value)
        for choice in args:
            if format_value(choice) == text:
                return choice
        raise _ConversionError(f"expected one of {', '.join(format_value(a) for a in args)}; got {value!r}")
    if origin is dict:
        return _mapping(value)
    if origin is tuple:
        if isinstance(value, str):
            items = [item.strip() for item in value.split(",")] if value.strip() else []
            if "" in items:
                raise _ConversionError(f"expected comma-separated values without empty items, got {value!r}")
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise _ConversionError(f"expected a list (or comma-separated values), got {value!r}")
        try:
            return tuple(_convert(args[0], item) for item in items)
        except _ConversionError as error:
            raise _ConversionError(f"{error} (in {value!r})") from None
    if value is None:
        raise _ConversionError(f"expected {_describe(tp)}, got none")
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE_WORDS or text in _FALSE_WORDS:
            return text in _TRUE_WORDS
        raise _ConversionError(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, (float, str)) and not isinstance(value, bool):
            try:
                return int(value) if isinstance(value, str) else _integral(value)
            except (ValueError, OverflowError):
                try:
                    return _integral(float(value))
                except (ValueError, OverflowError):
                    pass
        raise _ConversionError(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                pass
        raise _ConversionError(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _ConversionError(f"expected text, got {value!r} (quote it in YAML)")
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, (str, PurePath)) and str(value).strip():
            return tp(os.path.expanduser(str(value).strip()))
        raise _ConversionError(f"expected a path, got {value!r}")
    raise TypeError(f"unsupported config field type {tp!r}")


def _mapping(value: Any) -> dict[str, Any]:
    """A mapping with text keys, from a YAML mapping or a YAML flow mapping written on the command line."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        yaml = require("yaml", "Reading a mapping option")
        try:
            value = yaml.safe_load(text if text.startswith("{") else "{" + text + "}")
        except yaml.YAMLError:
            raise _ConversionError(f"expected 'key: value, ...', got {text!r}") from None
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise _ConversionError(f"expected a mapping of names to values ('key: value, ...'), got {value!r}")
    return dict(value)


def _integral(value: float) -> int:
    if not float(value).is_integer():
        raise ValueError(value)
    return int(value)


def _describe(tp: Any) -> str:
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "text"
    if tp is bool:
        return "true or false"
    return "a path"


def _jsonable(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
