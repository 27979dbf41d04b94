"""The configurations an evaluation compares: ``NAME=SETTINGS`` on the command line.

SETTINGS is a ``.env``-style file of billing-recon variables, or ``VAR=VALUE`` pairs joined
by commas (``BILLING_RECON_LLM=openai,OPENAI_BASE_URL=http://127.0.0.1:8000/v1,
BILLING_RECON_LLM_ANALYSIS_MODEL=qwen2.5-coder``), or ``offline``. The variables are the
ones of docs/configuration.md and go through the one settings tree
(``config.with_variables``): they win over the environment, which wins over ``.env``.
A value holding a comma (a JSON price table) goes in a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from billing_recon.config import Settings, file_variables, with_variables
from billing_recon.errors import UserInputError

OFFLINE = "offline"


@dataclass(frozen=True)
class Configuration:
    """A named configuration: the settings its shadow run uses (its database is replaced)."""

    name: str
    variables: dict[str, str]
    settings: Settings


def _variables(spec: str) -> dict[str, str]:
    if spec == OFFLINE:
        return {"BILLING_RECON_LLM": "offline"}
    if Path(spec).is_file():
        return file_variables(Path(spec))
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserInputError(f"{item!r} is not VAR=VALUE (or SETTINGS is no file)")
        pairs[name.strip()] = value.strip()
    return pairs


def parse(text: str) -> Configuration:
    """``NAME=SETTINGS`` as a configuration; a bad name, pair or value is a UserInputError."""
    name, sep, spec = text.partition("=")
    if not sep or not name.strip() or not spec.strip():
        raise UserInputError(f"--config {text!r}: expected NAME=SETTINGS (a .env file, "
                             "VAR=VALUE pairs joined by commas, or offline)")
    values = _variables(spec.strip())
    try:
        settings = with_variables(values)
    except UserInputError as exc:
        raise UserInputError(f"--config {name.strip()}: {exc}") from None
    return Configuration(name.strip(), values, settings)


def offline() -> Configuration:
    """The default configuration: the offline rules model."""
    return parse(f"{OFFLINE}={OFFLINE}")
