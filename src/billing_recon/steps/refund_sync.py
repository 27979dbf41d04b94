"""The sweep for lost webhooks: re-read every refund whose status may still change.

Webhook events can be lost (an endpoint down for longer than Stripe retries, a secret
rotated, a receiver that never ran). ``sync`` retrieves from the gateway every refund of the
ledger that is not final (pending or requires_action, and succeeded ones still within the
late-failure window, ``BILLING_RECON_WEBHOOK_LATE_FAILURE_DAYS``), applies each status and
settles the tickets, with the same effects as the webhook receiver (steps/refund_status.py).
It also settles tickets a crash left behind: REFUNDED ones, and tickets with a failed refund
they were not escalated for. Run by ``billing-recon refunds sync`` and the ``refund-sweep``
deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from billing_recon.domain.fsm import State
from billing_recon.errors import GatewayError
from billing_recon.payments.refunds import RefundClient
from billing_recon.steps import refund_status
from billing_recon.steps.deps import Deps
from billing_recon.store import ledger, tickets
from billing_recon.store.types import utcnow

ACTOR = "sweep"


@dataclass
class SyncReport:
    """What one sweep did: refunds read and changed, tickets moved (ticket id -> new state),
    and refunds it could not read (retried by the next sweep)."""

    checked: int = 0
    changed: int = 0
    moved: dict[int, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def sync(deps: Deps, client: RefundClient, actor: str = ACTOR) -> SyncReport:
    """Apply the gateway's current status of every refund that may still change; settle."""
    report = SyncReport()
    since = utcnow() - timedelta(days=deps.settings.webhooks.late_failure_days)
    with deps.sessions() as session:
        rows = [(r.gateway_refund_id or "", r.ticket_id) for r in ledger.unsettled(session, since)]
        touched = set(ledger.unescalated_failures(session))
    touched |= {t.id for t in tickets.in_state(deps.sessions, State.REFUNDED)}
    for refund_id, ticket_id in rows:
        report.checked += 1
        try:
            refund = client.retrieve_refund(refund_id)
        except GatewayError as exc:
            report.errors.append(f"{refund_id}: {exc}")
            continue
        applied = refund_status.apply(deps, refund, actor=actor)
        if applied is not None and applied.changed:
            report.changed += 1
        if ticket_id is not None:
            touched.add(ticket_id)
    for ticket_id in sorted(touched):
        before = tickets.get(deps.sessions, ticket_id)
        after = refund_status.settle(deps, ticket_id, actor)
        if (after.state, after.reason) != (before.state, before.reason):
            report.moved[ticket_id] = after.state + (f"({after.reason})" if after.reason else "")
    return report


def sync_once(deps: Deps, actor: str = ACTOR) -> SyncReport:
    """One sweep with a client of its own."""
    client = deps.refund_client()
    try:
        return sync(deps, client, actor)
    finally:
        client.close()
