"""The non-agentic refund worker: verify the token, call the gateway, record the ledger.

No model is involved here. The three exactly-once layers (payments/layers.py) meet here:

- ledger: a recorded refund is never asked for again, and a call is claimed in the ledger's
  write-ahead table before it is made; finding a claim of a worker that died means "look the
  refund up at the gateway first";
- gateway idempotency: every call carries `{ticket_key}:{payment_id}`, so the gateway replays
  an earlier refund instead of making another (switched off, each attempt sends a random key
  and nothing is retried blindly);
- cache: the orchestrator runs this step at most once per ticket key, and tells it
  (`recovering`) when an earlier attempt may have called the gateway before dying.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace
from decimal import Decimal

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from billing_recon.domain.approval import verify_token
from billing_recon.domain.fsm import State
from billing_recon.domain.proposal import PaymentRefund, Proposal
from billing_recon.domain.refund_status import UNDONE, RefundStatus, parse
from billing_recon.domain.ticket_key import refund_idempotency_key
from billing_recon.errors import ConcurrentTransition, GatewayRejected, InvalidApprovalToken
from billing_recon.payments.layers import Layer
from billing_recon.payments.refunds import RefundClient, RefundRequest
from billing_recon.steps import approval_gate, money_owed
from billing_recon.steps.approver_identity import codes_required
from billing_recon.steps.deps import Deps
from billing_recon.steps.refund_outcome import Answer, RefundOutcome
from billing_recon.store import commitments, ledger, tickets
from billing_recon.store.models import Ticket

BUSY_POLL_S = 0.2
_PAST_APPROVED = {State.REFUNDED.value, State.CLOSED.value}


def authorised_proposal(deps: Deps, ticket: Ticket) -> Proposal:
    """The proposal exactly as made and approved, or InvalidApprovalToken."""
    proposal = Proposal.model_validate(ticket.proposal)
    digest = proposal.hash()
    name = tickets.format_ticket_id(ticket.id)
    if digest != ticket.proposal_hash:
        raise InvalidApprovalToken(f"{name}: the proposal changed after it was approved")
    if not approval_gate.sealed(deps, ticket):
        raise InvalidApprovalToken(f"{name}: the proposal does not match its MAC (changed "
                                   "outside billing-recon)")
    approvals = approval_gate.approvals_on(deps, ticket.id, digest)
    approvers = sorted({a.approver for a in approvals})
    if not verify_token(deps.settings.signing_key(), ticket.approval_token,
                        ticket.ticket_key or "", digest, approvers):
        raise InvalidApprovalToken(f"{name}: no valid approval token for this proposal")
    required = approval_gate.required_approvals(ticket.proposal)
    if len(approvers) < required:  # four-eyes: a token over one approver is not enough
        raise InvalidApprovalToken(f"{name}: {required} different approvers must approve, "
                                   f"not {len(approvers)}")
    if codes_required(deps) and not all(a.code_verified for a in approvals):
        raise InvalidApprovalToken(f"{name}: an approval without a verified one-time code")
    return proposal


def _engine(deps: Deps) -> Engine:
    engine: Engine = deps.sessions.kw["bind"]
    return engine


def _recorded(deps: Deps, key: str) -> Answer | None:
    with deps.sessions() as session:
        row = ledger.find(session, key)
    if row is None:
        return None
    return Answer(gateway_refund_id=row.gateway_refund_id or row.refund_id,
                  refunded_at=row.refunded_at, status=row.status,
                  failure_reason=row.failure_reason)


def execute_refund(deps: Deps, ticket_id: int, actor: str, *,
                   recovering: bool = False) -> list[RefundOutcome]:
    """One gateway refund per (ticket, payment), each under its idempotency key.

    ``recovering``: an earlier attempt of this step may have reached the gateway and died, so
    each refund is looked up there before it is asked for.
    """
    ticket = tickets.get(deps.sessions, ticket_id)
    if ticket.state in _PAST_APPROVED:
        return []  # another run refunded it meanwhile; record_refunds leaves it as it is
    if ticket.state != State.APPROVED.value:
        raise InvalidApprovalToken(f"{tickets.format_ticket_id(ticket_id)} is {ticket.state}, "
                                   "not APPROVED")
    proposal = authorised_proposal(deps, ticket)
    commitments.prepare(_engine(deps))
    with deps.sessions() as session:
        expected = money_owed.rederive(session, ticket, proposal)
    tickets.note(deps.sessions, ticket_id, "refund_worker_started", actor,
                 {"proposal_hash": ticket.proposal_hash, "recovering": recovering})
    client = deps.refund_client()
    try:
        made = [_refund_payment(deps, client, Call(ticket, proposal, refund.currency, pay,
                                                   expected[pay.invoice_id]), recovering)
                for refund in proposal.refunds for pay in refund.payments]
        return [_with_status(client, outcome) for outcome in made]
    finally:
        client.close()


def _with_status(client: RefundClient, outcome: RefundOutcome) -> RefundOutcome:
    """The outcome with the refund's status: an answer adopted from a claim has none yet."""
    if outcome.status is not None:
        return outcome
    now = client.retrieve_refund(outcome.gateway_refund_id)
    return outcome.model_copy(update={"status": now.status,
                                      "failure_reason": now.failure_reason})


def refund_attempt(deps: Deps, ticket_id: int) -> int:
    """How many of the ticket's refunds failed or were canceled: a retry's attempt number
    (part of the refund step's cache key, so a retry is not answered from the first one)."""
    with deps.sessions() as session:
        return sum(r.status in UNDONE for r in ledger.of_ticket(session, ticket_id))


@dataclass(frozen=True)
class Call:
    """One gateway call to make: the ticket, its approved proposal, the payment to refund and
    the expected total of the payment's invoice under the trusted rules."""

    ticket: Ticket
    proposal: Proposal
    currency: str
    pay: PaymentRefund
    expected_total: Decimal
    attempt: int = 0

    def outcome(self, key: str, answer: Answer) -> RefundOutcome:
        """The refund this call made (or found) on the payment."""
        return RefundOutcome(payment_id=self.pay.payment_id, amount=self.pay.amount,
                             currency=self.currency, idempotency_key=key,
                             **answer.model_dump())

    def guard(self, conn: Connection) -> None:
        """The invariant of money owed, checked under the customer's lock in ``conn``'s
        transaction, immediately before the call is claimed."""
        with Session(bind=conn) as session:
            money_owed.check_call(session, self.ticket, self.proposal, self.pay,
                                  self.expected_total)


def _refund_payment(deps: Deps, client: RefundClient, call: Call,
                    recovering: bool) -> RefundOutcome:
    ticket, pay = call.ticket, call.pay
    with deps.sessions() as session:  # a retry after a failed refund is a new request
        attempt = ledger.failed_attempts(session, ticket.id, pay.payment_id)
    key = refund_idempotency_key(ticket.ticket_key or "", pay.payment_id, attempt)
    call = replace(call, attempt=attempt)
    deps.switches.crash_point("refund.before_payment")
    if not deps.switches.on(Layer.LEDGER):
        with _engine(deps).begin() as conn:  # no write-ahead claim: the check alone
            call.guard(conn)
        return call.outcome(key, _lookup_or_call(deps, client, call, key, recovering))
    holder = secrets.token_hex(8)
    claimed = _claim(deps, call, key, holder)
    if claimed.answer is not None:
        return call.outcome(key, claimed.answer)
    try:
        answer = _lookup_or_call(deps, client, call, key, recovering or claimed.look_up_first)
    except GatewayRejected:
        ledger.release_call(_engine(deps), key, holder)  # a 4xx created nothing
        raise
    ledger.finish_call(_engine(deps), key, answer.gateway_refund_id)
    deps.switches.crash_point("refund.after_ledger_call")
    return call.outcome(key, answer)


@dataclass(frozen=True)
class Claimed:
    """What claiming a call found: the refund already answered, or the call is ours to make
    (after looking it up at the gateway when a dead worker's claim was taken over)."""

    answer: Answer | None = None
    look_up_first: bool = False


def _claim(deps: Deps, call: Call, key: str, holder: str) -> Claimed:
    lease = deps.settings.orchestration.refund_lease_s
    while True:
        recorded = _recorded(deps, key)
        if recorded is not None:
            return Claimed(recorded)
        claim = ledger.claim_call(_engine(deps), key, ticket_id=call.ticket.id,
                                  payment_id=call.pay.payment_id, holder=holder, lease_s=lease,
                                  guard=call.guard)
        if claim.status == "done" and claim.gateway_refund_id is not None:
            return Claimed(Answer.now(claim.gateway_refund_id))
        if claim.status in ("new", "stale"):
            return Claimed(look_up_first=claim.status == "stale")
        time.sleep(BUSY_POLL_S)  # a live worker is calling: wait for its answer or its lease


def _lookup_or_call(deps: Deps, client: RefundClient, call: Call, key: str,
                    lookup: bool) -> Answer:
    ticket, pay = call.ticket, call.pay
    if lookup:
        found = client.find_refund(pay.charge_ref or "", _metadata(call))
        if found is not None:
            tickets.note(deps.sessions, ticket.id, "gateway_refund_found", "refund_worker",
                         {"payment_id": pay.payment_id,
                          "gateway_refund_id": found.gateway_refund_id})
            return Answer.now(found.gateway_refund_id, found)
    return _call(deps, client, call, key)


def _metadata(call: Call) -> dict[str, str]:
    ticket = call.ticket
    labels = {"ticket": tickets.format_ticket_id(ticket.id),
              "ticket_key": ticket.ticket_key or "", "payment_id": call.pay.payment_id}
    # A retry's refund is told apart from the failed one it replaces (both name the payment).
    return labels if call.attempt == 0 else {**labels, "attempt": str(call.attempt)}


def _call(deps: Deps, client: RefundClient, call: Call, key: str) -> Answer:
    ticket, pay = call.ticket, call.pay
    idempotent = deps.switches.on(Layer.GATEWAY_IDEMPOTENCY)
    # Without the gateway layer each attempt is a new request to the gateway: a random key,
    # and no blind retry that could repeat a refund the gateway already made.
    sent_key = key if idempotent else f"{key}:{secrets.token_hex(8)}"
    try:
        request = RefundRequest(charge_ref=pay.charge_ref or "", amount=pay.amount,
                                currency=call.currency, idempotency_key=sent_key,
                                metadata=_metadata(call))
    except ValueError as exc:  # an unknown currency, an amount finer than it allows: unsent
        raise GatewayRejected(str(exc), code="amount_not_sendable", status=None) from exc
    deps.switches.crash_point("refund.before_call")
    result = client.refund(request, retry=idempotent)
    deps.switches.crash_point("refund.after_call")
    tickets.note(deps.sessions, ticket.id, "gateway_refund", "refund_worker",
                 {"payment_id": pay.payment_id, "idempotency_key": key,
                  "gateway_refund_id": result.gateway_refund_id, "amount": str(result.amount),
                  "status": result.status})
    return Answer.now(result.gateway_refund_id, result)


def record_refunds(deps: Deps, ticket_id: int, results: list[RefundOutcome],
                   actor: str) -> Ticket:
    """Ledger rows and APPROVED -> REFUNDED in one transaction (idempotent per key)."""
    deps.switches.crash_point("refund.before_record")
    ticket = tickets.get(deps.sessions, ticket_id)
    if ticket.state != State.APPROVED.value:
        return ticket

    def write(session: Session, locked: Ticket) -> None:
        # Under the customer's lock: what other tickets hold moves to the ledger atomically.
        commitments.lock_customer(session, locked.customer_id or "")
        for r in results:
            ledger.record(session, idempotency_key=r.idempotency_key, payment_id=r.payment_id,
                          amount=r.amount, currency=r.currency, ticket_id=ticket_id,
                          gateway_refund_id=r.gateway_refund_id, at=r.refunded_at,
                          status=parse(r.status or RefundStatus.PENDING.value),
                          failure_reason=r.failure_reason)

    try:
        done = tickets.transition(deps.sessions, ticket_id, State.REFUNDED, actor=actor,
                                  payload={"refunds": [r.model_dump(mode="json")
                                                       for r in results]}, within=write,
                                  expect=State.APPROVED)
    except ConcurrentTransition:
        # A concurrent run of the same ticket recorded first; its rows are the same refunds.
        current = tickets.get(deps.sessions, ticket_id)
        if current.state not in _PAST_APPROVED:
            raise
        return current
    deps.switches.crash_point("refund.after_record")
    return done
