"""Recipes: YAML files parsed into trl/transformers dataclasses plus our own.

A recipe is a flat YAML mapping; each key belongs to one of the stage's dataclasses (e.g. ``ModelArguments``,
``DataArguments``, ``SFTConfig``). Command-line flags ``--key value`` override YAML values. Every key is checked
against the dataclass fields and type hints *before* anything heavy happens, and any problem raises one
``RecipeError`` naming the file, the key, what was expected and, for a misspelt key, the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from alignment.errors import RecipeError



class RecipeLoader(yaml.SafeLoader):
    """YAML 1.2 scalars: only true/false are booleans (``save_strategy: no`` stays the string "no") and ``1e-4``
    is a float, as users expect; PyYAML's YAML 1.1 defaults read them as False and as a string."""


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: str) -> Any:
    """Parse YAML text; every failure is a ``yaml.YAMLError``, including values PyYAML's constructors reject
    (``2001-02-30``, an integer over 4300 digits, ``!!timestamp x``) and nesting too deep for the parser."""
    try:
        return yaml.load(text, Loader=RecipeLoader)
    except yaml.YAMLError:
        raise
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise yaml.YAMLError(f"unreadable value: {exc}") from None


def _is_optional_none(value: Any, hint: Any) -> bool:
    return value is None and _accepts_none(hint)


def _accepts_none(hint: Any) -> bool:
    return hint is type(None) or (_is_union(hint) and type(None) in typing.get_args(hint)) or hint is Any


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def _describe(hint: Any) -> str:
    """Human name of a type hint: ``float``, ``list of str``, ``one of 'a', 'b'``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        return " or ".join(_describe(a) for a in args if a is not type(None)) + (
            " (or null)" if type(None) in args else ""
        )
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    if origin in (list, tuple):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _shown(value: Any, limit: int = 200) -> str:
    """``repr`` for messages, cut to ``limit`` characters (a huge value must not flood the error line)."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long for str()
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def coerce(value: Any, hint: Any) -> Any:
    """Return ``value`` converted to ``hint`` or raise ``TypeError`` saying what was expected.

    Accepts what YAML gives: numbers written as strings (PyYAML reads ``1e-4`` as a string), ``"true"`` for bools.
    """
    if hint is Any or hint is typing.Any:
        return value
    if _is_optional_none(value, hint):
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg)
            except TypeError:
                continue
        raise TypeError(f"expected {_describe(hint)}, got {_shown(value)}")
    if origin is Literal:
        if value in args:
            return value
        raise TypeError(f"expected {_describe(hint)}, got {_shown(value)}")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value).value if isinstance(value, str) else hint(value)
        except ValueError:
            raise TypeError(f"expected {_describe(hint)}, got {_shown(value)}") from None
    if origin in (list, tuple):
        items = [value] if isinstance(value, str) else value  # a lone string is a one-item list
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"expected {_describe(hint)}, got {_shown(value)}")
        return [coerce(v, args[0]) for v in items] if args else list(items)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {_shown(value)}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise TypeError(f"expected true or false, got {_shown(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise TypeError(f"expected an integer, got {_shown(value)}")
    if hint is float:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except (ValueError, OverflowError):  # an integer beyond float range overflows
                pass
        raise TypeError(f"expected a number, got {_shown(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return str(value)
            except ValueError:  # an integer too long for str()
                pass
        raise TypeError(f"expected a string, got {_shown(value)}")
    return value  # types we do not know how to check are passed through to the dataclass


def _field_hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _field_choices(cls: type) -> dict[str, list]:
    """Fields that declare their allowed values in ``metadata["choices"]`` (as transformers/trl do for argparse)."""
    return {f.name: list(f.metadata["choices"]) for f in dataclasses.fields(cls) if f.init and "choices" in f.metadata}


def describe_keys(classes: tuple[type, ...], defaults: dict[str, Any] | None = None) -> str:
    """Every recipe key of ``classes``, grouped by class (first docstring line as the heading), each with its type,
    default (``defaults`` win over the field's own) and help: what a stage's ``--help`` prints."""
    defaults, seen, lines = defaults or {}, set(), []
    for cls in classes:
        hints = _field_hints(cls)
        title = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines.append(f"\n{cls.__name__}: {title}" if title else f"\n{cls.__name__}:")
        for f in dataclasses.fields(cls):
            if not f.init or f.name in seen or f.name.startswith("_") or unused_key(classes, f.name):
                continue
            seen.add(f.name)
            if f.name in defaults:
                default = defaults[f.name]
            elif f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = "(required)"
            choices = f" {{{', '.join(map(str, f.metadata['choices']))}}}" if "choices" in f.metadata else ""
            lines.append(f"  --{f.name}: {_describe(hints[f.name])}{choices}; default {_shown(default, 80)}")
            if f.metadata.get("help"):
                lines.append(f"      {' '.join(str(f.metadata['help']).split())}")
    return "\n".join(lines).lstrip("\n")


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a recipe file into a mapping; raise ``RecipeError`` with the file and line on bad YAML."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe file not found: {path}")
    try:
        data = yaml_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{path}{where}: invalid YAML: {problem}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """Parse ``--key value`` / ``--key=value`` flags; values are read as YAML scalars (``--bf16 true``)."""
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise RecipeError(f"Unexpected argument '{arg}': overrides are written --key value")
        key, _, value = arg[2:].partition("=")
        if not _:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                value = "true"  # a bare flag switches a boolean on
            else:
                i += 1
                value = argv[i]
        try:
            overrides[key.replace("-", "_")] = yaml_load(value)
        except yaml.YAMLError:
            overrides[key.replace("-", "_")] = value
        i += 1
    return overrides


# What the dataclasses' own checks raise for bad values: besides ValueError/TypeError, transformers opens a string
# accelerator_config as a JSON file (OSError), imports deepspeed for a deepspeed value (ImportError) and turns
# logging/eval/save steps into ints (OverflowError for inf).
POST_INIT_ERRORS = (ValueError, TypeError, OSError, ImportError, ArithmeticError)


def unused_key(classes: tuple[type, ...], key: str) -> str | None:
    """Why ``key`` is not a recipe key of ``classes``, for a key a class inherits but does not read (PPO's config is
    a TrainingArguments with its own loop): the class's ``unused_key(key)`` says, unless another class reads it."""
    reasons = {c: getattr(c, "unused_key", lambda k: None)(key) for c in classes}
    readers = [c for c in classes if not reasons[c] and any(f.name == key for f in dataclasses.fields(c))]
    return next((why for why in reasons.values() if why), None) if not readers else None


def build_dataclasses(
    values: dict[str, Any], classes: tuple[type, ...], source: str, *, check_paths: tuple[str, ...] = (),
    given: set[str] | None = None,
) -> tuple[Any, ...]:
    """Instantiate each dataclass in ``classes`` from the flat ``values`` mapping.

    A key may belong to several classes (e.g. ``trust_remote_code``); it is given to each. ``check_paths`` names keys
    whose value must be an existing file or folder (``builtin:`` names and hub-style ids are left to their loaders).
    ``given``: the keys the user wrote (the rest are defaults), each checked to be a key of ``classes``; default all.
    """
    hints = [_field_hints(c) for c in classes]
    valid = sorted({k for h in hints for k in h if not unused_key(classes, k)})
    for key in values if given is None else given:
        if why := unused_key(classes, key):
            raise RecipeError(f"{source}: key '{key}' is not used here: {why}")
        if key not in valid:
            raise RecipeError(f"{source}: unknown key '{key}'.{_suggest(str(key), valid)}")  # YAML keys may be numbers
    choices = [_field_choices(c) for c in classes]
    kwargs: list[dict[str, Any]] = [{} for _ in classes]
    for key, value in values.items():
        for h, allowed, kw in zip(hints, choices, kwargs):
            if key in h:
                try:
                    kw[key] = coerce(value, h[key])
                except TypeError as exc:
                    raise RecipeError(f"{source}: key '{key}': {exc}") from None
                if key in allowed and kw[key] is not None and kw[key] not in allowed[key]:
                    raise RecipeError(
                        f"{source}: key '{key}': expected one of {', '.join(map(str, allowed[key]))}, got {_shown(value)}"
                    )
    for key in check_paths:
        value = values.get(key)
        if isinstance(value, str) and looks_local(value) and not Path(value).exists():
            raise RecipeError(f"{source}: key '{key}': path does not exist: {value}")
    out = []
    for cls, kw in zip(classes, kwargs):
        try:
            out.append(cls(**kw))
        except POST_INIT_ERRORS as exc:
            raise RecipeError(f"{source}: invalid {cls.__name__}: {exc}") from None
    return tuple(out)


def looks_local(value: str) -> bool:
    """True for values that can only be local paths (not ``builtin:`` names or ``org/name`` hub ids)."""
    if value.startswith("builtin:"):
        return False
    p = Path(value)
    return value.startswith((".", "/", "~")) or p.suffix != "" or len(p.parts) > 2


def parse_recipe(
    argv: list[str],
    classes: tuple[type, ...],
    *,
    defaults: dict[str, Any] | None = None,
    check_paths: tuple[str, ...] = (),
) -> tuple[Any, ...]:
    """``argv`` is ``[recipe.yaml, --key value, ...]`` (the recipe is optional when every key comes as a flag).

    Precedence: command-line flags over the YAML file over ``defaults`` (the stage's own defaults).
    """
    written: dict[str, Any] = {}
    source = "command line"
    if argv and not argv[0].startswith("--"):
        source = argv[0]
        written.update(load_yaml(argv[0]))
        argv = argv[1:]
    written.update(parse_overrides(argv))
    values = {**(defaults or {}), **written}
    return build_dataclasses(values, classes, source, check_paths=check_paths, given=set(written))


def as_flags(values: dict[str, Any]) -> list[str]:
    """Recipe keys as command-line overrides ``--key=<json>`` (JSON values are YAML, so the parser reads them back
    exactly: strings stay strings, lists and mappings keep their structure, null is None)."""
    return [f"--{key}={json.dumps(value, default=str)}" for key, value in values.items()]


def to_dict(*objs: Any) -> dict[str, Any]:
    """Flatten dataclasses into one JSON-friendly mapping (the resolved recipe written to the run folder)."""
    out: dict[str, Any] = {}
    for obj in objs:
        d = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
        out.update({k: _jsonable(v) for k, v in d.items()})
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)
