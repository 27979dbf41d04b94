"""LLM settings from the environment, model selection, prices and the call bound."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from billing_recon.agents.schemas import AnalysisOutput, TriageOutput
from billing_recon.config import Settings
from billing_recon.errors import UserInputError
from billing_recon.llm import registry
from billing_recon.llm.accounting import input_hash, prompt_bound
from billing_recon.llm.offline import OfflineModel
from billing_recon.llm.openai_chat import OpenAIChatModel
from billing_recon.llm.settings import LlmBudget, ModelSettings, Price, parse_prices


def test_each_agent_has_its_own_configurable_model() -> None:
    default = ModelSettings.from_env({})
    assert default.model_for("triage") == default.model_for("summary") == "gpt-4.1-mini"
    assert default.model_for("analysis") == "gpt-4.1"
    custom = ModelSettings.from_env({"BILLING_RECON_LLM_ANALYSIS_MODEL": "qwen2.5-coder"})
    assert custom.model_for("analysis") == "qwen2.5-coder"
    assert custom.model_for("triage") == "gpt-4.1-mini"


def test_timeout_retries_and_temperature_come_from_the_env() -> None:
    s = ModelSettings.from_env({"BILLING_RECON_LLM_TIMEOUT_S": "12.5",
                                "BILLING_RECON_LLM_MAX_RETRIES": "1",
                                "BILLING_RECON_LLM_TEMPERATURE": "0"})
    assert (s.timeout_s, s.max_retries, s.temperature) == (12.5, 1, 0.0)
    assert ModelSettings.from_env({}).temperature is None


@pytest.mark.parametrize("env", [{"BILLING_RECON_LLM_TIMEOUT_S": "soon"},
                                 {"BILLING_RECON_LLM_MAX_RETRIES": "-1"},
                                 {"BILLING_RECON_LLM_PRICES": "{not json"},
                                 {"BILLING_RECON_LLM_PRICES": '{"m": {"input": 1}}'}])
def test_bad_settings_are_user_errors(env: dict[str, str]) -> None:
    with pytest.raises(UserInputError, match="BILLING_RECON_LLM_"):
        ModelSettings.from_env(env)


def test_cost_comes_from_the_price_table_and_snapshots_use_their_family() -> None:
    s = ModelSettings.from_env({"BILLING_RECON_LLM_PRICES":
                                '{"my-model": {"input": 1.5, "output": "3"}}'})
    assert s.cost("my-model", 1_000_000, 500_000) == Decimal("3.0")
    assert s.cost("gpt-4.1-2025-04-14", 1000, 1000) == Decimal("0.01")  # 2.00 + 8.00 per 1M
    assert s.cost("gpt-4.1-mini-2025-04-14", 1_000_000, 0) == Decimal("0.40")
    assert s.cost("unknown-model", 10, 10) is None
    assert parse_prices('{"x": {"input": 0, "output": 0.5}}') == {
        "x": Price(Decimal("0"), Decimal("0.5"))}


def test_budget_limits_come_from_the_env() -> None:
    b = LlmBudget.from_env({"BILLING_RECON_LLM_MAX_CALLS_PER_TICKET": "3",
                            "BILLING_RECON_LLM_MAX_TOKENS_PER_TICKET": "900",
                            "BILLING_RECON_LLM_BREAKER_WINDOW_S": "60",
                            "BILLING_RECON_LLM_BREAKER_MAX_ESCALATIONS": "2",
                            "BILLING_RECON_LLM_BREAKER_MAX_TOKENS": "5000"})
    assert b == LlmBudget(3, 900, 60.0, 2, 5000)
    assert LlmBudget.from_env({}).max_calls_per_ticket == 6  # triage + 4 attempts + summary


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "offline"),
    ({"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}, "openai"),
    ({"OPENAI_API_KEY": "sk-x"}, "offline"),  # a key in the shell alone never starts spending
    ({"OPENAI_BASE_URL": "http://127.0.0.1:1/v1", "BILLING_RECON_LLM": "offline"}, "offline"),
    ({"BILLING_RECON_LLM": "openai", "OPENAI_API_KEY": "sk-x"}, "openai"),
])
def test_model_selection(env: dict[str, str], expected: str,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLING_RECON_LLM", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().llm == expected


def test_registry_builds_the_openai_adapter_with_the_given_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    model = registry.build("openai", ModelSettings(timeout_s=3.0))
    assert isinstance(model, OpenAIChatModel) and model.settings.timeout_s == 3.0
    assert isinstance(registry.build("offline"), OfflineModel)
    with pytest.raises(UserInputError, match=r"known: .*offline.*openai"):
        registry.build("gpt-9")


def test_input_hash_names_the_question_not_the_model() -> None:
    messages = [{"role": "user", "content": "hello"}]
    same = input_hash("triage", messages, TriageOutput)
    assert same == input_hash("triage", [dict(m) for m in messages], TriageOutput)
    assert same != input_hash("summary", messages, TriageOutput)
    assert same != input_hash("triage", [{"role": "user", "content": "hello!"}], TriageOutput)


@pytest.mark.parametrize("text", ["plain ascii text " * 50, "ünïcödé ≠ ascii 🙂" * 40,
                                  "\u200b\u202e" * 100])
def test_prompt_bound_covers_one_token_per_byte_plus_the_schema(text: str) -> None:
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": text}]
    bound = prompt_bound(messages, AnalysisOutput)
    schema_bytes = len(json.dumps(AnalysisOutput.model_json_schema()).encode())
    assert bound >= len(text.encode()) + len(b"sys") + schema_bytes
