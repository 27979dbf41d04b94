"""Chat models by name, so configuration (and tests) can choose one without code changes.

Built in: ``offline`` (the default, no network) and ``openai`` (any OpenAI-compatible server,
from OPENAI_API_KEY / OPENAI_BASE_URL). Tests and Blocks register more under their own names.
"""

from __future__ import annotations

from collections.abc import Callable

from billing_recon.errors import UserInputError
from billing_recon.llm.offline import OfflineModel
from billing_recon.llm.port import ChatModel
from billing_recon.llm.settings import ModelSettings


def _openai(settings: ModelSettings) -> ChatModel:
    # Imported here so the offline default never needs the SDK loaded.
    from billing_recon.llm.openai_chat import OpenAIChatModel, OpenAIEndpoint

    return OpenAIChatModel(OpenAIEndpoint.from_env(), settings)


_BUILTIN: dict[str, Callable[[ModelSettings], ChatModel]] = {
    "offline": lambda _settings: OfflineModel(),
    "openai": _openai,
}
_FACTORIES: dict[str, Callable[[], ChatModel]] = {}


def register(name: str, factory: Callable[[], ChatModel]) -> None:
    """Make a model available under ``name`` (test doubles and Blocks register here)."""
    _FACTORIES[name] = factory


def build(name: str, settings: ModelSettings | None = None) -> ChatModel:
    """The model registered as ``name``; built-in ones get ``settings`` (else from the env)."""
    if name in _FACTORIES:
        return _FACTORIES[name]()
    if name in _BUILTIN:
        return _BUILTIN[name](settings or ModelSettings.from_env())
    known = ", ".join(sorted({*_BUILTIN, *_FACTORIES}))
    raise UserInputError(f"unknown model {name!r}; known: {known}")
