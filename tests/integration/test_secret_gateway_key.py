"""The embedded gateway moves money in its ledger: it answers only its own generated key.

Before, it accepted any ``sk_...`` key, so anything on the machine that could reach its port
(a script, another user) could refund through it. Now it requires the local gateway's key
(``BILLING_RECON_GATEWAY_API_KEY``, else ``gateway.key`` created once, mode 0600, in the
home folder, like the signing key), and the refund client the flows use sends it.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from billing_recon import runtime
from billing_recon.payments.gateway_store import GatewayStore
from billing_recon.payments.refunds import RefundRequest
from billing_recon.steps.deps import Deps


@pytest.fixture
def deps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deps]:
    """Deps on a fresh SQLite database with the embedded gateway (no gateway URL, no keys)."""
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", f"sqlite:///{tmp_path}/billing.db")
    monkeypatch.setenv("BILLING_RECON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BILLING_RECON_GATEWAY_DB", f"sqlite:///{tmp_path}/gateway.db")
    for name in ("BILLING_RECON_GATEWAY_URL", "BILLING_RECON_GATEWAY_API_KEY",
                 "BILLING_RECON_STRIPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    runtime.reset()
    yield runtime.build()
    runtime.reset()


def _status(url: str, key: str) -> int:
    return httpx.get(f"{url}/v1/charges/ch_none", headers={"Authorization": f"Bearer {key}"},
                     trust_env=False).status_code


def test_secret_the_embedded_gateway_refuses_any_key_but_its_own(deps: Deps,
                                                                 tmp_path: Path) -> None:
    url = runtime.embedded_gateway_url(deps.settings, deps)
    key_file = tmp_path / "home" / "gateway.key"
    key = key_file.read_text().strip()
    assert key.startswith("sk_local_") and len(key) > 40
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    for guess in ("sk_test_local", "sk_live_anything", key[:-1] + "x"):
        assert _status(url, guess) == 401, guess
    assert _status(url, key) == 404  # authenticated: that charge simply does not exist


def test_secret_the_flows_refund_client_sends_the_gateway_key(deps: Deps) -> None:
    runtime.embedded_gateway_url(deps.settings, deps)
    store = GatewayStore(deps.settings.gateway.db_url)
    store.ensure_charge("ch_1", 5000, "usd")
    store.close()
    client = deps.refund_client()
    try:
        refund = client.refund(RefundRequest("ch_1", Decimal("12.34"), "usd", "key-1"))
    finally:
        client.close()
    assert refund.amount == Decimal("12.34")
    assert deps.settings.local_gateway_key() in deps.settings.secret_values()  # redacted


def test_secret_a_configured_gateway_key_is_used_and_not_the_file(
        deps: Deps, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BILLING_RECON_GATEWAY_API_KEY", "sk_test_configured_0123456789")
    runtime.reset()
    configured = runtime.build()
    url = runtime.embedded_gateway_url(configured.settings, configured)
    assert _status(url, "sk_test_configured_0123456789") == 404
    assert _status(url, "sk_test_local") == 401
    assert not (tmp_path / "home" / "gateway.key").exists()  # no second key lying around
