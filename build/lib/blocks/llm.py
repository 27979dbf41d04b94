"""The language-model block: endpoint, model of each agent, spend limits and prices."""

from __future__ import annotations

from dataclasses import asdict, fields
from decimal import Decimal
from typing import Literal, Self

from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from billing_recon.config import Settings, secret_fingerprint
from billing_recon.errors import UserInputError
from billing_recon.llm import registry
from billing_recon.llm.openai_chat import OpenAIChatModel, OpenAIEndpoint
from billing_recon.llm.settings import (
    DEFAULT_MODELS,
    DEFAULT_PRICES,
    LlmBudget,
    ModelSettings,
    Price,
)
from blocks.parts import DOCS_URL, SettingsPart, reveal

_BUDGET = LlmBudget()


class ModelPrice(BaseModel):
    """What one model's tokens cost, in USD per million tokens."""

    model_config = ConfigDict(frozen=True)

    input_per_mtok: Decimal = Field(ge=0, description="USD per million prompt tokens.")
    output_per_mtok: Decimal = Field(ge=0, description="USD per million completion tokens.")


def _block_prices(prices: dict[str, Price]) -> dict[str, ModelPrice]:
    return {name: ModelPrice(input_per_mtok=p.input_per_mtok, output_per_mtok=p.output_per_mtok)
            for name, p in prices.items()}


def _default_prices() -> dict[str, ModelPrice]:
    return _block_prices(DEFAULT_PRICES)


class LlmEndpoint(Block):
    """The model server billing-recon's agents call, their models, and the spend limits.

    Example:
        ```python
        from blocks.llm import LlmEndpoint

        llm = LlmEndpoint.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Billing Recon LLM Endpoint"
    _documentation_url = DOCS_URL  # type: ignore[assignment]

    kind: Literal["offline", "openai"] = Field(
        default="offline",
        description="offline: deterministic rules, no network; openai: an OpenAI-compatible "
        "chat-completions server.")
    base_url: str | None = Field(
        default=None, description="URL of the OpenAI-compatible server (vLLM, Ollama, a proxy); "
        "empty means https://api.openai.com/v1.")
    api_key: SecretStr | None = Field(
        default=None, description="API key of the server; empty for servers without keys.")
    triage_model: str = Field(default=DEFAULT_MODELS["triage"],
                              description="Model that classifies each email.")
    analysis_model: str = Field(default=DEFAULT_MODELS["analysis"],
                                description="Model that writes the reconciliation script.")
    summary_model: str = Field(default=DEFAULT_MODELS["summary"],
                               description="Model that summarises the proposal for approvers.")
    timeout_s: float = Field(default=60.0, gt=0, description="Seconds to wait for one answer.")
    max_retries: int = Field(default=2, ge=0, description="Retries of the SDK per call.")
    temperature: float | None = Field(
        default=None, ge=0, le=2, description="Sampling temperature; empty sends none "
        "(reasoning models accept only their own).")
    max_calls_per_ticket: int = Field(default=_BUDGET.max_calls_per_ticket, ge=0,
                                      description="Model calls one ticket may make.")
    max_tokens_per_ticket: int = Field(default=_BUDGET.max_tokens_per_ticket, ge=0,
                                       description="Tokens one ticket may use.")
    breaker_window_s: float = Field(default=_BUDGET.breaker_window_s, gt=0,
                                    description="Window of the global breaker, in seconds.")
    breaker_max_escalations: int = Field(
        default=_BUDGET.breaker_max_escalations, ge=0,
        description="Model-caused escalations within the window that stop new model work.")
    breaker_max_tokens: int = Field(default=_BUDGET.breaker_max_tokens, ge=0,
                                    description="Tokens within the window that stop new model "
                                    "work.")
    prices: dict[str, ModelPrice] = Field(
        default_factory=_default_prices,
        description="The price table (it replaces the built-in one): each model's price, for "
        "cost accounting; a dated snapshot (gpt-4.1-2025-04-14) costs as its family.")

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The block that reproduces ``settings``' model and the OpenAI endpoint of the env."""
        if settings.llm == "offline":
            kind: Literal["offline", "openai"] = "offline"
        elif settings.llm == "openai":
            kind = "openai"
        else:
            raise UserInputError(f"model {settings.llm!r} cannot be stored in a block "
                                 "(offline or openai)")
        endpoint, models = OpenAIEndpoint.from_env(), settings.llm_models
        return cls(
            kind=kind, base_url=endpoint.base_url, api_key=endpoint.api_key,
            triage_model=models.model_for("triage"), analysis_model=models.model_for("analysis"),
            summary_model=models.model_for("summary"), timeout_s=models.timeout_s,
            max_retries=models.max_retries, temperature=models.temperature,
            prices=_block_prices(models.prices), **asdict(settings.llm_budget))

    def model_settings(self) -> ModelSettings:
        """The core's model settings: model per agent, timeouts, prices."""
        return ModelSettings(
            models={"triage": self.triage_model, "analysis": self.analysis_model,
                    "summary": self.summary_model},
            timeout_s=self.timeout_s, max_retries=self.max_retries, temperature=self.temperature,
            prices={name: Price(p.input_per_mtok, p.output_per_mtok)
                    for name, p in self.prices.items()})

    def budget(self) -> LlmBudget:
        """The core's spend limits."""
        return LlmBudget(**{f.name: getattr(self, f.name) for f in fields(LlmBudget)})

    def settings_part(self) -> SettingsPart:
        """This block's share of the core ``Settings``.

        An ``openai`` endpoint is registered as a chat model of its own, named after a keyed
        digest of its configuration: the core's model registry builds it without reading the
        environment, and two endpoints never share a name (nor a cached runtime).
        """
        models = self.model_settings()
        name = "offline"
        if self.kind == "openai":
            endpoint = OpenAIEndpoint(api_key=self.api_key, base_url=self.base_url)
            name = "openai-block-" + secret_fingerprint(self.base_url, reveal(self.api_key),
                                                         repr(models))
            registry.register(name, lambda: OpenAIChatModel(endpoint, models))
        return {"llm": name, "llm_models": models, "llm_budget": self.budget()}
