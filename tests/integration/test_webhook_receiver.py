"""The webhook receiver: signed events from the local gateway (a real process) change refund
statuses and tickets; bad signatures, unknown types, duplicates and stale events change
nothing; an event recorded by a receiver that died is worked on by the next one."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import stripe

from billing_recon import runtime
from billing_recon.domain.fsm import Reason, State
from billing_recon.payments.webhook_server import WebhookServer
from billing_recon.steps import refund_status, refund_worker
from billing_recon.steps.deps import Deps
from billing_recon.steps.webhook_inbox import WebhookInbox
from billing_recon.store import ledger, tickets
from billing_recon.store.models import Ticket, WebhookEvent
from tests.chaos.harness import NO_PREFECT, WEBHOOK_SECRET, Expected, World

Worlds = Callable[..., tuple[World, Deps]]


@pytest.fixture
def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worlds]:
    """A world whose gateway has the given lifecycle and sends events to a receiver here."""
    made: list[tuple[World, WebhookServer | None]] = []

    def build(receiver: bool = True, **lifecycle: str) -> tuple[World, Deps]:
        world = World(tmp_path / f"w{len(made)}", NO_PREFECT,
                      lifecycle={f"BILLING_RECON_GATEWAY_{k.upper()}": v
                                 for k, v in lifecycle.items()})
        for name, value in world.env().items():
            monkeypatch.setenv(name, value)
        runtime.reset()
        deps = runtime.build()
        server = serve(world, deps) if receiver else None
        made.append((world, server))
        return world, deps

    yield build
    for world, server in made:
        if server is not None:
            server.stop()
        world.close()
    runtime.reset()


def serve(world: World, deps: Deps) -> WebhookServer:
    """The receiver on the port the world's gateway sends to."""
    return WebhookServer(WebhookInbox(deps), secret=WEBHOOK_SECRET, tolerance_s=300,
                         port=world.webhook_port).start()


def _refund(deps: Deps, exp: Expected) -> Ticket:
    results = refund_worker.execute_refund(deps, exp.ticket_id, "test")
    refund_worker.record_refunds(deps, exp.ticket_id, results, "test")
    return refund_status.settle_after_refund(deps, exp.ticket_id, "test")


def _until(deps: Deps, ticket_id: int, state: str, timeout: float = 20) -> Ticket:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ticket = tickets.get(deps.sessions, ticket_id)
        if ticket.state == state:
            return ticket
        time.sleep(0.05)
    raise AssertionError(f"ticket stayed {tickets.get(deps.sessions, ticket_id).state}")


def _post(world: World, body: dict[str, object], secret: str | None = WEBHOOK_SECRET,
          at: int | None = None) -> httpx.Response:
    payload = json.dumps(body)
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["Stripe-Signature"] = stripe.WebhookSignature.generate_signature_header(
            payload, secret, at)
    return httpx.post(world.webhook_url, content=payload, headers=headers, trust_env=False)


def _event(refund_id: str, status: str, event_id: str, kind: str = "refund.updated"
           ) -> dict[str, object]:
    return {"id": event_id, "object": "event", "type": kind, "created": int(time.time()),
            "data": {"object": {"id": refund_id, "object": "refund", "status": status}}}


def _events(deps: Deps) -> list[WebhookEvent]:
    with deps.sessions() as session:
        return list(session.query(WebhookEvent).order_by(WebhookEvent.received_at))


def test_webhook_settles_a_pending_refund_and_closes_the_ticket(make: Worlds) -> None:
    world, deps = make(pending_share="1", settle_s="1")
    exp = world.approved_ticket(2)
    assert _refund(deps, exp).state == State.REFUNDED.value  # both pending
    done = _until(deps, exp.ticket_id, State.CLOSED.value)
    assert (done.reason, bool(done.reply)) == (Reason.REFUNDED.value, True)
    changes = tickets.events(deps.sessions, exp.ticket_id, refund_status.EVENT)
    assert [(e.actor, e.payload["to"]) for e in changes] == [("webhook", "succeeded")] * 2
    assert all(e.payload["event_id"].startswith("evt_") for e in changes)


def test_webhook_refund_failed_escalates_the_ticket(make: Worlds) -> None:
    world, deps = make(pending_share="1", failure_share="1", settle_s="1")
    exp = world.approved_ticket(1)
    assert _refund(deps, exp).state == State.REFUNDED.value
    done = _until(deps, exp.ticket_id, State.ESCALATED.value)
    assert done.reason == Reason.REFUND_FAILED.value and done.reply is None
    with deps.sessions() as session:
        [row] = ledger.of_ticket(session, exp.ticket_id)
    assert (row.status, row.failure_reason) == ("failed", "expired_or_canceled_card")


def test_webhook_with_a_bad_missing_or_old_signature_is_refused_and_changes_nothing(
        make: Worlds) -> None:
    world, deps = make(pending_share="1", settle_s="600")
    exp = world.approved_ticket(1)
    _refund(deps, exp)
    [row] = _rows(deps, exp)
    forged = _event(row.refund_id, "failed", "evt_forged")
    for answer in (_post(world, forged, secret="whsec_wrong"), _post(world, forged, None),
                   _post(world, forged, at=int(time.time()) - 3600)):
        assert answer.status_code == 400
    assert [e.event_id for e in _events(deps)] == [e.event_id for e in _events(deps)
                                                  if e.type == "refund.created"]
    assert [r.status for r in _rows(deps, exp)] == ["pending"]


def test_webhook_ignores_event_types_it_does_not_handle(make: Worlds) -> None:
    world, deps = make(receiver=True)
    answer = _post(world, {"id": "evt_other", "object": "event", "type": "charge.succeeded",
                           "data": {"object": {"id": "ch_1", "object": "charge"}}})
    assert answer.status_code == 200 and answer.json()["ignored"] == "charge.succeeded"
    assert "evt_other" not in {e.event_id for e in _events(deps)}


def test_webhook_duplicate_event_changes_nothing(make: Worlds) -> None:
    world, deps = make(pending_share="1", settle_s="1")
    exp = world.approved_ticket(1)
    _refund(deps, exp)
    _until(deps, exp.ticket_id, State.CLOSED.value)
    [row] = _rows(deps, exp)
    again = _event(row.refund_id, "succeeded", "evt_twice")
    first, second = _post(world, again), _post(world, again)
    assert (first.json()["duplicate"], second.json()["duplicate"]) == (False, True)
    assert [e.event_id for e in _events(deps)].count("evt_twice") == 1
    assert len(tickets.events(deps.sessions, exp.ticket_id, refund_status.EVENT)) == 1


def test_webhook_older_event_never_overwrites_a_newer_status(make: Worlds) -> None:
    """An event carries the refund as it was; the receiver re-reads it from the gateway."""
    world, deps = make(pending_share="1", failure_share="1", settle_s="1")
    exp = world.approved_ticket(1)
    _refund(deps, exp)
    _until(deps, exp.ticket_id, State.ESCALATED.value)
    [row] = _rows(deps, exp)
    stale = _event(row.refund_id, "pending", "evt_stale_snapshot", "refund.created")
    assert _post(world, stale).status_code == 200
    deadline = time.monotonic() + 10
    while not any(e.event_id == "evt_stale_snapshot" and e.processed_at for e in _events(deps)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [r.status for r in _rows(deps, exp)] == ["failed"]
    assert [e.payload["to"] for e in tickets.events(deps.sessions, exp.ticket_id,
                                                    refund_status.EVENT)] == ["failed"]


def test_webhook_recorded_by_a_receiver_that_died_is_worked_on_by_the_next(
        make: Worlds) -> None:
    """The 2xx went out after the record; the work did not happen: the next start does it."""
    world, deps = make(receiver=False, pending_share="1", settle_s="0.2")
    exp = world.approved_ticket(1)
    _refund(deps, exp)
    [row] = _rows(deps, exp)
    time.sleep(0.5)  # settled at the gateway; its events wait (nobody listens yet)
    assert WebhookInbox(deps).record("evt_recorded_then_killed", "refund.updated",
                                     row.refund_id)
    server = serve(world, deps)
    try:
        done = _until(deps, exp.ticket_id, State.CLOSED.value)
        assert done.reason == Reason.REFUNDED.value
        [first] = tickets.events(deps.sessions, exp.ticket_id, refund_status.EVENT)
        assert first.payload["event_id"] == "evt_recorded_then_killed"
    finally:
        server.stop()


def _rows(deps: Deps, exp: Expected) -> list[ledger.Refund]:
    with deps.sessions() as session:
        return ledger.of_ticket(session, exp.ticket_id)
