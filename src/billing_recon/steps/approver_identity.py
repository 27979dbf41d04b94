"""Who is deciding: a registered, enabled approver proven by a one-time code (issues 8, 14).

Two regimes. With nobody enrolled and BILLING_RECON_REQUIRE_CODE unset, the embedded default
of SPEC §6 holds (names on the configured list, no code) so a first run works. Once anyone is
enrolled, or with the production switch on, only enrolled, enabled approvers with a verified
code count. A code is checked by ``verify_code`` alone, whatever it is for (a decision in the
CLI or the UI, a change of the registry): wrong ones count towards a lockout, and an accepted
one is spent once per approver and time step (store/code_attempts.py). Every refusal is an
ApprovalRefused whose message never contains the code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from billing_recon.domain import totp
from billing_recon.domain.addresses import normalise_email
from billing_recon.errors import ApprovalRefused, ApproverLocked, UserInputError
from billing_recon.steps.deps import Deps
from billing_recon.store import approvers, code_attempts
from billing_recon.store.models import Approver, Customer, Ticket
from billing_recon.store.tickets import format_ticket_id


@dataclass(frozen=True)
class Identity:
    """A person allowed to decide; ``step`` is the time step of their verified code.

    ``spent``: the code was spent when the identity was proven (``prove``, once for a whole
    command); otherwise the decision spends it with its own record.
    """

    name: str
    step: int | None = None  # None: the embedded default list, no code
    email: str | None = None
    spent: bool = False

    @property
    def verified(self) -> bool:
        """Whether a one-time code proved who this is."""
        return self.step is not None


def codes_required(deps: Deps) -> bool:
    """Whether decisions need an enrolled approver with a verified code."""
    return deps.settings.approval.require_code or approvers.registered(deps.sessions)


def identify(deps: Deps, ticket: Ticket, name: str, code: str, actor: str = "decision",
             at: float | None = None, proof: Identity | None = None) -> Identity:
    """The decider behind ``name`` and ``code`` (or an identity ``prove`` made for the whole
    command), or ApprovalRefused saying why not; ``actor`` submitted it (the audit's)."""
    name = name.strip()
    if not codes_required(deps):
        return _on_default_list(deps, name)
    row = enrolled(deps, name)
    _check_separation(deps, ticket, row)
    if proof is not None:
        if proof.name != row.name:
            raise ValueError(f"the proof is {proof.name!r}'s, the decision {row.name!r}'s")
        if not proof.spent:  # proven on the default list; someone was enrolled since
            raise ApprovalRefused(f"{row.name!r}: approvers were enrolled meanwhile; decide "
                                  "again with a one-time code")
        return proof
    step = verify_code(deps, row, code, actor=actor, spend=False,
                       context={"ticket": format_ticket_id(ticket.id)}, at=at)
    return Identity(row.name, step, row.email)


def prove(deps: Deps, name: str, code: str, actor: str, context: dict[str, Any],
          at: float | None = None) -> Identity:
    """Check the approver's code once for a command deciding one or several tickets, and spend
    it: the command's decisions all count under this one use (``identify(..., proof=)``)."""
    name = name.strip()
    if not codes_required(deps):
        return _on_default_list(deps, name)
    row = enrolled(deps, name)
    step = verify_code(deps, row, code, actor=actor, spend=True, context=context, at=at)
    return Identity(row.name, step, row.email, spent=True)


def _on_default_list(deps: Deps, name: str) -> Identity:
    if name not in deps.settings.approval.approvers:
        allowed = ", ".join(deps.settings.approval.approvers) or "nobody"
        raise ApprovalRefused(f"{name!r} is not an approver; approvers: {allowed}")
    return Identity(name)


def enrolled(deps: Deps, name: str) -> Approver:
    """The enrolled, enabled approver called ``name`` (or reached at that address)."""
    row = approvers.find(deps.sessions, name)
    if row is None:
        hint = ("nobody is enrolled and BILLING_RECON_REQUIRE_CODE is set: see `billing-recon "
                "approvers bootstrap-admin`" if not approvers.registered(deps.sessions)
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


def verify_code(deps: Deps, row: Approver, code: str, *, actor: str, spend: bool,
                context: dict[str, Any], at: float | None = None) -> int:
    """The time step of the approver's ``code``, checked under the rate limit (and spent when
    ``spend``), or ApprovalRefused (ApproverLocked when locked out) saying why not."""
    if not code.strip():
        raise ApprovalRefused(f"{row.name!r}: a one-time code is required (the approver's "
                              "authenticator app; --code on the command line)")
    policy = deps.settings.approval
    key = deps.settings.approver_key()
    try:
        found = code_attempts.check(
            deps.sessions, row.name, lambda current: approvers.secret_of(key, current), code,
            time.time() if at is None else at,
            code_attempts.Limit(policy.max_wrong_codes, policy.wrong_code_window_s),
            spend=spend, actor=actor, context=context)
    except UserInputError as exc:  # the approver key cannot open the secret
        raise ApprovalRefused(str(exc)) from exc
    if found.outcome == "accepted" and found.step is not None:
        return found.step
    raise _refusal(deps, row.name, found)


def _refusal(deps: Deps, name: str, found: code_attempts.Check) -> ApprovalRefused:
    unlock = (f"an administrator unlocks it: billing-recon approvers unlock {name} "
              "--admin ADMIN")
    window = f"{deps.settings.approval.wrong_code_window_s:g} s"
    if found.outcome == "locked":
        return ApproverLocked(name, f"{name!r} is locked out after too many wrong one-time "
                              f"codes; {unlock}")
    if found.locked_now:
        return ApproverLocked(name, f"{name!r}: wrong or expired one-time code, the "
                              f"{found.wrong_codes}th within {window}: {name!r} is now "
                              f"locked out; {unlock}")
    if found.outcome in ("spent", "late"):
        return ApprovalRefused(f"{name!r}: this one-time code was already used; wait for the "
                               f"next one (a code counts once, every {totp.STEP_S} s)")
    if found.outcome == "unknown":
        return ApprovalRefused(f"{name!r} is not an approver: not enrolled")
    return ApprovalRefused(f"{name!r}: wrong or expired one-time code")
