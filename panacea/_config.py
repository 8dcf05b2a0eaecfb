"""Strict construction of config dataclasses from JSON/YAML mappings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build `cls(**data)`, rejecting unknown keys with an error that names them and `where` they came from."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}.")
    known = {field.name for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown {cls.__name__} key(s) {unknown}; known keys are {sorted(known)}. "
            "Check for typos or a config written by a newer panacea."
        )
    try:
        return cls(**data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None
