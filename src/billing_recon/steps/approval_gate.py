"""The approval gate: authenticated decisions bound to the exact proposal, four-eyes, token.

A decision counts only when its approver is identified (steps/approver_identity.py), the
ticket awaits it, and the hash is the current proposal's. Above a currency's four-eyes
threshold two different approvers must approve the same hash: the first approval is recorded
and the ticket keeps waiting; the second mints the token over both. A rejection by anyone
ends it. The code is spent (spent_codes: once per approver and time step, across tickets; a
command deciding several tickets proves it once, see ``identify``'s ``proof``), its decision
on this ticket recorded (used_codes), the decision row written and the ticket moved in one
transaction; a concurrent decision makes the loser judge again on the fresh state. Two
approvals of one proposal need two people: different names and different mailboxes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billing_recon.domain.approval import mint_token, verify_proposal_mac
from billing_recon.domain.fsm import Reason, State
from billing_recon.domain.proposal import Proposal
from billing_recon.errors import ApprovalRefused, ConcurrentTransition, ProposalTampered
from billing_recon.steps.approver_identity import (
    Identity,
    check_second_person,
    codes_required,
    identify,
)
from billing_recon.steps.deps import Deps
from billing_recon.steps.reply import reply_for
from billing_recon.store import approvers, code_attempts, tickets
from billing_recon.store.models import ApprovalDecision, Ticket
from billing_recon.store.types import utcnow

ATTEMPTS = 5  # judging again after a concurrent decision; more means something is stuck
Write = Callable[[Session, Ticket], None]


@dataclass(frozen=True)
class Decision:
    """What an approver submitted, from the CLI or the Prefect UI form."""

    approve: bool
    approver: str
    proposal_hash: str
    channel: str
    note: str = ""
    code: str = field(default="", repr=False)  # one-time code: checked, spent, never logged

    def public(self) -> dict[str, Any]:
        """The decision as it may be logged: everything but the code."""
        return {"approve": self.approve, "approver": self.approver.strip(),
                "proposal_hash": self.proposal_hash.strip(), "channel": self.channel,
                "note": self.note}


@dataclass(frozen=True)
class ApprovalCount:
    """How far a pending proposal is: approvals needed, who approved, whether codes count."""

    required: int
    approved_by: tuple[str, ...]
    codes: bool

    @property
    def four_eyes(self) -> bool:
        """Whether two different approvers are needed."""
        return self.required > 1


def required_approvals(proposal: dict[str, Any] | None) -> int:
    """How many different approvers the proposal's frozen policy asks for.

    The policy was fixed when the proposal was made (steps/money_owed.py: policy_for) and is
    covered by the hash, the MAC and the token: the settings of the process deciding or paying
    play no part. A proposal from before policies were frozen asks for two.
    """
    if not proposal:
        return 1
    policy = Proposal.model_validate(proposal).policy
    return 2 if policy is None else policy.required_approvals


def sealed(deps: Deps, ticket: Ticket) -> bool:
    """Whether the stored proposal is the one the system made: its hash is the SHA-256 of its
    canonical JSON and its MAC verifies with the signing key."""
    if not ticket.proposal or not ticket.proposal_hash:
        return False
    digest = Proposal.model_validate(ticket.proposal).hash()
    return digest == ticket.proposal_hash and verify_proposal_mac(
        deps.settings.signing_key(), ticket.proposal_mac, ticket.ticket_key or "", digest)


def check_decision(deps: Deps, ticket: Ticket, decision: Decision) -> None:
    """Refuse a decision on a ticket not awaiting one, a stale hash or a passed deadline."""
    name = tickets.format_ticket_id(ticket.id)
    if ticket.state != State.APPROVAL_PENDING.value:
        raise ApprovalRefused(f"{name} is {ticket.state}, not awaiting a decision")
    if decision.proposal_hash.strip() != ticket.proposal_hash:
        raise ApprovalRefused(f"{name}: the decision is for proposal {decision.proposal_hash[:12]}"
                              f", but the current proposal is {(ticket.proposal_hash or '')[:12]}")
    if ticket.approval_deadline is not None and utcnow() > ticket.approval_deadline:
        raise ApprovalRefused(f"{name}: the approval deadline has passed")
    if not sealed(deps, ticket):
        raise ProposalTampered(f"{name}: the stored proposal does not match its MAC (changed "
                               "outside billing-recon); the ticket is escalated, nothing is "
                               "refunded")


def _admit(deps: Deps, ticket: Ticket, decision: Decision, actor: str,
           proof: Identity | None) -> Identity | None:
    """Who decides, or None for the same decision submitted again (it counted once)."""
    who = identify(deps, ticket, decision.approver, decision.code, actor, proof=proof)
    check_decision(deps, ticket, decision)
    name = tickets.format_ticket_id(ticket.id)
    here = who.step is not None and approvers.code_used(deps.sessions, who.name, ticket.id,
                                                        who.step)
    before = approvers_of(deps, ticket.id, ticket.proposal_hash or "")
    if decision.approve and who.name in before and (here or not who.verified):
        return None  # e.g. the CLI resuming the waiting run with the decision it recorded
    if here:
        raise ApprovalRefused(f"{who.name!r}: this one-time code was already used on {name}; "
                              "wait for the next one")
    if decision.approve and who.name in before:
        raise ApprovalRefused(f"{who.name!r} has already approved {name}: a second, different "
                              "approver is needed")
    if decision.approve:
        check_second_person(deps, name, who, before)
    if who.step is not None and not who.spent and code_attempts.spent(deps.sessions, who.name,
                                                                      who.step):
        raise ApprovalRefused(f"{who.name!r}: this one-time code was already used; wait for "
                              "the next one (one command may decide several tickets with it)")
    return who


@dataclass(frozen=True)
class Outcome:
    """The ticket after a decision, and whether it counted (False: a repeat of one that did)."""

    ticket: Ticket
    counted: bool


def record_decision(deps: Deps, ticket_id: int, decision: Decision, actor: str,
                    proof: Identity | None = None) -> Ticket:
    """Judge and record a decision (see ``decide``); the ticket after it."""
    return decide(deps, ticket_id, decision, actor, proof).ticket


def decide(deps: Deps, ticket_id: int, decision: Decision, actor: str,
           proof: Identity | None = None) -> Outcome:
    """Judge and record a decision.

    APPROVED (with a minted token) once enough different approvers approved,
    REJECTED_BY_APPROVER on any rejection, else still APPROVAL_PENDING with the approval
    recorded. The same approval submitted again (same code) changes nothing. ``proof``: the
    approver's identity ``approver_identity.prove`` checked (and spent the code for) once for
    the whole command; without it the decision's code is checked and spent here. A refusal is
    logged as ``approval_refused`` and raised as ApprovalRefused.
    """
    for _ in range(ATTEMPTS):
        ticket = tickets.get(deps.sessions, ticket_id)
        try:
            who = _admit(deps, ticket, decision, actor, proof)
        except ProposalTampered as exc:
            tickets.transition(deps.sessions, ticket_id, State.ESCALATED,
                               reason=Reason.POLICY_VIOLATION, actor=actor,
                               payload={**decision.public(), "error": str(exc)},
                               expect=State.APPROVAL_PENDING)
            raise
        except ApprovalRefused as exc:
            tickets.note(deps.sessions, ticket_id, "approval_refused", actor,
                         {**decision.public(), "error": str(exc)})
            raise
        if who is None:
            return Outcome(ticket, counted=False)
        try:
            return Outcome(_record(deps, ticket, decision, who, actor), counted=True)
        except (ConcurrentTransition, IntegrityError):
            continue  # decided, or the code spent, meanwhile: judge again on the fresh state
    raise ConcurrentTransition(f"{tickets.format_ticket_id(ticket_id)}: the decision kept "
                               "racing with others; try again")


def _record(deps: Deps, ticket: Ticket, decision: Decision, who: Identity,
            actor: str) -> Ticket:
    digest = ticket.proposal_hash or ""
    before = approvers_of(deps, ticket.id, digest)
    names = sorted({*before, who.name})
    required = required_approvals(ticket.proposal)
    payload = {**decision.public(), "code_verified": who.verified,
               "decided_at": utcnow().isoformat()}

    def write(session: Session, locked: Ticket) -> None:
        # Under the ticket's lock (and its optimistic version): an approval recorded since
        # our count changes the outcome, so judge again.
        if _approvers_in(session, ticket.id, digest) != before:
            raise ConcurrentTransition(tickets.format_ticket_id(ticket.id))
        if who.step is not None:
            approvers.use_code(session, who.name, ticket.id, who.step)
            if not who.spent:  # spent once for its whole command by prove()
                code_attempts.spend_code(session, who.name, who.step)
        session.add(_row(ticket.id, decision, who))

    if not decision.approve:
        reply = reply_for(deps, ticket, "rejected_by_approver")
        return tickets.transition(deps.sessions, ticket.id, State.REJECTED_BY_APPROVER,
                                  reason=Reason.REJECTED_BY_APPROVER, actor=actor,
                                  payload=payload, fields={"reply": reply}, within=write,
                                  expect=State.APPROVAL_PENDING)
    payload |= {"approvals": len(names), "required": required, "approvers": names}
    if len(names) < required:
        return _record_first(deps, ticket.id, write, actor, payload)
    token = mint_token(deps.settings.signing_key(), ticket.ticket_key or "", digest, names)
    return tickets.transition(deps.sessions, ticket.id, State.APPROVED, actor=actor,
                              payload=payload, fields={"approval_token": token}, within=write,
                              expect=State.APPROVAL_PENDING)


def _record_first(deps: Deps, ticket_id: int, write: Write, actor: str,
                  payload: dict[str, Any]) -> Ticket:
    """An approval that is not yet enough: its row and an event; the ticket keeps waiting."""
    with deps.sessions() as session, session.begin():
        locked = session.get(Ticket, ticket_id, with_for_update=True)
        if locked is None or locked.state != State.APPROVAL_PENDING.value:
            raise ConcurrentTransition(tickets.format_ticket_id(ticket_id))
        write(session, locked)
        tickets.note_within(session, locked, "approval_recorded", actor, payload)
    return tickets.get(deps.sessions, ticket_id)


def _row(ticket_id: int, decision: Decision, who: Identity) -> ApprovalDecision:
    return ApprovalDecision(ticket_id=ticket_id,
                            decision="approve" if decision.approve else "reject",
                            approver=who.name, note=decision.note or None,
                            proposal_hash=decision.proposal_hash.strip(),
                            channel=decision.channel, code_verified=who.verified)


def _approvals_in(session: Session, ticket_id: int,
                  proposal_hash: str) -> list[ApprovalDecision]:
    return list(session.scalars(select(ApprovalDecision).where(
        ApprovalDecision.ticket_id == ticket_id, ApprovalDecision.decision == "approve",
        ApprovalDecision.proposal_hash == proposal_hash).order_by(ApprovalDecision.id)))


def _approvers_in(session: Session, ticket_id: int, proposal_hash: str) -> list[str]:
    return sorted({row.approver for row in _approvals_in(session, ticket_id, proposal_hash)})


def approvals_on(deps: Deps, ticket_id: int, proposal_hash: str) -> list[ApprovalDecision]:
    """The approve decisions recorded on this exact proposal, oldest first."""
    with deps.sessions() as session:
        return _approvals_in(session, ticket_id, proposal_hash)


def approvers_of(deps: Deps, ticket_id: int, proposal_hash: str) -> list[str]:
    """Who approved this exact proposal."""
    with deps.sessions() as session:
        return _approvers_in(session, ticket_id, proposal_hash)


def approval_count(deps: Deps, ticket: Ticket) -> ApprovalCount:
    """Approvals needed and given on the ticket's current proposal."""
    return ApprovalCount(required=required_approvals(ticket.proposal),
                    approved_by=tuple(approvers_of(deps, ticket.id, ticket.proposal_hash or "")),
                    codes=codes_required(deps))


def decisions(deps: Deps, ticket_id: int) -> list[ApprovalDecision]:
    """Every recorded decision of a ticket, oldest first."""
    with deps.sessions() as session:
        return list(session.scalars(select(ApprovalDecision).where(
            ApprovalDecision.ticket_id == ticket_id).order_by(ApprovalDecision.id)))


def expire_if_due(deps: Deps, ticket_id: int, actor: str) -> bool:
    """APPROVAL_PENDING past its deadline -> ESCALATED(approval_timeout)."""
    ticket = tickets.get(deps.sessions, ticket_id)
    due = ticket.approval_deadline is not None and utcnow() > ticket.approval_deadline
    if ticket.state != State.APPROVAL_PENDING.value or not due:
        return False
    tickets.transition(deps.sessions, ticket_id, State.ESCALATED, reason=Reason.APPROVAL_TIMEOUT,
                       actor=actor, payload={"deadline": ticket.approval_deadline.isoformat()
                                             if ticket.approval_deadline else None},
                       expect=State.APPROVAL_PENDING)
    return True
