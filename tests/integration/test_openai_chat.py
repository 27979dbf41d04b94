"""The OpenAI adapter through the official SDK against the loopback chat-completions server."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from billing_recon.agents.analysis import author_script
from billing_recon.agents.schemas import SummaryOutput, TriageOutput
from billing_recon.agents.triage import triage
from billing_recon.config import ModelSettings, from_variables
from billing_recon.domain.email import parse_email
from billing_recon.errors import ModelOutputInvalid, ModelUnavailable, UserInputError
from billing_recon.llm.openai_chat import KEYLESS, OpenAIChatModel, OpenAIEndpoint
from billing_recon.llm.reference_script import SCRIPT
from billing_recon.testing.chat_server import ChatServer, Refusal, Stall, Status

RAW = (b"From: Ann <ann@example.com>\r\nTo: billing@example.com\r\nSubject: INV-000001 wrong\r\n"
       b"Message-ID: <abc@x>\r\n\r\nI was charged $12.50 twice for INV-000001.\r\n")
KEY = "sk-test-loopback"


def _model(server: ChatServer, **settings: object) -> OpenAIChatModel:
    values: dict[str, object] = {"max_retries": 0, "timeout_s": 10.0, **settings}
    return OpenAIChatModel(OpenAIEndpoint(SecretStr(KEY), server.url),
                           ModelSettings(**values))


def test_triage_parses_the_structured_output_sent_over_http(chat_server: ChatServer) -> None:
    chat_server.script("triage", {"is_billing": True, "invoice_ids": ["inv-000001", "bogus"],
                                  "claimed_amounts": ["$12.50"]})
    result = triage(_model(chat_server), parse_email(RAW))
    assert (result.invoice_ids, result.dropped, result.claimed_amounts) == (
        ["INV-000001"], ["BOGUS"], ["12.50"])
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0


def test_each_agent_gets_its_model_cap_and_strict_schema(chat_server: ChatServer) -> None:
    model = _model(chat_server, triage_model="small-x", analysis_model="coder-y",
                   output_caps={"triage": 123, "analysis": 4567})
    triage(model, parse_email(RAW))
    author_script(model, [])
    first, second = chat_server.requests
    assert (first.model, first.max_completion_tokens) == ("small-x", 123)
    assert (second.model, second.max_completion_tokens) == ("coder-y", 4567)
    fmt = first.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["name"] == "TriageOutput"
    assert "temperature" not in first.body  # reasoning models reject it unless configured


def test_rules_mode_answers_the_analysis_agent_with_the_reference_script(
        chat_server: ChatServer) -> None:
    authored = author_script(_model(chat_server), [])
    assert authored.script == SCRIPT
    assert 500 < authored.usage.completion_tokens < 1500


def test_reply_model_is_the_servers_and_usage_is_reported(chat_server: ChatServer) -> None:
    reply = _model(chat_server).complete("summary", [{"role": "user", "content": json.dumps(
        {"ticket_id": "T-000001", "outcome": "no_discrepancy"})}], SummaryOutput)
    assert reply.model == "gpt-4.1-mini" and reply.usage.reported
    assert "billed correctly" in reply.output.reply


def test_server_error_becomes_model_unavailable_after_bounded_retries(
        chat_server: ChatServer) -> None:
    chat_server.script("triage", Status(500))
    with pytest.raises(ModelUnavailable) as info:
        triage(_model(chat_server, max_retries=1), parse_email(RAW))
    assert info.value.status == 500
    assert chat_server.calls("triage") == 2  # one call plus exactly one SDK retry


def test_rejected_key_is_model_unavailable_without_retry(chat_server: ChatServer) -> None:
    model = OpenAIChatModel(OpenAIEndpoint(SecretStr("wrong"), chat_server.url),
                            ModelSettings(max_retries=2))
    with pytest.raises(ModelUnavailable) as info:
        triage(model, parse_email(RAW))
    assert info.value.status == 401 and chat_server.calls() == 1


def test_slow_server_times_out(chat_server: ChatServer) -> None:
    chat_server.script("triage", Stall(5))
    with pytest.raises(ModelUnavailable, match="timed out"):
        triage(_model(chat_server, timeout_s=0.3), parse_email(RAW))


def test_answer_that_is_not_the_schema_is_output_invalid(chat_server: ChatServer) -> None:
    chat_server.script("triage", '{"is_billing": "perhaps", "invoice_ids": 7}')
    with pytest.raises(ModelOutputInvalid) as info:
        triage(_model(chat_server), parse_email(RAW))
    assert info.value.prompt_tokens is None  # the SDK's parser does not expose the usage


def test_cut_off_answer_is_output_invalid_with_its_usage(chat_server: ChatServer) -> None:
    with pytest.raises(ModelOutputInvalid, match="cut off at 50 tokens") as info:
        author_script(_model(chat_server, output_caps={"analysis": 50}), [])
    assert info.value.completion_tokens == 50 and (info.value.prompt_tokens or 0) > 0


def test_refusal_is_output_invalid_with_its_usage(chat_server: ChatServer) -> None:
    chat_server.script("triage", Refusal("I cannot help with that."))
    with pytest.raises(ModelOutputInvalid, match="I cannot help with that") as info:
        triage(_model(chat_server), parse_email(RAW))
    assert (info.value.completion_tokens or 0) > 0


def test_server_without_usage_reports_usage_unknown() -> None:
    with ChatServer(api_key=KEY, usage=False) as server:
        reply = _model(server).complete("triage", [{"role": "user", "content": "hi"}],
                                        TriageOutput)
    assert not reply.usage.reported


def test_endpoint_from_env_and_keyless_servers(chat_server: ChatServer) -> None:
    endpoint = OpenAIEndpoint.of(from_variables({"OPENAI_BASE_URL": chat_server.url,
                                                 "OPENAI_API_KEY": ""}).llm)
    assert endpoint == OpenAIEndpoint(None, chat_server.url)
    client = endpoint.client(ModelSettings())
    assert client.api_key == KEYLESS and str(client.base_url) == chat_server.url + "/"
    with pytest.raises(UserInputError, match="OPENAI_API_KEY"):
        OpenAIEndpoint().client(ModelSettings())
    assert "sk-secret" not in repr(OpenAIEndpoint(SecretStr("sk-secret")))


def test_timeout_and_retries_are_bounded_on_the_client(chat_server: ChatServer) -> None:
    client = OpenAIEndpoint(SecretStr(KEY), chat_server.url).client(
        ModelSettings(timeout_s=7.5, max_retries=1))
    assert (client.timeout, client.max_retries) == (7.5, 1)


def test_a_real_model_server_fails_the_test() -> None:
    model = OpenAIChatModel(OpenAIEndpoint(SecretStr("sk-none")), ModelSettings(max_retries=0))
    with pytest.raises(pytest.fail.Exception, match=r"real model server: https://api\.openai"):
        triage(model, parse_email(RAW))
