"""Client settings our entry points apply: a one-certificate CA file for a plain-http API on
loopback (no CA bundle loaded per client), and nothing for any other API."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.client.orchestration import PrefectClient, get_client
from prefect.settings import (
    PREFECT_API_SSL_CERT_FILE,
    PREFECT_API_URL,
    PREFECT_HOME,
    temporary_settings,
)

from billing_recon_tasks.client_settings import local_client_settings, loopback_http

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
