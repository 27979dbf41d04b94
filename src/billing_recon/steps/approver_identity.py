"""Who is deciding: a registered, enabled approver proven by a one-time code (issue 8).

Two regimes. With nobody enrolled and BILLING_RECON_REQUIRE_CODE unset, the embedded default
of SPEC §6 holds (names on the configured list, no code) so a first run works. Once anyone is
enrolled, or with the production switch on, only enrolled, enabled approvers with a verified
code count. Every refusal is an ApprovalRefused whose message never contains the code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select

from billing_recon.domain import totp
from billing_recon.domain.addresses import normalise_email
from billing_recon.errors import ApprovalRefused, UserInputError
from billing_recon.steps.deps import Deps
from billing_recon.store import approvers
from billing_recon.store.models import Approver, Customer, Ticket
from billing_recon.store.tickets import format_ticket_id


@dataclass(frozen=True)
class Identity:
    """A person allowed to decide; ``step`` is the time step of their verified code."""

    name: str
    step: int | None = None  # None: the embedded default list, no code
    email: str | None = None

    @property
    def verified(self) -> bool:
        """Whether a one-time code proved who this is."""
        return self.step is not None


def codes_required(deps: Deps) -> bool:
    """Whether decisions need an enrolled approver with a verified code."""
    return deps.settings.approval.require_code or approvers.registered(deps.sessions)


def identify(deps: Deps, ticket: Ticket, name: str, code: str,
             at: float | None = None) -> Identity:
    """The decider behind ``name`` and ``code``, or ApprovalRefused saying why not."""
    name = name.strip()
    if not codes_required(deps):
        return _on_default_list(deps, name)
    row = _enrolled(deps, name)
    _check_separation(deps, ticket, row)
    return Identity(row.name, _verify(deps, row, code, time.time() if at is None else at),
                    row.email)


def _on_default_list(deps: Deps, name: str) -> Identity:
    if name not in deps.settings.approval.approvers:
        allowed = ", ".join(deps.settings.approval.approvers) or "nobody"
        raise ApprovalRefused(f"{name!r} is not an approver; approvers: {allowed}")
    return Identity(name)


def _enrolled(deps: Deps, name: str) -> Approver:
    """The enrolled, enabled approver called ``name`` (or reached at that address)."""
    row = approvers.find(deps.sessions, name)
    if row is None:
        hint = ("nobody is enrolled and BILLING_RECON_REQUIRE_CODE is set: enroll with "
                "`billing-recon approvers add`" if not approvers.registered(deps.sessions)
                else "see `billing-recon approvers list`")
        raise ApprovalRefused(f"{name!r} is not an approver: not enrolled ({hint})")
    if not row.enabled:
        raise ApprovalRefused(f"approver {row.name!r} is disabled and cannot decide")
    if row.role == approvers.DEMO_ROLE and deps.settings.approval.require_code:
        raise ApprovalRefused(f"{row.name!r} is a demo approver (its code is printable by "
                              "anyone with the CLI): refused while BILLING_RECON_REQUIRE_CODE "
                              "is set")
    return row


def _check_separation(deps: Deps, ticket: Ticket, row: Approver) -> None:
    """Separation of duties: nobody decides on a refund requested from, or owed to, their own
    mailbox (``normalise_email``: case and +tags do not make another person)."""
    mailboxes = {normalise_email(ticket.sender)}
    if ticket.customer_id:
        with deps.sessions() as session:
            email = session.scalar(select(Customer.email).where(
                Customer.customer_id == ticket.customer_id))
        mailboxes |= {normalise_email(email)} if email else set()
    if normalise_email(row.email) in mailboxes:
        raise ApprovalRefused(f"{row.name!r} cannot decide on {format_ticket_id(ticket.id)}: "
                              "the customer's email is the approver's own (separation of duties)")


def check_second_person(deps: Deps, ticket_name: str, who: Identity,
                        approved_by: list[str]) -> None:
    """Four-eyes means two people: an approver at the mailbox of one who already approved the
    proposal is refused (an old registry may hold one person twice)."""
    if who.email is None or not approved_by:
        return
    mine = normalise_email(who.email)
    for other, email in approvers.emails_of(deps.sessions, approved_by).items():
        if other != who.name and normalise_email(email) == mine:
            raise ApprovalRefused(f"{who.name!r} and {other!r} have the same mailbox ({mine}) "
                                  f"and cannot both approve {ticket_name}: a second, "
                                  "different approver is needed")


def _verify(deps: Deps, row: Approver, code: str, at: float) -> int:
    if not code.strip():
        raise ApprovalRefused(f"{row.name!r}: a one-time code is required (the approver's "
                              "authenticator app; --code on the command line)")
    try:
        secret = approvers.secret_of(deps.settings.approver_key(), row)
    except UserInputError as exc:
        raise ApprovalRefused(str(exc)) from exc
    step = totp.matching_step(secret, code, at)
    if step is None:
        raise ApprovalRefused(f"{row.name!r}: wrong or expired one-time code")
    return step
