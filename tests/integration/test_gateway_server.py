"""The gateway's wire format with raw HTTP, its server lifecycle, and running it as processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billing_recon.payments.gateway_server import GatewayServer
from billing_recon.payments.gateway_store import GatewayStore

AUTH_KEY = "sk_test_local"
AUTH = {"Authorization": f"Bearer {AUTH_KEY}"}


@pytest.fixture
def gateway_db(tmp_path: Path) -> str:
    """The gateway's own SQLite file."""
    return f"sqlite:///{tmp_path}/gateway.db"


@pytest.fixture
def http(gateway_db: str) -> Iterator[httpx.Client]:
    """A raw HTTP client on a running gateway that has charge ch_1 (50.00 usd)."""
    with (
        GatewayServer(gateway_db, api_key=AUTH_KEY) as server,
        httpx.Client(base_url=server.url, headers=AUTH, trust_env=False) as client,
    ):
        client.post(
            "/v1/test_helpers/charges", data={"id": "ch_1", "amount": "5000", "currency": "usd"}
        ).raise_for_status()
        yield client


def _refund(http: httpx.Client, key: str | None, **form: str) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return http.post("/v1/refunds", data={"charge": "ch_1", **form}, headers=headers)


def test_refund_object_is_stripe_shaped(http: httpx.Client) -> None:
    response = _refund(
        http, "k", amount="700", currency="usd", reason="duplicate", **{"metadata[ticket]": "t-1"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "id": body["id"],
        "object": "refund",
        "amount": 700,
        "currency": "usd",
        "charge": "ch_1",
        "payment_intent": None,
        "metadata": {"ticket": "t-1"},
        "reason": "duplicate",
        "status": "succeeded",
        "created": body["created"],
        "pending_reason": None,
        "failure_reason": None,
        "failure_balance_transaction": None,
    }
    assert http.get(f"/v1/refunds/{body['id']}").json() == body


def test_replay_carries_idempotent_replayed_header(http: httpx.Client) -> None:
    first = _refund(http, "k", amount="700")
    second = _refund(http, "k", amount="700")
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()


def test_invalid_request_is_not_stored_under_its_key(http: httpx.Client) -> None:
    bad = _refund(http, "k", amount="7.00")
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "parameter_invalid_integer")
    unknown = _refund(http, "k", amount="700", destination="acct_evil")
    assert unknown.json()["error"]["code"] == "parameter_unknown"
    good = _refund(http, "k", amount="700")
    assert good.status_code == 200 and "idempotent-replayed" not in good.headers


def test_currency_other_than_the_charge_is_refused(http: httpx.Client) -> None:
    response = _refund(http, "k", amount="700", currency="eur")
    assert (response.status_code, response.json()["error"]["param"]) == (400, "currency")
    assert http.get("/v1/charges/ch_1").json()["amount_refunded"] == 0


def test_amount_omitted_refunds_the_remainder(http: httpx.Client) -> None:
    assert _refund(http, "a", amount="1200").json()["amount"] == 1200
    assert _refund(http, "b").json()["amount"] == 3800
    charge = http.get("/v1/charges/ch_1").json()
    assert (charge["amount_refunded"], charge["refunded"]) == (5000, True)


def test_list_filters_by_charge_and_pages(http: httpx.Client) -> None:
    http.post("/v1/test_helpers/charges", data={"id": "ch_2", "amount": "900", "currency": "usd"})
    ids = {_refund(http, key, amount="100").json()["id"] for key in ("a", "b")}
    http.post("/v1/refunds", data={"charge": "ch_2", "amount": "100"})
    listed = http.get("/v1/refunds", params={"charge": "ch_1"}).json()
    assert (listed["object"], listed["has_more"]) == ("list", False)
    assert {r["id"] for r in listed["data"]} == ids
    page = http.get("/v1/refunds", params={"charge": "ch_1", "limit": "1"}).json()
    rest = http.get(
        "/v1/refunds", params={"charge": "ch_1", "starting_after": page["data"][0]["id"]}
    )
    assert page["has_more"] is True and len(page["data"]) == 1
    assert {page["data"][0]["id"], *(r["id"] for r in rest.json()["data"])} == ids


def test_seeding_a_charge_never_changes_it(http: httpx.Client) -> None:
    again = http.post(
        "/v1/test_helpers/charges", data={"id": "ch_1", "amount": "1", "currency": "eur"}
    ).json()
    assert (again["amount"], again["currency"]) == (5000, "usd")


def test_unknown_objects_and_urls_are_stripe_shaped_404s(http: httpx.Client) -> None:
    for path in ("/v1/refunds/re_nope", "/v1/charges/ch_nope", "/v1/nothing"):
        response = http.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_configured_api_key_refuses_other_secret_keys(gateway_db: str) -> None:
    with GatewayServer(gateway_db, api_key="sk_test_right") as server:
        url = f"{server.url}/v1/charges/ch_1"
        wrong = httpx.get(url, headers={"Authorization": "Bearer sk_test_wrong"}, trust_env=False)
        right = httpx.get(url, headers={"Authorization": "Bearer sk_test_right"}, trust_env=False)
    assert wrong.status_code == 401
    assert right.status_code == 404  # authenticated; the charge simply does not exist


def test_server_stops_cleanly_and_frees_its_port(gateway_db: str) -> None:
    server = GatewayServer(gateway_db, api_key=AUTH_KEY).start()
    url = server.url
    assert httpx.get(f"{url}/healthz", trust_env=False).status_code == 200
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", trust_env=False)
    assert not [t for t in threading.enumerate() if t.name == "gateway-server"]
    with pytest.raises(RuntimeError):
        _ = server.url


def _spawn(db: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "BILLING_RECON_GATEWAY_API_KEY": "sk_test_local"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "billing_recon.payments.gateway_server", "--db", db],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _terminate(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=15)
    assert proc.stdout is not None
    proc.stdout.close()
    return code


def test_two_gateway_processes_on_one_database_refund_once(gateway_db: str) -> None:
    seed = GatewayStore(gateway_db)
    seed.ensure_charge("ch_1", 100_000, "usd")
    seed.close()
    procs = [_spawn(gateway_db) for _ in range(2)]
    try:
        barrier = threading.Barrier(10)
        statuses: list[int] = []

        def post(i: int) -> None:
            url = procs[i % 2][1]
            barrier.wait()
            response = httpx.post(
                f"{url}/v1/refunds",
                data={"charge": "ch_1", "amount": "100"},
                headers={**AUTH, "Idempotency-Key": "same"},
                trust_env=False,
            )
            statuses.append(response.status_code)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        listed = httpx.get(f"{procs[0][1]}/v1/refunds", headers=AUTH, trust_env=False).json()
    finally:
        codes = [_terminate(proc) for proc, _ in procs]
    assert len(listed["data"]) == 1
    assert set(statuses) <= {200, 409} and 200 in statuses
    assert codes == [0, 0]  # SIGTERM is a clean shutdown


def test_idempotency_key_longer_than_255_characters_is_refused(http: httpx.Client) -> None:
    response = _refund(http, "k" * 256, amount="700")
    assert response.status_code == 400
    assert http.get("/v1/charges/ch_1").json()["amount_refunded"] == 0


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ValueError, match="SQLite file"):
        GatewayStore("sqlite://")
