"""The webhook receiver's work: record each verified event once, then act on it after answering.

``record`` runs before the receiver answers 2xx: the event id is written to ``webhook_events``
(a duplicate id changes nothing and is answered 2xx too). A worker thread then ``drain``s the
events not processed yet, oldest first: it re-reads the refund from the gateway's API (an event
carries the refund as it was when it was sent, possibly before a newer one: Stripe advises
re-reading), applies the status and settles the ticket exactly as the sweep does
(steps/refund_status.py). A receiver killed after recording finds the event again at its next
start; one killed before recording never answered, so the gateway sends the event again.

An event about a refund the ledger does not hold yet (the worker records its refunds a moment
after the gateway answers them) is tried again on later drains, then left to the sweep.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from billing_recon.errors import GatewayError
from billing_recon.payments.refunds import RefundClient
from billing_recon.steps import refund_status
from billing_recon.steps.deps import Deps
from billing_recon.store.models import WebhookEvent
from billing_recon.store.types import utcnow

log = logging.getLogger(__name__)
ACTOR = "webhook"
RETRY_S = 1.0
MAX_ATTEMPTS = 30  # about half a minute of drains for a refund not in the ledger yet


class WebhookInbox:
    """Received events of one process: recorded at once, worked on by a daemon thread."""

    def __init__(self, deps: Deps) -> None:
        """Nothing runs until ``start()``."""
        self.deps = deps
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="webhook-inbox", daemon=True)

    def record(self, event_id: str, event_type: str, refund_id: str | None) -> bool:
        """Store a verified event before it is answered; False for a duplicate id."""
        self.deps.switches.crash_point("webhook.before_record")
        try:
            with self.deps.sessions() as session, session.begin():
                session.add(WebhookEvent(event_id=event_id, type=event_type,
                                         refund_id=refund_id, received_at=utcnow()))
        except IntegrityError:
            return False
        self.deps.switches.crash_point("webhook.after_record")
        return True

    def wake(self) -> None:
        """Have the worker drain now."""
        self._wake.set()

    def start(self) -> WebhookInbox:
        """Start the worker; it drains what an earlier process left first."""
        self._thread.start()
        self.wake()
        return self

    def stop(self) -> None:
        """Stop the worker (after the event it is on)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(RETRY_S)
            self._wake.clear()
            try:
                self.drain()
            except Exception:  # the database or the gateway is away: the next drain retries
                log.exception("webhook events: processing failed; retrying")

    def drain(self) -> int:
        """Work on every event not processed yet, oldest first; how many were processed."""
        with self._lock, self.deps.sessions() as session:
            waiting = list(session.scalars(select(WebhookEvent).where(
                WebhookEvent.processed_at.is_(None))
                .order_by(WebhookEvent.received_at, WebhookEvent.event_id)))
        if not waiting:
            return 0
        client = self.deps.refund_client()
        try:
            return sum(self._process(client, event) for event in waiting)
        finally:
            client.close()

    def _process(self, client: RefundClient, event: WebhookEvent) -> bool:
        if event.refund_id is None:
            return self._finish(event.event_id, "no refund in the event", utcnow())
        try:
            refund = client.retrieve_refund(event.refund_id)
        except GatewayError as exc:
            return self._retry(event, f"gateway: {exc}")
        applied = refund_status.apply(self.deps, refund, actor=ACTOR, event_id=event.event_id)
        self.deps.switches.crash_point("webhook.after_apply")
        if applied is None or applied.ticket_id is None:
            return self._retry(event, "refund not in the ledger")
        ticket = refund_status.settle(self.deps, applied.ticket_id, ACTOR)
        return self._finish(event.event_id, f"{refund.status}; ticket {ticket.state}", utcnow())

    def _retry(self, event: WebhookEvent, why: str) -> bool:
        if event.attempts + 1 >= MAX_ATTEMPTS:  # the sweep re-reads the ledger's refunds
            return self._finish(event.event_id, f"given up: {why}", utcnow(), attempts=True)
        with self.deps.sessions() as session, session.begin():
            row = session.get(WebhookEvent, event.event_id)
            if row is not None:
                row.attempts, row.outcome = row.attempts + 1, why
        return False

    def _finish(self, event_id: str, outcome: str, at: datetime, attempts: bool = False
                ) -> bool:
        with self.deps.sessions() as session, session.begin():
            row = session.get(WebhookEvent, event_id)
            if row is not None:
                row.processed_at, row.outcome = at, outcome[:200]
                row.attempts += 1 if attempts else 0
        return True
