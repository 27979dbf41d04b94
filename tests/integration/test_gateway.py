"""The refund client, through the real stripe SDK, against the local gateway on loopback HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from billing_recon.errors import GatewayError
from billing_recon.payments.gateway_server import GatewayServer
from billing_recon.payments.gateway_store import (
    DEFAULT_RETENTION_S,
    GatewayStore,
    idempotency_keys,
    refunds,
    request_fingerprint,
)
from billing_recon.payments.refunds import GatewayRefund, RefundClient, RefundRequest

API_KEY = "sk_test_local"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def gateway_db(tmp_path: Path) -> str:
    """The gateway's own SQLite file."""
    return f"sqlite:///{tmp_path}/gateway.db"


@pytest.fixture
def server(gateway_db: str) -> Iterator[GatewayServer]:
    """A running gateway on a free loopback port."""
    with GatewayServer(gateway_db, api_key=API_KEY) as srv:
        yield srv


@pytest.fixture
def store(gateway_db: str, server: GatewayServer) -> Iterator[GatewayStore]:
    """A second handle on the gateway's database, as another process would have: seeds and
    inspects it."""
    handle = GatewayStore(gateway_db)
    handle.ensure_charge("ch_1", 5000, "usd")
    yield handle
    handle.close()


@pytest.fixture
def client(server: GatewayServer, store: GatewayStore) -> Iterator[RefundClient]:
    """The refund client on the official stripe SDK, pointed at the gateway."""
    refund_client = RefundClient(API_KEY, server.url)
    yield refund_client
    refund_client.close()


def _request(charge_ref: str = "ch_1", amount: str = "10.00", key: str = "k1") -> RefundRequest:
    return RefundRequest(charge_ref, Decimal(amount), "usd", key, {"ticket": "t-1"})


def _refund_rows(store: GatewayStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(refunds)) or 0)


def _refunded(store: GatewayStore, charge_id: str = "ch_1") -> int:
    charge = store.get_charge(charge_id)
    assert charge is not None
    return int(charge["amount_refunded"])


def _gateway_error(client: RefundClient, req: RefundRequest) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        client.refund(req)
    assert isinstance(info.value.__cause__, Exception)  # the stripe exception is chained
    return info.value


def _age_key(store: GatewayStore, key: str, age_s: float) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            idempotency_keys.update()
            .where(idempotency_keys.c.key == key)
            .values(created_at=time.time() - age_s)
        )


def test_refund_succeeds_in_minor_units_and_is_listed(
    client: RefundClient, store: GatewayStore
) -> None:
    refund = client.refund(RefundRequest("ch_1", Decimal("12.34"), "USD", "k1", {"ticket": "t-1"}))
    assert refund == GatewayRefund(
        refund.gateway_refund_id, "ch_1", Decimal("12.34"), "usd", "succeeded", {"ticket": "t-1"}
    )
    assert refund.gateway_refund_id.startswith("re_")
    assert _refunded(store) == 1234
    assert client.list_refunds() == [refund]
    assert client.list_refunds("ch_1") == [refund]
    stored = store.get_refund(refund.gateway_refund_id)
    assert stored is not None and stored["metadata"] == {"ticket": "t-1"}


def test_same_key_and_params_replays_the_same_refund(
    client: RefundClient, store: GatewayStore
) -> None:
    first = client.refund(_request())
    second = client.refund(_request())
    assert second == first
    assert _refund_rows(store) == 1
    assert _refunded(store) == 1000


def test_same_key_with_other_params_is_idempotency_error(
    client: RefundClient, store: GatewayStore
) -> None:
    client.refund(_request(amount="10.00"))
    error = _gateway_error(client, _request(amount="11.00"))
    assert (error.code, error.status) == ("idempotency_error", 400)
    assert _refund_rows(store) == 1


def _claim_like(client: RefundClient, store: GatewayStore, req: RefundRequest) -> None:
    """Leave `req.idempotency_key` in flight with the fingerprint the SDK sends for `req`.

    The fingerprint comes from a probe refund with identical parameters on the wire, so the
    test does not depend on how the SDK orders or encodes them.
    """
    probe = client.refund(
        RefundRequest(req.charge_ref, req.amount, req.currency, "probe", req.metadata)
    )
    with store.engine.begin() as conn:
        fingerprint = conn.scalar(
            sa.select(idempotency_keys.c.fingerprint).where(idempotency_keys.c.key == "probe")
        )
    assert isinstance(store.claim_key(req.idempotency_key, str(fingerprint)), str)
    assert probe.gateway_refund_id


def test_key_in_flight_is_409_without_retries(
    server: GatewayServer, store: GatewayStore, client: RefundClient
) -> None:
    req = _request(key="busy")
    _claim_like(client, store, req)
    no_retries = RefundClient(API_KEY, server.url, max_network_retries=0, busy_wait_s=0)
    error = _gateway_error(no_retries, req)
    assert (error.code, error.status) == ("idempotency_key_in_use", 409)
    assert _refund_rows(store) == 1  # the probe only


def test_key_in_flight_raw_http_is_409_in_stripe_shape(
    server: GatewayServer, store: GatewayStore
) -> None:
    form = {"charge": "ch_1", "amount": "500", "currency": "usd"}
    fingerprint = _fingerprint_of(form)
    assert isinstance(store.claim_key("busy", fingerprint), str)
    response = httpx.post(
        f"{server.url}/v1/refunds",
        data=form,
        headers={**AUTH, "Idempotency-Key": "busy"},
        trust_env=False,
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_in_use"
    assert _refund_rows(store) == 0


def _fingerprint_of(form: dict[str, str]) -> str:
    return request_fingerprint("POST", "/v1/refunds", list(form.items()))


def test_sdk_retries_a_key_in_flight_until_its_holder_finishes(
    client: RefundClient, store: GatewayStore
) -> None:
    req = _request(key="slow")
    _claim_like(client, store, req)

    def holder_gives_up() -> None:
        time.sleep(0.3)  # shorter than the SDK's first retry delay (at least 0.5 s)
        with store.engine.begin() as conn:
            conn.execute(idempotency_keys.delete().where(idempotency_keys.c.key == "slow"))

    releaser = threading.Thread(target=holder_gives_up)
    releaser.start()
    refund = client.refund(req)  # 409 first, then the SDK's retry claims the freed key
    releaser.join()
    assert refund.amount == Decimal("10.00")
    assert _refund_rows(store) == 2


def test_over_refund_is_amount_too_large(client: RefundClient, store: GatewayStore) -> None:
    client.refund(_request(amount="45.00", key="a"))
    error = _gateway_error(client, _request(amount="5.01", key="b"))
    assert (error.code, error.status) == ("amount_too_large", 400)
    assert _refunded(store) == 4500
    assert client.refund(_request(amount="5.00", key="c")).amount == Decimal("5.00")


def test_fully_refunded_charge_is_charge_already_refunded(
    client: RefundClient, store: GatewayStore
) -> None:
    client.refund(_request(amount="50.00", key="all"))
    error = _gateway_error(client, _request(amount="0.01", key="more"))
    assert (error.code, error.status) == ("charge_already_refunded", 400)
    assert _refunded(store) == 5000


def test_unknown_charge_is_resource_missing(client: RefundClient) -> None:
    error = _gateway_error(client, _request(charge_ref="ch_nope"))
    assert (error.code, error.status) == ("resource_missing", 404)


def test_missing_auth_is_401_in_stripe_shape(server: GatewayServer, store: GatewayStore) -> None:
    response = httpx.post(
        f"{server.url}/v1/refunds",
        data={"charge": "ch_1"},
        headers={"Idempotency-Key": "k"},
        trust_env=False,
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert _refund_rows(store) == 0


def test_non_secret_key_is_refused_through_the_sdk(
    server: GatewayServer, store: GatewayStore
) -> None:
    error = _gateway_error(RefundClient("pk_test_public", server.url), _request())
    assert (error.code, error.status) == ("authentication_error", 401)
    assert _refund_rows(store) == 0


def test_payment_intent_ref_is_sent_as_payment_intent(
    server: GatewayServer, client: RefundClient, store: GatewayStore
) -> None:
    store.ensure_charge("pi_1", 3000, "usd")
    refund = client.refund(_request(charge_ref="pi_1"))
    assert refund.charge_ref == "pi_1"
    stored = store.get_refund(refund.gateway_refund_id)
    assert stored is not None
    assert (stored["payment_intent"], stored["charge"]) == ("pi_1", None)
    assert client.list_refunds("pi_1") == [refund]
    # The gateway, like Stripe, does not find a PaymentIntent under `charge`.
    response = httpx.post(
        f"{server.url}/v1/refunds", data={"charge": "pi_1"}, headers=AUTH, trust_env=False
    )
    assert response.json()["error"]["code"] == "resource_missing"


def test_currency_is_lowercased_on_the_wire(client: RefundClient, store: GatewayStore) -> None:
    # The gateway refuses uppercase codes (Stripe documents lowercase), so this only passes
    # if the client lower-cases.
    refund = client.refund(RefundRequest("ch_1", Decimal("1.00"), "USD", "upper"))
    assert refund.currency == "usd"


def test_twenty_concurrent_posts_with_one_key_make_one_refund(
    server: GatewayServer, store: GatewayStore
) -> None:
    barrier = threading.Barrier(20)
    results: list[GatewayRefund | GatewayError] = []

    def post() -> None:
        refund_client = RefundClient(API_KEY, server.url, max_network_retries=5)
        barrier.wait()
        try:
            results.append(refund_client.refund(_request(key="same")))
        except GatewayError as exc:  # only "in use" may survive the retries
            results.append(exc)
        refund_client.close()

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _refund_rows(store) == 1
    assert _refunded(store) == 1000
    refunds_seen = {r.gateway_refund_id for r in results if isinstance(r, GatewayRefund)}
    errors = {r.code for r in results if isinstance(r, GatewayError)}
    assert len(refunds_seen) == 1 and errors <= {"idempotency_key_in_use"}


def test_key_older_than_retention_is_purged_and_no_longer_replays(
    client: RefundClient, store: GatewayStore
) -> None:
    first = client.refund(_request(key="old"))
    _age_key(store, "old", DEFAULT_RETENTION_S + 60)
    second = client.refund(_request(key="old"))
    assert second.gateway_refund_id != first.gateway_refund_id
    assert _refund_rows(store) == 2


def test_key_younger_than_24_hours_still_replays(client: RefundClient, store: GatewayStore) -> None:
    first = client.refund(_request(key="recent"))
    _age_key(store, "recent", 23.9 * 3600)
    assert client.refund(_request(key="recent")) == first
    assert _refund_rows(store) == 1


def test_first_error_response_is_replayed(client: RefundClient, store: GatewayStore) -> None:
    error = _gateway_error(client, _request(charge_ref="ch_late", key="late"))
    assert error.code == "resource_missing"
    store.ensure_charge("ch_late", 5000, "usd")
    replayed = _gateway_error(client, _request(charge_ref="ch_late", key="late"))
    assert (replayed.code, replayed.status) == ("resource_missing", 404)
    assert client.refund(_request(charge_ref="ch_late", key="fresh")).charge_ref == "ch_late"


def test_idempotency_key_is_mandatory() -> None:
    with pytest.raises(ValueError, match="idempotency key"):
        RefundRequest("ch_1", Decimal("1.00"), "usd", "  ")


def test_sub_cent_amount_is_refused_before_any_call(client: RefundClient) -> None:
    with pytest.raises(ValueError, match="more than 2 decimal places"):
        client.refund(_request(amount="1.005"))


def test_unreachable_gateway_is_a_gateway_error(tmp_path: Path) -> None:
    with GatewayServer(f"sqlite:///{tmp_path}/gone.db", api_key=API_KEY) as gone:
        url = gone.url
    error = _gateway_error(RefundClient(API_KEY, url, max_network_retries=0), _request())
    assert (error.code, error.status) == ("api_connection_error", None)
