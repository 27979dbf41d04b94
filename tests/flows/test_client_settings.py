"""Client settings our entry points apply: a one-certificate CA file for a plain-http API on
loopback (no CA bundle loaded per client), no CSRF token request per client when that server
has CSRF protection off, and nothing for any other API."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from prefect import flow, task
from prefect.client.orchestration import PrefectClient, get_client
from prefect.settings import (
    PREFECT_API_SSL_CERT_FILE,
    PREFECT_API_URL,
    PREFECT_HOME,
    temporary_settings,
)

from billing_recon_tasks.client_settings import csrf_off, local_client_settings, loopback_http

pytestmark = pytest.mark.flows


def _trusted_cas(client: PrefectClient) -> int:
    """How many CA certificates the client's SSL context loaded (Prefect builds one each)."""
    context: ssl.SSLContext = client._client._transport._pool._ssl_context  # type: ignore[attr-defined]
    return len(context.get_ca_certs())


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:4200/api", True), ("http://localhost:4200/api", True),
    ("http://[::1]:4200/api", True), (None, True),  # None: Prefect's ephemeral server
    ("https://127.0.0.1:4200/api", False), ("http://10.1.2.3:4200/api", False),
    ("http://prefect.internal:4200/api", False), ("https://api.prefect.cloud/api", False),
])
def test_only_plain_http_on_loopback_counts_as_a_local_api(url: str | None,
                                                          expected: bool) -> None:
    assert loopback_http(url) is expected


def test_clients_of_a_loopback_http_api_load_one_ca_certificate(tmp_path: Path) -> None:
    with temporary_settings({PREFECT_HOME: tmp_path}), local_client_settings():
        assert _trusted_cas(PrefectClient("http://127.0.0.1:9/api")) == 1
        assert Path(PREFECT_API_SSL_CERT_FILE.value() or "").parent == tmp_path


def test_an_https_api_keeps_prefect_s_own_ca_setting() -> None:
    with temporary_settings({PREFECT_API_URL: "https://prefect.example.com/api"}):
        before = PREFECT_API_SSL_CERT_FILE.value()
        with local_client_settings():
            assert PREFECT_API_SSL_CERT_FILE.value() == before
            assert _trusted_cas(PrefectClient("https://prefect.example.com/api")) > 1


@task
async def _client_cas_in_task() -> int:
    async with get_client() as client:
        return _trusted_cas(client)


@flow
async def _client_cas_in_flow() -> tuple[int, int]:
    async with get_client() as client:
        return _trusted_cas(client), await _client_cas_in_task()


@pytest.mark.anyio
async def test_flow_and_task_runs_inside_the_settings_use_them(tmp_path: Path) -> None:
    assert loopback_http(PREFECT_API_URL.value())  # the test harness: http on 127.0.0.1
    with temporary_settings({PREFECT_HOME: tmp_path}), local_client_settings():
        assert await _client_cas_in_flow() == (1, 1)


def _answer(status: int, text: str) -> httpx.MockTransport:
    return httpx.MockTransport(lambda _request: httpx.Response(status, text=text))


def test_a_server_is_taken_as_without_csrf_protection_only_when_it_says_so() -> None:
    url = "http://127.0.0.1:9/api"
    assert csrf_off(url, _answer(422, '{"detail": "CSRF protection is disabled."}'))
    assert not csrf_off(url, _answer(200, '{"token": "t", "expiration": "2030-01-01T00:00:00Z"}'))
    assert not csrf_off(url, _answer(401, "Unauthorized"))
    assert not csrf_off("http://127.0.0.1:9/api")  # nobody listens: cannot tell


@flow
async def _two_steps() -> None:
    await _client_cas_in_task()


@pytest.mark.anyio
async def test_runs_skip_the_csrf_token_request_of_a_server_without_csrf_protection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    send = httpx.AsyncHTTPTransport.handle_async_request

    async def counted(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/csrf-token"):
            asked.append(request.url.path)
        return await send(self, request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", counted)
    await _two_steps()  # the harness: Prefect's defaults, CSRF protection off
    assert asked  # each client asks once before its first write
    asked.clear()
    with temporary_settings({PREFECT_HOME: tmp_path}), local_client_settings():
        await _two_steps()
    assert asked == []
