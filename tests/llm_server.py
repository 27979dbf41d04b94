"""Fixtures at the model's transport boundary: the loopback chat server, and a guard that fails
any test whose code tries to reach a real model server.

The guard follows openai-agents-python's ``disable_real_model_clients``: it is autouse (tests/
conftest.py imports it) and it sits at the SDK's HTTP transport, so nothing of ours is patched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from billing_recon import runtime
from billing_recon.testing.chat_server import ChatServer

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(autouse=True)
def no_real_model_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test on any request of the OpenAI SDK to a host other than loopback."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    real = httpx2.HTTPTransport.handle_request

    def guarded(self: httpx2.HTTPTransport, request: httpx2.Request) -> Any:
        if request.url.host not in LOOPBACK:
            pytest.fail(f"a test tried to reach a real model server: {request.url}")
        return real(self, request)

    monkeypatch.setattr(httpx2.HTTPTransport, "handle_request", guarded)


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    """A loopback chat-completions server, rules mode until a test scripts an agent."""
    with ChatServer(api_key="sk-test-loopback") as server:
        yield server


def use_openai(server: ChatServer, monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Point the pipeline at ``server`` through the real SDK (OPENAI_BASE_URL auto-selects)."""
    monkeypatch.delenv("BILLING_RECON_LLM", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-loopback")
    monkeypatch.setenv("BILLING_RECON_LLM_MAX_RETRIES", "0")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
