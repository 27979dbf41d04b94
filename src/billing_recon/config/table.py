"""docs/configuration.md, generated from the settings models (one table per section).

``python -m billing_recon.config.table > docs/configuration.md`` writes it; a test fails when
the file and the models disagree.
"""

from __future__ import annotations

import inspect
import types
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from billing_recon.config.settings import Settings
from billing_recon.config.variables import Variable, model_of, variables

INTRO = """\
# Configuration

<!-- Generated from src/billing_recon/config by `python -m billing_recon.config.table >
docs/configuration.md`; tests/unit/test_config.py fails when this file is out of date. -->

billing-recon has one configuration: a typed settings tree (`billing_recon.config.Settings`,
pydantic-settings) with one section per concern. Each setting is read from its environment
variable below; the process environment wins over a `.env` file in the working directory, which
wins over the default. An empty value counts as unset. A bad value stops the command with one
error naming the variable (`billing-recon: error: bad setting: BILLING_RECON_SANDBOX_WORKERS=
'two': Input should be a valid integer`); secrets (marked below) are never printed.

Flows can take whole sections from Prefect blocks instead (`BILLING_RECON_BLOCKS`, or the block
set `default` for a deployment's runs): each block holds the same section models as fields,
e.g. the `Billing Recon Sandbox` block holds the `sandbox` section. A section given by a block
replaces that section of the environment; the other sections still come from the environment.
No block holds the `keys` section: the keys that make approvals stay on each host.
"""


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{arg}`" for arg in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return " or ".join(_type(arg) for arg in inner)
    if annotation is SecretStr:
        return "secret"
    if origin is dict:
        return "map"
    if origin in (tuple, frozenset, list, set):
        return "list"
    names = {bool: "true/false", int: "integer", float: "number", str: "text", Path: "path",
             Decimal: "decimal"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(var: Variable) -> str:
    info = var.field
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None or value == {} or value == frozenset():
        return "unset"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{','.join(map(str, value))}`"
    if isinstance(value, dict):
        return "built in"
    if isinstance(value, Path):
        return f"`{str(value).replace(str(Path.home()), '~')}`"
    return f"`{value}`"


def _row(var: Variable) -> str:
    path = ".".join(var.path)
    about = (var.field.description or "").replace("|", "\\|").replace("\n", " ")
    return f"| `{var.name}` | `{path}` | {_type(var.field.annotation)} | " \
           f"{_default(var)} | {about} |"


def render() -> str:
    """The whole of docs/configuration.md."""
    lines = [INTRO]
    groups: dict[str, list[Variable]] = {}
    for var in variables(Settings):
        groups.setdefault(var.path[0] if len(var.path) > 1 else "", []).append(var)
    for name, found in groups.items():
        held = model_of(Settings.model_fields[name].annotation) if name else None
        title = f"`{name}`" if name else "General"
        doc = inspect.getdoc(held) if held else "Where billing-recon keeps its own files."
        lines += [f"## {title}", "", (doc or "").splitlines()[0], "",
                  "| Variable | Setting | Type | Default | Meaning |", "|---|---|---|---|---|"]
        lines += [_row(var) for var in found]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
