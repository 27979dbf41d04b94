"""LLM settings from the environment, model selection, prices and the call bound."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from billing_recon.agents.schemas import AnalysisOutput, TriageOutput
from billing_recon.config import LlmBudget, ModelSettings, Price, from_variables
from billing_recon.errors import UserInputError
from billing_recon.llm.accounting import input_hash, prompt_bound
from billing_recon.llm.backends import chat_model
from billing_recon.llm.offline import OfflineModel
from billing_recon.llm.openai_chat import OpenAIChatModel


def _llm(env: dict[str, str]) -> ModelSettings:
    return from_variables(env).llm


def test_each_agent_has_its_own_configurable_model() -> None:
    default = _llm({})
    assert default.model_for("triage") == default.model_for("summary") == "gpt-4.1-mini"
    assert default.model_for("analysis") == "gpt-4.1"
    custom = _llm({"BILLING_RECON_LLM_ANALYSIS_MODEL": "qwen2.5-coder"})
    assert custom.model_for("analysis") == "qwen2.5-coder"
    assert custom.model_for("triage") == "gpt-4.1-mini"


def test_timeout_retries_and_temperature_come_from_the_env() -> None:
    s = _llm({"BILLING_RECON_LLM_TIMEOUT_S": "12.5", "BILLING_RECON_LLM_MAX_RETRIES": "1",
              "BILLING_RECON_LLM_TEMPERATURE": "0"})
    assert (s.timeout_s, s.max_retries, s.temperature) == (12.5, 1, 0.0)
    assert _llm({}).temperature is None


@pytest.mark.parametrize(("env", "message"), [
    ({"BILLING_RECON_LLM_TIMEOUT_S": "soon"}, "BILLING_RECON_LLM_TIMEOUT_S='soon': .*number"),
    ({"BILLING_RECON_LLM_MAX_RETRIES": "-1"},
     "BILLING_RECON_LLM_MAX_RETRIES='-1': .*greater than or equal to 0"),
    ({"BILLING_RECON_LLM_PRICES": "{not json"}, "BILLING_RECON_LLM_PRICES='{not json': "),
    ({"BILLING_RECON_LLM_PRICES": '{"m": {"input": 1}}'},
     "BILLING_RECON_LLM_PRICES at m.output_per_mtok: Field required")])
def test_bad_settings_are_user_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        _llm(env)


def test_cost_comes_from_the_price_table_and_snapshots_use_their_family() -> None:
    s = _llm({"BILLING_RECON_LLM_PRICES": '{"my-model": {"input": 1.5, "output": "3"}}'})
    assert s.cost("my-model", 1_000_000, 500_000) == Decimal("3.0")
    assert s.cost("gpt-4.1-2025-04-14", 1000, 1000) == Decimal("0.01")  # 2.00 + 8.00 per 1M
    assert s.cost("gpt-4.1-mini-2025-04-14", 1_000_000, 0) == Decimal("0.40")
    assert s.cost("unknown-model", 10, 10) is None
    assert _llm({"BILLING_RECON_LLM_PRICES": '{"x": {"input": 0, "output": 0.5}}'}).prices[
        "x"] == Price(input_per_mtok=Decimal("0"), output_per_mtok=Decimal("0.5"))


def test_budget_limits_come_from_the_env() -> None:
    b = from_variables({"BILLING_RECON_LLM_MAX_CALLS_PER_TICKET": "3",
                        "BILLING_RECON_LLM_MAX_TOKENS_PER_TICKET": "900",
                        "BILLING_RECON_LLM_BREAKER_WINDOW_S": "60",
                        "BILLING_RECON_LLM_BREAKER_MAX_ESCALATIONS": "2",
                        "BILLING_RECON_LLM_BREAKER_MAX_TOKENS": "5000"}).budgets
    assert b == LlmBudget(max_calls_per_ticket=3, max_tokens_per_ticket=900,
                          breaker_window_s=60.0, breaker_max_escalations=2,
                          breaker_max_tokens=5000)
    assert from_variables({}).budgets.max_calls_per_ticket == 6  # triage + 4 attempts + summary


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "offline"),
    ({"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}, "openai"),
    ({"OPENAI_API_KEY": "sk-x"}, "offline"),  # a key in the shell alone never starts spending
    ({"OPENAI_BASE_URL": "http://127.0.0.1:1/v1", "BILLING_RECON_LLM": "offline"}, "offline"),
    ({"BILLING_RECON_LLM": "openai", "OPENAI_API_KEY": "sk-x"}, "openai"),
])
def test_model_selection(env: dict[str, str], expected: str) -> None:
    assert _llm(env).backend == expected


def test_the_settings_build_the_chat_model_they_name() -> None:
    model = chat_model(_llm({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                             "BILLING_RECON_LLM_TIMEOUT_S": "3"}))
    assert isinstance(model, OpenAIChatModel) and model.settings.timeout_s == 3.0
    assert isinstance(chat_model(_llm({})), OfflineModel)
    with pytest.raises(UserInputError, match="BILLING_RECON_LLM='gpt-9': Input should be "
                       "'offline' or 'openai'"):
        _llm({"BILLING_RECON_LLM": "gpt-9"})


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
