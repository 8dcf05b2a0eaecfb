"""Strict configs: YAML files (and `--set key=value` overrides) to nested config dataclasses, and back.

A config is a dataclass with a help string per field, validated in its `__post_init__`. This module
reads it strictly: an unknown key at any depth, a value of the wrong kind or a malformed override
raises one `ValueError` that names the file, the dotted path and what was expected.

    config = load_config(TrainConfig, "configs/train.yaml", ["optimizer.learning_rate=1e-4"])
    dump_yaml(config_to_dict(config), run_dir / "config.yaml")  # the exact resolved config
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from panacea._io import write_text

T = TypeVar("T")

# PyYAML implements YAML 1.1, whose float pattern needs a dot: `2e-2` and `1E4` come back as strings.
# This pattern accepts the YAML 1.2 spellings too (exponent without a dot, `.5`, `1.`), keeps YAML 1.1's
# underscores and base-60 floats, and still needs a dot or an exponent so that `1` stays an int.
_FLOAT_TAG = "tag:yaml.org,2002:float"
_FLOAT_PATTERN = re.compile(
    r"""^(?:
        [-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?   # 1.5, 1., .5, 1_000.5, 1.5e-3
      | [-+]?[0-9][0-9_]*[eE][-+]?[0-9]+                                    # 2e-2, -3E+5
      | [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*                         # 190:20:30.15 (YAML 1.1)
      | [-+]?\.(?:inf|Inf|INF)
      | \.(?:nan|NaN|NAN)
    )$""",
    re.X,
)


def _with_wide_floats(resolvers: dict[str, list[tuple[str, re.Pattern]]]) -> dict[str, list[tuple[str, re.Pattern]]]:
    """A copy of an implicit-resolver table with the float pattern swapped in place (same order, same first chars)."""
    return {
        first: [(tag, _FLOAT_PATTERN if tag == _FLOAT_TAG else pattern) for tag, pattern in entries]
        for first, entries in resolvers.items()
    }


class _Loader(yaml.SafeLoader):
    """`yaml.SafeLoader` with YAML 1.2 floats and no silent duplicate keys; SafeLoader itself is untouched."""

    yaml_implicit_resolvers = _with_wide_floats(yaml.SafeLoader.yaml_implicit_resolvers)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` entries may be overridden, by design
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (the last one would silently win)", key_node.start_mark
                )
            if isinstance(key, typing.Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """`yaml.SafeDumper` that quotes every string `_Loader` would read as a float (e.g. '1e5')."""

    yaml_implicit_resolvers = _with_wide_floats(yaml.SafeDumper.yaml_implicit_resolvers)


def parse_yaml_value(text: str) -> Any:
    """Parse one YAML value as a config file would: `1e-4` → 0.0001, `[a, b]` → a list, `null` or `` → None."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        raise ValueError(f"cannot parse {text!r} as a YAML value: {_yaml_problem(error)}.") from None


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (an empty file is `{}`).

    Floats are read as in YAML 1.2 (`2e-2` is a float, not a string) and a repeated key is an error.
    A syntax error raises one `ValueError` naming the file and the line.
    """
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such config file.") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path}: a folder, not a config file; give the YAML file.") from None
    except PermissionError:
        raise PermissionError(f"{path}: the config file is not readable (permission denied).") from None
    with handle:
        try:
            data = yaml.load(handle, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            line = f", line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"{path}{line}: invalid YAML: {_yaml_problem(error)}.") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text; save the config as UTF-8.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: the top level must be a mapping of config keys, got {type(data).__name__} {_show(data)}."
        )
    return data


def _yaml_problem(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None)
    if problem is None:
        return str(error).splitlines()[0]
    context = getattr(error, "context", None)
    if not context:
        return problem
    mark = getattr(error, "context_mark", None)
    return f"{problem} ({context}{f' started on line {mark.line + 1}' if mark is not None else ''})"


def dump_yaml(data: Mapping[str, Any] | Any, path: str | os.PathLike) -> None:
    """Write `data` as YAML atomically (a temporary file beside `path`, then `os.replace`).

    Keys keep their order and `load_yaml` reads the file back to an equal mapping (floats such as 5e-6
    included). A config dataclass is written as `config_to_dict(config)`.
    """
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = config_to_dict(data)
    text = yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
    write_text(path, text)


def config_to_dict(config: Any) -> dict[str, Any]:
    """The init fields of a config dataclass as plain YAML-ready data, nested dataclasses included.

    Unlike `dataclasses.asdict`, fields with `init=False` are left out (loading would reject them),
    tuples become lists and paths strings, so `dataclass_from_dict(type(config), ...)` rebuilds `config`.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config_to_dict expects a dataclass instance, got {type(config).__name__}.")
    return _plain(config)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value) if field.init}
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return copy.deepcopy(value)


def load_config(cls: type[T], path: str | os.PathLike, overrides: Sequence[str] = ()) -> T:
    """Read `cls` from a YAML file, after applying `--set key=value` overrides; an error names the file, or the
    `--set` whose value it is."""
    data = apply_overrides(load_yaml(path), overrides, cls)
    return dataclass_from_dict(cls, data, where=str(path), overrides=overrides)


# --- overrides --------------------------------------------------------------------------------------------


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str], cls: type | None = None) -> dict[str, Any]:
    """Return a copy of `data` with each `key=value` override applied in order; `data` is not changed.

    Keys are dotted paths into nested mappings (`adapter.svd_rank=4`) with integer indices into lists
    (`dimensions.0.beta=0.2`); values are parsed as YAML (`1e-4` is a float, `[a, b]` a list, `null` None).
    With `cls`, every key is checked against its dataclass fields at every depth. Values are checked
    later, by `dataclass_from_dict`.
    """
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of 'key=value' strings, not one string.")
    result = copy.deepcopy(dict(data))
    for override in overrides:
        key, separator, text = str(override).partition("=")
        segments = key.strip().split(".")
        if not separator or not all(segment.strip() for segment in segments):
            raise ValueError(
                f"--set {override!r}: expected key=value with a dotted key, e.g. adapter.svd_rank=4 "
                "or dimensions.0.beta=0.2."
            )
        try:
            value = parse_yaml_value(text)
            _set_path(result, [segment.strip() for segment in segments], value, cls)
        except ValueError as error:
            raise ValueError(f"--set {override!r}: {error}") from None
    return result


def _set_path(root: dict[str, Any], segments: list[str], value: Any, cls: type | None) -> None:
    container: Any = root
    annotation: Any = cls
    path = ""
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if isinstance(container, list):
            index = _list_index(container, segment, path)
            key: Any = index
            annotation = _item_type(annotation, list)
            path = _join(path, str(index))
        else:
            key = segment
            annotation = _child_type(annotation, segment, path)
            path = _join(path, segment)
        if last:
            container[key] = value
            return
        child = container.get(key) if isinstance(container, dict) else container[key]
        if child is None:  # absent or null: a nested config given field by field
            child = container[key] = {}
        if not isinstance(child, (dict, list)):
            raise ValueError(
                f"{path} is {_show(child)}, not a mapping or a list, so it has no {segments[position + 1]!r}."
            )
        container = child


def _list_index(container: list[Any], segment: str, path: str) -> int:
    if not re.fullmatch(r"[0-9]+", segment):
        raise ValueError(f"{path} is a list; expected an integer index, got {segment!r}.")
    index = int(segment)
    if index >= len(container):
        raise ValueError(f"{path} has {len(container)} item(s), so there is no item {index}.")
    return index


def _suggest(unknown: list, known) -> str:
    """Near misses (difflib): "did you mean 'learning_rat' → 'learning_rate'?"; else "known keys are [...]."."""
    near = {key: difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.75) for key in unknown}
    hints = [f"{key!r} → {match[0]!r}" for key, match in near.items() if match]
    if hints:
        return "did you mean " + ", ".join(hints) + "?"
    return f"known keys are {sorted(known)}."


def _child_type(annotation: Any, key: str, path: str) -> Any:
    """The annotation of field `key` under `annotation` (None when unknown); raises for an unknown field."""
    annotation = _strip_optional(annotation)
    if _is_dataclass_type(annotation):
        fields = _init_field_types(annotation)
        if key not in fields:
            where = f" at {path}" if path else ""
            raise ValueError(f"unknown {annotation.__name__} key {key!r}{where}; {_suggest([key], fields)}")
        return fields[key]
    return _item_type(annotation, dict)


def _item_type(annotation: Any, container: type) -> Any:
    """The item annotation of `list[X]` / `dict[str, X]` (None when unknown or not that container)."""
    annotation = _strip_optional(annotation)
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if container is list and origin in (list, Sequence) and arguments:
        return arguments[0]
    if container is dict and origin in (dict, Mapping) and len(arguments) == 2:
        return arguments[1]
    return None


def _strip_optional(annotation: Any) -> Any:
    """`X | None` → X; other unions (which arm applies is not known yet) → None."""
    if _is_union(annotation):
        arms = [arm for arm in typing.get_args(annotation) if arm is not type(None)]
        return arms[0] if len(arms) == 1 else None
    return annotation


# --- dataclasses from mappings ----------------------------------------------------------------------------


class _ConfigError(ValueError):
    """An error at a dotted path inside the config; `dataclass_from_dict` adds where the config came from."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


def dataclass_from_dict(cls: type[T], data: Any, where: str, overrides: Sequence[str] = ()) -> T:
    """Build `cls` from a mapping, nested config dataclasses included, rejecting anything it does not expect.

    Fields annotated as a dataclass, `X | None`, `list[X]` or `dict[str, X]` are built recursively
    (`typing.get_type_hints`, so `from __future__ import annotations` is fine). An int is accepted for a
    float field (and becomes a float). An unknown key, a value of the wrong kind or an error from a
    `__post_init__` raises one `ValueError`: `where: dotted.path: what was expected, got what`.
    """
    try:
        return _build(cls, data, "")
    except _ConfigError as error:
        raise ValueError(f"{_blamed(str(error), error.path, where, overrides)}: {error}") from None


def _blamed(message: str, path: str, where: str, overrides: Sequence[str]) -> str:
    """`--set 'key=value'` when the error's dotted path lies under (or above) an override's key, else `where`."""
    at = path or message.split(" ", 1)[0].rstrip(":")
    for override in reversed(overrides):  # the last override of a key is the value that counts
        key = str(override).partition("=")[0].strip()
        if at == key or at.startswith(key + ".") or key.startswith(at + "."):
            return f"--set {override!r}"
    return where


def _build(cls: type[T], data: Any, path: str) -> T:
    if not isinstance(data, Mapping):
        raise _ConfigError(
            path, f"expected a mapping of {cls.__name__} fields, got {type(data).__name__} {_show(data)}."
        )
    types_by_name = _init_field_types(cls)
    unknown = sorted(set(data) - set(types_by_name), key=str)
    if unknown:
        raise _ConfigError(
            path,
            f"unknown {cls.__name__} key(s) {unknown}; {_suggest(unknown, types_by_name)} "
            "Check for typos or a config written by a newer panacea.",
        )
    missing = [name for name in _required_fields(cls) if name not in data]
    if missing:
        raise _ConfigError(path, f"missing required {cls.__name__} key(s) {missing}.")
    values = {name: _convert(value, types_by_name[name], _join(path, name)) for name, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        # `require` names the field as Cls.field; in a config the dotted path says where it is
        named = re.match(rf"{re.escape(cls.__name__)}\.(\w+)([: ].*)", str(error), re.DOTALL)
        if named and named.group(1) in types_by_name:
            raise _ConfigError("", f"{_join(path, named.group(1))}{named.group(2)}") from None
        raise _ConfigError(path, str(error)) from None


def _convert(value: Any, annotation: Any, path: str) -> Any:
    """Check `value` against `annotation` and build what it names; raises `_ConfigError` at `path`."""
    if annotation is Any or annotation is None or isinstance(annotation, TypeVar):
        return value
    if _is_union(annotation):
        for arm in typing.get_args(annotation):
            if _accepts(value, arm):
                return _convert(value, arm, path)
        raise _mismatch(path, annotation, value)
    if not _accepts(value, annotation):
        raise _mismatch(path, annotation, value)
    if _is_dataclass_type(annotation):
        return _build(annotation, value, path)
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (list, Sequence):
        item = arguments[0] if arguments else Any
        return [_convert(element, item, _join(path, str(index))) for index, element in enumerate(value)]
    if origin is tuple:
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(
                _convert(element, arguments[0], _join(path, str(index))) for index, element in enumerate(value)
            )
        if arguments and len(arguments) != len(value):
            raise _mismatch(path, annotation, value)
        items = arguments or (Any,) * len(value)
        return tuple(
            _convert(element, item, _join(path, str(index)))
            for index, (element, item) in enumerate(zip(value, items, strict=True))
        )
    if origin in (dict, Mapping):
        key_type, item_type = arguments if len(arguments) == 2 else (Any, Any)
        return {
            _convert(key, key_type, f"{path} key {key!r}"): _convert(item, item_type, _join(path, str(key)))
            for key, item in value.items()
        }
    if annotation is float:
        return float(value)
    if annotation is Path:
        return Path(value)
    return value


def _accepts(value: Any, annotation: Any) -> bool:
    """Whether `value` has the right kind for `annotation` at this level (items are checked by `_convert`)."""
    if annotation is Any or annotation is None or isinstance(annotation, TypeVar):
        return True
    if annotation is type(None):
        return value is None
    if _is_union(annotation):
        return any(_accepts(value, arm) for arm in typing.get_args(annotation))
    if _is_dataclass_type(annotation):
        return isinstance(value, Mapping)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return any(value == option and type(value) is type(option) for option in typing.get_args(annotation))
    if origin in (list, Sequence, tuple):
        return isinstance(value, (list, tuple))
    if origin in (dict, Mapping):
        return isinstance(value, Mapping)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is Path:
        return isinstance(value, (str, os.PathLike))
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # an annotation we do not interpret: leave it to __post_init__


def _mismatch(path: str, annotation: Any, value: Any) -> _ConfigError:
    expected = (
        f"a mapping of {annotation.__name__} fields" if _is_dataclass_type(annotation) else _type_name(annotation)
    )
    return _ConfigError(path, f"expected {expected}, got {type(value).__name__} {_show(value)}.")


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if _is_union(annotation):  # float | Literal["auto"] reads as float | 'auto'
        return " | ".join(
            " | ".join(map(repr, typing.get_args(arm))) if typing.get_origin(arm) is Literal else _type_name(arm)
            for arm in typing.get_args(annotation)
        )
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return f"one of {list(typing.get_args(annotation))}"
    if origin is not None:
        arguments = ", ".join("..." if arm is Ellipsis else _type_name(arm) for arm in typing.get_args(annotation))
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{arguments}]" if arguments else name
    return getattr(annotation, "__name__", str(annotation))


def _init_field_types(cls: type) -> dict[str, Any]:
    """{name: resolved annotation} of the fields `cls(...)` accepts."""
    try:
        hints = typing.get_type_hints(cls)
    except NameError as error:  # a programming error, not a config error
        raise TypeError(
            f"cannot resolve the annotations of {cls.__name__} ({error}); define it at module level."
        ) from None
    return {field.name: hints.get(field.name, Any) for field in dataclasses.fields(cls) if field.init}


def _required_fields(cls: type) -> list[str]:
    return [
        field.name
        for field in dataclasses.fields(cls)
        if field.init and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    ]


def _is_dataclass_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
