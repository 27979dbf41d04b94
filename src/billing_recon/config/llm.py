"""Language-model settings: the endpoint, each agent's model, output caps, prices, budgets.

Nothing here reads the environment: ``config.settings`` fills these sections (variables
``BILLING_RECON_LLM_*``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``) and the ``LlmEndpoint`` block
holds the same sections.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)

from billing_recon.config.variables import Env, Section

Backend = Literal["offline", "openai"]

#: A small model for triage and summary, a code model for the analysis script.
DEFAULT_MODELS: dict[str, str] = {
    "triage": "gpt-4.1-mini", "analysis": "gpt-4.1", "summary": "gpt-4.1-mini",
}
#: Largest answer each agent may produce (max_completion_tokens): triage and summary answers
#: are a few dozen tokens; a reconciliation script is about a thousand.
DEFAULT_OUTPUT_CAPS: dict[str, int] = {"triage": 300, "analysis": 3000, "summary": 400}
_MILLION = Decimal(1_000_000)


class Price(BaseModel):
    """USD per million tokens, for prompt (input) and completion (output) tokens."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    input_per_mtok: Decimal = Field(
        ge=0, validation_alias=AliasChoices("input_per_mtok", "input"),
        description="USD per million prompt tokens.")
    output_per_mtok: Decimal = Field(
        ge=0, validation_alias=AliasChoices("output_per_mtok", "output"),
        description="USD per million completion tokens.")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """The USD cost of one call with this usage."""
        return (prompt_tokens * self.input_per_mtok
                + completion_tokens * self.output_per_mtok) / _MILLION


def _price(inp: str, out: str) -> Price:
    return Price(input_per_mtok=Decimal(inp), output_per_mtok=Decimal(out))


#: OpenAI list prices (USD per 1M tokens); BILLING_RECON_LLM_PRICES adds to or overrides them.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4.1": _price("2.00", "8.00"),
    "gpt-4.1-mini": _price("0.40", "1.60"),
    "gpt-4.1-nano": _price("0.10", "0.40"),
    "gpt-4o": _price("2.50", "10.00"),
    "gpt-4o-mini": _price("0.15", "0.60"),
    "offline": _price("0", "0"),
}


def _json(value: Any) -> Any:
    """A JSON text (from the environment) as data; anything else unchanged."""
    return json.loads(value) if isinstance(value, str) else value


def _prices(value: Any) -> Any:
    """Prices as JSON text extend the built-in table; a mapping (a block's) replaces it."""
    return {**DEFAULT_PRICES, **json.loads(value)} if isinstance(value, str) else value


class ModelSettings(Section):
    """The model server, which model answers each agent, and what tokens cost."""

    env_prefix = "BILLING_RECON_LLM_"

    backend: Annotated[Backend, Env("BILLING_RECON_LLM")] = Field(
        default="offline", description="offline: deterministic rules, no network; openai: an "
        "OpenAI-compatible chat-completions server. Unset: openai when OPENAI_BASE_URL is set, "
        "else offline (an API key alone never starts spending).")
    base_url: Annotated[str | None, Env("OPENAI_BASE_URL")] = Field(
        default=None, description="URL of the OpenAI-compatible server (vLLM, Ollama, a "
        "proxy); unset means https://api.openai.com/v1.")
    api_key: Annotated[SecretStr | None, Env("OPENAI_API_KEY")] = Field(
        default=None, description="API key of the server; unset for servers without keys.")
    triage_model: str = Field(default=DEFAULT_MODELS["triage"],
                              description="Model that classifies each email.")
    analysis_model: str = Field(default=DEFAULT_MODELS["analysis"],
                                description="Model that writes the reconciliation script.")
    summary_model: str = Field(default=DEFAULT_MODELS["summary"],
                               description="Model that summarises the proposal for approvers.")
    timeout_s: float = Field(default=60.0, gt=0, description="Seconds to wait for one answer.")
    max_retries: int = Field(default=2, ge=0, description="Retries of the SDK per call.")
    temperature: float | None = Field(
        default=None, ge=0, le=2, description="Sampling temperature; unset sends none "
        "(reasoning models accept only their own).")
    output_caps: Annotated[dict[str, int], BeforeValidator(_json)] = Field(
        default_factory=lambda: dict(DEFAULT_OUTPUT_CAPS),
        description='Largest answer of each agent in tokens, JSON like {"analysis": 3000}.')
    prices: Annotated[dict[str, Price], BeforeValidator(_prices)] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES),
        description='USD per million tokens, JSON like {"gpt-4.1": {"input": 2.0, "output": '
        "8.0}}; added to the built-in table of OpenAI's list prices. A dated snapshot "
        "(gpt-4.1-2025-04-14) costs as its family.")

    @model_validator(mode="before")
    @classmethod
    def _choose_backend(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("backend"):
            return {**data, "backend": "openai" if data.get("base_url") else "offline"}
        return data

    @property
    def models(self) -> dict[str, str]:
        """The model of each agent."""
        return {"triage": self.triage_model, "analysis": self.analysis_model,
                "summary": self.summary_model}

    def model_for(self, agent: str) -> str:
        """The model name configured for ``agent``."""
        return self.models.get(agent) or self.triage_model

    def output_cap(self, agent: str) -> int:
        """The most completion tokens ``agent`` may use in one call."""
        return self.output_caps.get(agent, max(DEFAULT_OUTPUT_CAPS.values()))

    def price_of(self, model: str) -> Price | None:
        """The price of ``model``; a dated snapshot (gpt-4.1-2025-04-14) costs as its family."""
        if model in self.prices:
            return self.prices[model]
        family = [name for name in self.prices if model.startswith(name + "-")]
        return self.prices[max(family, key=len)] if family else None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal | None:
        """Estimated USD cost of a call, or None for a model missing from the price table."""
        price = self.price_of(model)
        return None if price is None else price.cost(prompt_tokens, completion_tokens)


class LlmBudget(Section):
    """Caps: per ticket (model calls, tokens, analysis retries) and the global breaker."""

    env_prefix = "BILLING_RECON_LLM_"

    max_calls_per_ticket: int = Field(
        default=6, ge=0, description="Model calls one ticket may make (triage, 4 analysis "
        "attempts, summary).")
    # Above a ticket's structural worst case (every call at its bound: ~49k with a 1 KB email,
    # see bench/token_bench.py), so only abnormal input or usage hits it; a real ticket ~2k.
    max_tokens_per_ticket: int = Field(default=50_000, ge=0,
                                       description="Tokens one ticket may use.")
    analysis_retries: int = Field(
        default=3, ge=0, le=10, description="Repairs of a failing reconciliation script after "
        "the first attempt, before the circuit breaker escalates the ticket.")
    breaker_window_s: float = Field(default=3600.0, gt=0,
                                    description="Window of the global breaker, in seconds.")
    breaker_max_escalations: int = Field(
        default=10, ge=0,
        description="Model-caused escalations within the window that stop new model work.")
    breaker_max_tokens: int = Field(
        default=2_000_000, ge=0, description="Tokens within the window that stop new model "
        "work.")
