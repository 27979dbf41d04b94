"""The chat model the settings name: ``offline`` (no network) or ``openai`` (any
OpenAI-compatible server). Tests point ``openai`` at the loopback chat server; no registry."""

from __future__ import annotations

from billing_recon.config.llm import ModelSettings
from billing_recon.llm.offline import OfflineModel
from billing_recon.llm.port import ChatModel


def chat_model(settings: ModelSettings) -> ChatModel:
    """The model of ``settings.backend``, configured by ``settings``."""
    if settings.backend == "openai":
        # Imported here so the offline default never needs the SDK loaded.
        from billing_recon.llm.openai_chat import OpenAIChatModel, OpenAIEndpoint

        return OpenAIChatModel(OpenAIEndpoint.of(settings), settings)
    return OfflineModel()
