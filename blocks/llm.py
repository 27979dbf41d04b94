"""The language-model block: endpoint, model of each agent, prices and the spend limits."""

from __future__ import annotations

from pydantic import Field

from billing_recon.config import LlmBudget, ModelSettings
from billing_recon.llm.backends import chat_model
from billing_recon.llm.port import ChatModel
from billing_recon_blocks.parts import DOCS_URL, SectionsBlock


class LlmEndpoint(SectionsBlock):
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

    def chat_model(self) -> ChatModel:
        """The configured chat model (offline rules, or the OpenAI-compatible server)."""
        return chat_model(self.llm)
