"""The language-model block: endpoint, model of each agent, prices and the spend limits."""

from __future__ import annotations

from typing import Any, Self

from prefect.blocks.core import Block
from pydantic import Field, model_validator

from billing_recon.config import LlmBudget, ModelSettings, Settings
from billing_recon.config.variables import Section
from billing_recon.llm.backends import chat_model
from billing_recon.llm.port import ChatModel
from billing_recon_blocks.parts import DOCS_URL, required


class LlmEndpoint(Block):
    """The model server billing-recon's agents call, their models, and the spend limits.

    Example:
        ```python
        from billing_recon_blocks.llm import LlmEndpoint

        model = LlmEndpoint.load("BLOCK_NAME").chat_model()
        ```
    """

    _block_type_name = "Billing Recon LLM Endpoint"
    _documentation_url = DOCS_URL  # type: ignore[assignment]

    llm: ModelSettings = Field(description="The server, its key, each agent's model, prices.")
    budgets: LlmBudget = Field(description="Per-ticket caps and the global breaker.")

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        return required(data, "llm", "budgets")

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The block that holds ``settings``' model and budget sections."""
        return cls(llm=settings.llm, budgets=settings.budgets)

    def sections(self) -> dict[str, Section]:
        """The settings sections this block holds (they replace the environment's)."""
        return {"llm": self.llm, "budgets": self.budgets}

    def chat_model(self) -> ChatModel:
        """The configured chat model (offline rules, or the OpenAI-compatible server)."""
        return chat_model(self.llm)
