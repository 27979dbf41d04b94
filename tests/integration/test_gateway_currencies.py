"""Every currency at the boundary: refunds in zero- and three-decimal currencies through the
real stripe SDK and the local gateway, and the refusal of a currency the table does not know."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from billing_recon.errors import UnknownCurrency
from billing_recon.payments.gateway_server import GatewayServer
from billing_recon.payments.refunds import RefundClient, RefundRequest

API_KEY = "sk_test_currencies"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayServer]:
    """A local gateway with a yen, a dinar and a dollar charge."""
    with GatewayServer(f"sqlite:///{tmp_path}/gateway.db", api_key=API_KEY) as srv:
        srv.store.ensure_charge("ch_jpy", 1000, "jpy")
        srv.store.ensure_charge("ch_kwd", 10000, "kwd")
        yield srv


@pytest.fixture
def client(gateway: GatewayServer) -> Iterator[RefundClient]:
    """The refund client on the official stripe SDK."""
    made = RefundClient(API_KEY, gateway.url)
    yield made
    made.close()


def test_zero_decimal_refund_is_sent_in_yen_not_hundredths(
        client: RefundClient, gateway: GatewayServer) -> None:
    refund = client.refund(RefundRequest("ch_jpy", Decimal("500"), "JPY", "k-jpy"))
    assert refund.amount == Decimal("500")
    assert gateway.store.get_refund(refund.gateway_refund_id)["amount"] == 500  # type: ignore[index]
    assert gateway.store.get_charge("ch_jpy")["amount_refunded"] == 500  # type: ignore[index]


def test_three_decimal_refund_is_sent_in_thousandths(
        client: RefundClient, gateway: GatewayServer) -> None:
    refund = client.refund(RefundRequest("ch_kwd", Decimal("2.35"), "KWD", "k-kwd"))
    assert refund.amount == Decimal("2.350")
    assert gateway.store.get_refund(refund.gateway_refund_id)["amount"] == 2350  # type: ignore[index]


def test_the_gateway_refuses_a_three_decimal_amount_not_ending_in_zero(
        gateway: GatewayServer) -> None:
    answer = httpx.post(f"{gateway.url}/v1/refunds", trust_env=False,
                        data={"charge": "ch_kwd", "amount": "2355", "currency": "kwd"},
                        headers={"Authorization": f"Bearer {API_KEY}"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_amount"
    assert gateway.store.get_charge("ch_kwd")["amount_refunded"] == 0  # type: ignore[index]


def test_an_unknown_currency_is_refused_before_anything_is_sent(
        client: RefundClient, gateway: GatewayServer) -> None:
    with pytest.raises(UnknownCurrency):
        RefundRequest("ch_jpy", Decimal("5"), "XYZ", "k-xyz")
    answer = httpx.post(f"{gateway.url}/v1/refunds", trust_env=False,
                        data={"charge": "ch_jpy", "amount": "5", "currency": "xyz"},
                        headers={"Authorization": f"Bearer {API_KEY}"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "currency"
    assert client.list_refunds() == []

