"""Flow process-ticket: one email through the ticket state machine, resumable at any state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from billing_recon.domain.fsm import Reason, State, is_terminal
from billing_recon.domain.ticket_id import TicketId
from billing_recon.errors import (
    BudgetExceeded,
    GatewayRejected,
    GlobalBreakerOpen,
    InvalidApprovalToken,
    ModelUnavailable,
    RefundRefused,
    SandboxUnavailable,
)
from billing_recon.steps.machine import MAX_STEPS, Step, next_step
from billing_recon.store import tickets
from billing_recon.store.models import Ticket
from billing_recon_tasks.approval import wait_for_decision
from billing_recon_tasks.budget import escalate_over_budget, hold_for_breaker
from billing_recon_tasks.events import emit_escalated
from billing_recon_tasks.intake import open_ticket
from billing_recon_tasks.mail import mail_on, send_mail
from billing_recon_tasks.runtime import deps, in_thread

# The tasks of each step are imported when a run first takes that step, not with this module:
# a worker starts a new interpreter for every run it executes (a run resumed after a decision),
# and such a run should not load the triage, retrieval or reconciliation code (pandas, the
# sandbox, the model) it never reaches.


async def _triage(ticket: Ticket) -> object:
    from billing_recon_tasks.intake import triage_email

    return await triage_email(ticket.id)


async def _fetch(ticket: Ticket) -> object:
    from billing_recon_tasks.retrieval import fetch_invoices

    return await fetch_invoices(ticket.id)


async def _reconcile(ticket: Ticket) -> None:
    from billing_recon_tasks.reconcile import reconcile, trip_circuit_breaker, verify_proposal

    try:
        summary = await reconcile(ticket.id)
    except (BudgetExceeded, GlobalBreakerOpen, ModelUnavailable, SandboxUnavailable):
        raise  # the budget and the breaker are the step loop's; an outage fails the run
    except Exception as exc:
        # The 4th failed attempt trips the circuit breaker: no further model call.
        await trip_circuit_breaker(ticket.id, str(exc))
        return
    await verify_proposal(ticket.id, summary)


async def _conclude(ticket: Ticket) -> object:
    from billing_recon_tasks.reconcile import advance_analyzed

    return await advance_analyzed(ticket.id)


async def _refund(ticket: Ticket) -> None:
    from billing_recon_tasks.reconcile import escalate
    from billing_recon_tasks.refund import execute_refund, record_refunds

    ticket_id = ticket.id
    try:
        results = await execute_refund(ticket_id, ticket.ticket_key or "")
    except RefundRefused as exc:  # money owed once: another ticket holds or refunded it
        await escalate(ticket_id, Reason.POLICY_VIOLATION.value,
                       {"error": str(exc), "other_tickets": exc.others, **exc.details})
        return
    except InvalidApprovalToken as exc:
        await escalate(ticket_id, Reason.POLICY_VIOLATION.value, {"error": str(exc)})
        return
    except GatewayRejected as exc:  # unavailable or busy propagate: the ticket stays APPROVED
        await escalate(ticket_id, Reason.POLICY_VIOLATION.value,  # and a re-run replays the keys
                       {"gateway_error": str(exc), "code": exc.code, "status": exc.status})
        return
    await record_refunds(ticket_id, results)


async def _close(ticket: Ticket) -> object:
    from billing_recon_tasks.refund import settle_refunds

    return await settle_refunds(ticket.id)


# The core's table (steps/machine.py) says which step advances a state; this says which
# tasks run it. DECIDE waits for a human and is handled in _step.
STEPS: dict[Step, Callable[[Ticket], Awaitable[object]]] = {
    Step.TRIAGE: _triage,
    Step.FETCH: _fetch,
    Step.RECONCILE: _reconcile,
    Step.CONCLUDE: _conclude,
    Step.REFUND: _refund,
    Step.CLOSE: _close,
}


async def _read(ticket_id: int) -> Ticket:
    return await in_thread(tickets.get, deps().sessions, ticket_id)


async def _step(ticket: Ticket, wait_s: float) -> bool:
    """Advance ``ticket`` (as just read) one state; False when it must wait for a decision or
    for its refunds to settle elsewhere."""
    todo = next_step(State(ticket.state))
    if todo is Step.DECIDE:
        return await wait_for_decision(ticket.id, wait_s)
    if todo is None:
        return True
    done = await STEPS[todo](ticket)
    # A refund still pending: the ticket waits in REFUNDED for the webhook receiver or the
    # sweep to settle it; this run ends.
    return not (todo is Step.CLOSE and done == State.REFUNDED.value)


@flow(name="process-ticket", persist_result=False)
async def process_ticket(
    email_path: str | None = None,
    ticket_id: TicketId | None = None,
    approval_wait_s: float = 3600.0,
) -> dict[str, Any]:
    """Run one ticket from its last committed state until it ends or waits for a decision.

    Give ``email_path`` for a new or re-delivered email, or ``ticket_id`` to resume a ticket.

    Args:
        email_path: Path of an .eml file on the worker; its ticket is opened (or found again,
            for a re-delivered email) and run. Leave empty to resume a ticket instead.
        ticket_id: The ticket to resume or continue, e.g. T-000042; empty with an email.
        approval_wait_s: Seconds a local run waits for a decision before it returns with the
            ticket still pending (a deployed run suspends instead and frees its worker).
    """
    if ticket_id is None:
        if email_path is None:
            raise ValueError("process_ticket needs email_path or ticket_id")
        ticket_id = await open_ticket(email_path)
    ticket = await _read(ticket_id)
    before = ticket.state
    held = await _advance(ticket, approval_wait_s)
    ticket = await _read(ticket_id)
    if ticket.state == State.ESCALATED.value and before != ticket.state:
        emit_escalated(ticket)
    if mail_on() and ticket.state != before:  # its reply or notice, each sent once
        await send_mail()
    get_run_logger().info("%s is %s", tickets.format_ticket_id(ticket_id), ticket.state)
    result = {"ticket_id": tickets.format_ticket_id(ticket_id), "state": ticket.state,
              "reason": ticket.reason}
    return {**result, "waiting": "global_breaker_open"} if held else result


async def _advance(ticket: Ticket, wait_s: float) -> bool:
    """Step ``ticket`` (as just read) until it ends or waits; True when the global breaker
    holds it. The ticket is read once per step, after it (issue 19: it was read twice before
    each step)."""
    ticket_id = ticket.id
    for _ in range(MAX_STEPS):
        if is_terminal(State(ticket.state)):
            return False
        try:
            if not await _step(ticket, wait_s):
                return False
        except BudgetExceeded as exc:  # the refused call was not made
            await escalate_over_budget(ticket_id, str(exc), exc.details)
        except GlobalBreakerOpen as exc:  # the ticket keeps its state; a later run resumes it
            await hold_for_breaker(ticket_id, str(exc), exc.details)
            return True
        ticket = await _read(ticket_id)
    # every step moves the ticket on; this many means a bug, not a slow ticket
    raise RuntimeError(f"{tickets.format_ticket_id(ticket_id)} did not settle")


if __name__ == "__main__":  # python flows/process_ticket.py ... (see flows/local_run.py)
    from billing_recon_flows.local_run import main

    raise SystemExit(main(process_ticket))
