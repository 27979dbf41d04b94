"""The environment variable of every setting, read off the settings models.

A section of the settings declares its prefix (``env_prefix``); each of its fields is set by
``prefix + FIELD_NAME`` unless the field names its variable with ``Env`` (names kept from
earlier releases, such as ``BILLING_RECON_LLM``, and the SDKs' own, such as ``E2B_API_KEY``). A
field that holds a plain model (the sandbox limits) is flattened under its section's prefix.
This module only describes; ``config.settings`` is the one place that reads the environment.
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo

ROOT_PREFIX = "BILLING_RECON_"


@dataclass(frozen=True)
class Env:
    """Field metadata (``Annotated[int, Env("NAME")]``): the variable that sets the field."""

    name: str


class Section(BaseModel):
    """A group of settings under one environment prefix; immutable once read."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    env_prefix: ClassVar[str] = ROOT_PREFIX


@dataclass(frozen=True)
class Variable:
    """One environment variable: the field it sets (by path from the root) and its model."""

    name: str
    path: tuple[str, ...]
    field: FieldInfo
    owner: type[BaseModel]

    @property
    def secret(self) -> bool:
        """Whether the value is a secret (never printed, never shown in an error)."""
        return "Secret" in str(self.field.annotation)


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (``X`` or ``X | None``), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (Union, types.UnionType):
        found = [model_of(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(found) == 1:
            return found[0]
    return None


def _name(field_name: str, info: FieldInfo, prefix: str) -> str:
    named = [meta.name for meta in info.metadata if isinstance(meta, Env)]
    return named[0] if named else prefix + field_name.upper()


@functools.cache  # the models never change: read them once per process
def variables(model: type[BaseModel], prefix: str = ROOT_PREFIX,
              path: tuple[str, ...] = ()) -> tuple[Variable, ...]:
    """Every variable of ``model``'s fields, sections and nested models, in declaration order."""
    out: list[Variable] = []
    for field_name, info in model.model_fields.items():
        held = model_of(info.annotation)
        if held is not None:
            inner = held.env_prefix if issubclass(held, Section) else prefix
            out.extend(variables(held, inner, (*path, field_name)))
        else:
            out.append(Variable(_name(field_name, info, prefix), (*path, field_name), info,
                                model))
    return tuple(out)


def variable_at(found: tuple[Variable, ...], loc: tuple[int | str, ...]) -> Variable | None:
    """The variable whose path is the longest start of an error location ``loc``."""
    best: Variable | None = None
    for var in found:
        if tuple(loc[:len(var.path)]) == var.path and (best is None
                                                       or len(var.path) > len(best.path)):
            best = var
    return best
