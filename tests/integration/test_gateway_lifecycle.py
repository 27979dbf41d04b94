"""The local gateway plays Stripe after the first answer: pending refunds settle to succeeded
or failed, succeeded ones can fail later, and every change goes out as a signed webhook event,
retried with backoff, sometimes twice, out of order or never. All through the real stripe SDK
(refunds, retrieval, signature verification) against a real gateway on loopback."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import stripe

from billing_recon.payments.gateway_lifecycle import Lifecycle
from billing_recon.payments.gateway_server import GatewayServer
from billing_recon.payments.refunds import GatewayRefund, RefundClient, RefundRequest
from tests.webhook_sink import WebhookSink

API_KEY = "sk_test_lifecycle"
SECRET = "whsec_test_lifecycle"


def _gateway(tmp_path: Path, sink: WebhookSink | None = None, **lifecycle: float
             ) -> GatewayServer:
    server = GatewayServer(f"sqlite:///{tmp_path}/gateway.db", api_key=API_KEY,
                           lifecycle=Lifecycle(**lifecycle),
                           webhook_url=sink.url if sink else None,
                           webhook_secret=SECRET if sink else None).start()
    for n in range(10):
        server.store.ensure_charge(f"ch_{n}", 5000, "usd")
    return server


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    """A recording webhook endpoint."""
    with WebhookSink() as endpoint:
        yield endpoint


def _refund(server: GatewayServer, n: int = 0) -> tuple[RefundClient, GatewayRefund]:
    client = RefundClient(API_KEY, server.url)
    return client, client.refund(RefundRequest(f"ch_{n}", Decimal("12.00"), "usd", f"k{n}"))


def _until(client: RefundClient, refund_id: str, status: str) -> GatewayRefund:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = client.retrieve_refund(refund_id)
        if now.status == status:
            return now
        time.sleep(0.05)
    raise AssertionError(f"{refund_id} never became {status}")


def test_pending_refund_settles_to_succeeded(tmp_path: Path) -> None:
    server = _gateway(tmp_path, pending_share=1.0, settle_s=0.3)
    try:
        client, first = _refund(server)
        assert first.status == "pending"
        assert server.store.get_refund(first.gateway_refund_id)["pending_reason"] == (  # type: ignore[index]
            "processing")
        done = _until(client, first.gateway_refund_id, "succeeded")
        assert done.failure_reason is None
        # Replaying the key answers the first response, as Stripe does: pending.
        again = client.refund(RefundRequest("ch_0", Decimal("12.00"), "usd", "k0"))
        assert (again.gateway_refund_id, again.status) == (first.gateway_refund_id, "pending")
    finally:
        server.stop()


def test_pending_refund_that_fails_gives_the_money_back_to_the_charge(tmp_path: Path) -> None:
    server = _gateway(tmp_path, pending_share=1.0, failure_share=1.0, settle_s=0.2)
    try:
        client, first = _refund(server)
        assert server.store.get_charge("ch_0")["amount_refunded"] == 1200  # type: ignore[index]
        failed = _until(client, first.gateway_refund_id, "failed")
        assert failed.failure_reason == "expired_or_canceled_card"
        stored = server.store.get_refund(first.gateway_refund_id) or {}
        assert str(stored["failure_balance_transaction"]).startswith("txn_")
        assert server.store.get_charge("ch_0")["amount_refunded"] == 0  # type: ignore[index]
    finally:
        server.stop()


def test_a_succeeded_refund_can_fail_later(tmp_path: Path) -> None:
    server = _gateway(tmp_path, late_failure_share=1.0, late_failure_s=0.3)
    try:
        client, first = _refund(server)
        assert first.status == "succeeded"
        late = _until(client, first.gateway_refund_id, "failed")
        assert late.failure_reason == "lost_or_stolen_card"
    finally:
        server.stop()


def test_webhook_events_are_signed_and_verify_with_the_stripe_sdk(
        tmp_path: Path, sink: WebhookSink) -> None:
    server = _gateway(tmp_path, sink, pending_share=1.0, failure_share=1.0, settle_s=0.2)
    try:
        _client, first = _refund(server)
        got = sink.wait_for(4)
        events = [stripe.Webhook.construct_event(r.body, r.signature, SECRET) for r in got]
        assert [e.type for e in events] == ["refund.created", "refund.updated",
                                            "refund.failed", "charge.refund.updated"]
        assert {e.data.object.id for e in events} == {first.gateway_refund_id}
        assert [e.data.object.status for e in events] == ["pending", "failed", "failed",
                                                          "failed"]
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(got[0].body, got[0].signature, "whsec_other")
    finally:
        server.stop()


def test_webhook_delivery_is_retried_with_backoff_until_a_2xx(tmp_path: Path) -> None:
    with WebhookSink(script=[500, 503, 500]) as flaky:
        server = _gateway(tmp_path, flaky, webhook_retry_s=0.2)
        try:
            _refund(server)
            [_done] = flaky.wait_for(1)
            tries = [r.at for r in flaky.received]
            assert [r.answered for r in flaky.received] == [500, 503, 500, 200]
            gaps = [b - a for a, b in itertools.pairwise(tries)]
            assert gaps[2] > gaps[0] * 2.5  # 0.2 s, 0.4 s, 0.8 s
        finally:
            server.stop()


def test_webhook_events_can_come_twice_and_out_of_order(tmp_path: Path, sink: WebhookSink) -> None:
    server = _gateway(tmp_path, sink, webhook_duplicate_share=1.0, webhook_reorder_s=1.0)
    try:
        for n in range(8):  # refund.created for ch_0 ... ch_7, published in that order
            _refund(server, n)
        got = sink.wait_for(16)
        ids = [r.event["id"] for r in got]
        assert len(set(ids)) == 8 and all(ids.count(i) == 2 for i in ids)
        first_arrivals = [r.event["data"]["object"]["charge"] for n, r in enumerate(got)
                          if r.event["id"] not in ids[:n]]
        assert first_arrivals != [f"ch_{n}" for n in range(8)]  # 1 chance in 40320 to fail
    finally:
        server.stop()


def test_lost_webhook_events_are_never_sent_but_the_api_has_the_truth(
        tmp_path: Path, sink: WebhookSink) -> None:
    server = _gateway(tmp_path, sink, pending_share=1.0, settle_s=0.2, webhook_loss_share=1.0)
    try:
        client, first = _refund(server)
        _until(client, first.gateway_refund_id, "succeeded")
        time.sleep(0.5)
        assert sink.received == []
    finally:
        server.stop()
