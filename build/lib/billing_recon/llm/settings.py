"""Language-model settings: the model of each agent, output caps, prices and the spend limits.

Read from the environment by default; a Prefect Block (later) builds the same objects from its
fields. Nothing here is secret: the API key travels in ``OpenAIEndpoint`` only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from billing_recon.errors import UserInputError

AGENTS = ("triage", "analysis", "summary")

#: A small model for triage and summary, a code model for the analysis script.
DEFAULT_MODELS: dict[str, str] = {
    "triage": "gpt-4.1-mini", "analysis": "gpt-4.1", "summary": "gpt-4.1-mini",
}
#: Largest answer each agent may produce (max_completion_tokens): triage and summary answers
#: are a few dozen tokens; a reconciliation script is about a thousand.
DEFAULT_OUTPUT_CAPS: dict[str, int] = {"triage": 300, "analysis": 3000, "summary": 400}

_MILLION = Decimal(1_000_000)
_N = TypeVar("_N", int, float)


@dataclass(frozen=True)
class Price:
    """USD per million tokens, for prompt (input) and completion (output) tokens."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """The USD cost of one call with this usage."""
        return (prompt_tokens * self.input_per_mtok
                + completion_tokens * self.output_per_mtok) / _MILLION


def _price(inp: str, out: str) -> Price:
    return Price(Decimal(inp), Decimal(out))


#: OpenAI list prices (USD per 1M tokens); override or extend with BILLING_RECON_LLM_PRICES.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4.1": _price("2.00", "8.00"),
    "gpt-4.1-mini": _price("0.40", "1.60"),
    "gpt-4.1-nano": _price("0.10", "0.40"),
    "gpt-4o": _price("2.50", "10.00"),
    "gpt-4o-mini": _price("0.15", "0.60"),
    "offline": _price("0", "0"),
}


def _env_number(env: Mapping[str, str], name: str, default: _N, kind: Callable[[str], _N]) -> _N:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        raise UserInputError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if value < 0:
        raise UserInputError(f"{name}={raw!r} must not be negative")
    return value


def parse_prices(text: str) -> dict[str, Price]:
    """``{"model": {"input": 0.4, "output": 1.6}}`` (USD per 1M tokens) as a price table."""
    try:
        data = json.loads(text)
        return {str(model): Price(Decimal(str(p["input"])), Decimal(str(p["output"])))
                for model, p in data.items()}
    except (ValueError, TypeError, KeyError, AttributeError, InvalidOperation) as exc:
        raise UserInputError(
            'BILLING_RECON_LLM_PRICES must be JSON like {"gpt-4.1": {"input": 2.0, '
            f'"output": 8.0}} (USD per million tokens): {exc}') from None


@dataclass(frozen=True)
class ModelSettings:
    """Which model answers each agent, how long an answer may be, and what tokens cost."""

    models: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    output_caps: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_OUTPUT_CAPS))
    timeout_s: float = 60.0
    max_retries: int = 2
    temperature: float | None = None
    prices: dict[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ModelSettings:
        """BILLING_RECON_LLM_{TRIAGE,ANALYSIS,SUMMARY}_MODEL, _TIMEOUT_S, _MAX_RETRIES, ..."""
        env = os.environ if env is None else env
        models = {a: env.get(f"BILLING_RECON_LLM_{a.upper()}_MODEL") or DEFAULT_MODELS[a]
                  for a in AGENTS}
        prices = dict(DEFAULT_PRICES)
        if env.get("BILLING_RECON_LLM_PRICES"):
            prices.update(parse_prices(env["BILLING_RECON_LLM_PRICES"]))
        # Unset by default: reasoning models reject any temperature but their own.
        temperature = (_env_number(env, "BILLING_RECON_LLM_TEMPERATURE", 0.0, float)
                       if env.get("BILLING_RECON_LLM_TEMPERATURE", "").strip() else None)
        return cls(models=models, prices=prices, temperature=temperature,
                   timeout_s=_env_number(env, "BILLING_RECON_LLM_TIMEOUT_S", 60.0, float),
                   max_retries=_env_number(env, "BILLING_RECON_LLM_MAX_RETRIES", 2, int))

    def model_for(self, agent: str) -> str:
        """The model name configured for ``agent``."""
        return self.models.get(agent) or DEFAULT_MODELS.get(agent, DEFAULT_MODELS["triage"])

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


@dataclass(frozen=True)
class LlmBudget:
    """Spend limits: per ticket (calls, tokens) and the global breaker over a time window."""

    max_calls_per_ticket: int = 6  # triage + 4 analysis attempts + summary
    # Above a ticket's structural worst case (every call at its bound: ~49k with a 1 KB email,
    # see bench/token_bench.py), so only abnormal input or usage hits it; a real ticket ~2k.
    max_tokens_per_ticket: int = 50_000
    breaker_window_s: float = 3600.0
    breaker_max_escalations: int = 10
    breaker_max_tokens: int = 2_000_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LlmBudget:
        """BILLING_RECON_LLM_MAX_{CALLS,TOKENS}_PER_TICKET and BILLING_RECON_LLM_BREAKER_*."""
        env = os.environ if env is None else env
        d = cls()
        p = "BILLING_RECON_LLM_"
        return cls(
            max_calls_per_ticket=_env_number(env, p + "MAX_CALLS_PER_TICKET",
                                             d.max_calls_per_ticket, int),
            max_tokens_per_ticket=_env_number(env, p + "MAX_TOKENS_PER_TICKET",
                                              d.max_tokens_per_ticket, int),
            breaker_window_s=_env_number(env, p + "BREAKER_WINDOW_S", d.breaker_window_s, float),
            breaker_max_escalations=_env_number(env, p + "BREAKER_MAX_ESCALATIONS",
                                                d.breaker_max_escalations, int),
            breaker_max_tokens=_env_number(env, p + "BREAKER_MAX_TOKENS",
                                           d.breaker_max_tokens, int),
        )
