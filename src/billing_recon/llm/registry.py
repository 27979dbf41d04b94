"""Chat models by name, so configuration (and tests) can choose one without code changes."""

from __future__ import annotations

from collections.abc import Callable

from billing_recon.errors import UserInputError
from billing_recon.llm.offline import OfflineModel
from billing_recon.llm.port import ChatModel

_FACTORIES: dict[str, Callable[[], ChatModel]] = {"offline": OfflineModel}


def register(name: str, factory: Callable[[], ChatModel]) -> None:
    """Make a model available under ``name`` (adapters and test doubles register here)."""
    _FACTORIES[name] = factory


def build(name: str) -> ChatModel:
    """The model registered as ``name``."""
    try:
        return _FACTORIES[name]()
    except KeyError:
        known = ", ".join(sorted(_FACTORIES))
        raise UserInputError(f"unknown model {name!r}; known: {known}") from None
