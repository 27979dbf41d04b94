"""Approver registry: enrolled people, their sealed TOTP secrets, an audit, used codes.

Secrets are sealed here on the way in and opened here on the way out, so no other module
ever sees the stored form or has to remember to encrypt. Every change of the registry appends
an audit row in the same transaction; nothing is ever deleted. One person is one approver:
addresses are compared as mailboxes (domain/addresses.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from billing_recon.domain.addresses import normalise_email
from billing_recon.domain.sealing import SealBroken, seal, unseal
from billing_recon.errors import UserInputError
from billing_recon.store.models import Approver, ApproverAudit, UsedCode
from billing_recon.store.tickets import Sessions

DEMO_ROLE = "demo"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+$")
_REGISTRY_LOCK = 0x62726567  # PostgreSQL advisory lock id of registry changes ("breg")


def _validate(name: str, email: str, role: str) -> None:
    if not _NAME.match(name):
        raise UserInputError(f"approver name {name!r}: use letters, digits and . _ @ - "
                             "(at most 64, no spaces or commas)")
    if not _EMAIL.match(email):
        raise UserInputError(f"approver email {email!r} is not an address")
    if not _ROLE.match(role):
        raise UserInputError(f"role {role!r}: lower-case letters, digits, _ and -")


@contextmanager
def changing(sessions: Sessions) -> Iterator[Session]:
    """A transaction that changes the registry, one at a time: PostgreSQL takes an advisory
    lock, SQLite its write lock at the start. Checks made inside it (an address not enrolled)
    still hold when it commits."""
    with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "sqlite":
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")
        else:
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                            {"key": _REGISTRY_LOCK})
        yield session


def locked_row(session: Session, name: str) -> Approver | None:
    """The approver's row, locked until the transaction ends: PostgreSQL locks the row, SQLite
    takes its write lock (so call it first thing in a fresh transaction)."""
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")
    return session.scalar(select(Approver).where(Approver.name == name).with_for_update())


def _same_person(session: Session, email: str) -> Approver | None:
    mailbox = normalise_email(email)
    return next((row for row in session.scalars(select(Approver))
                 if normalise_email(row.email) == mailbox), None)


def add(sessions: Sessions, key: bytes, *, name: str, email: str, role: str, secret: str,
        actor: str) -> Approver:
    """Enroll an approver (enabled) with the secret sealed under ``key``; audited. One person,
    one approver: a name or a mailbox (``normalise_email``) already enrolled is refused."""
    email = email.strip().lower()
    _validate(name, email, role)
    with changing(sessions) as session:
        if session.scalar(select(Approver.id).where(Approver.name == name)) is not None:
            raise UserInputError(f"approver {name!r} is already registered")
        if (holder := _same_person(session, email)) is not None:
            raise UserInputError(f"{email} is the address of approver {holder.name!r} "
                                 f"({holder.email}): one person, one approver")
        row = Approver(name=name, email=email, role=role, secret_sealed=seal(key, secret),
                       enabled=True)
        session.add(row)
        session.add(ApproverAudit(approver=name, action="add", actor=actor,
                                  details={"email": email, "role": role}))
    return row


def set_enabled(sessions: Sessions, name: str, enabled: bool, actor: str) -> bool:
    """Enable or disable an approver; False (and no audit row) when it already was so."""
    with sessions() as session, session.begin():
        row = session.scalar(select(Approver).where(Approver.name == name).with_for_update())
        if row is None:
            raise UserInputError(f"no approver named {name!r} (billing-recon approvers list)")
        if row.enabled == enabled:
            return False
        row.enabled = enabled
        session.add(ApproverAudit(approver=name, action="enable" if enabled else "disable",
                                  actor=actor, details={}))
    return True


def unlock(sessions: Sessions, name: str, actor: str,
           details: dict[str, Any] | None = None) -> bool:
    """Clear a lockout (wrong codes before it no longer count); False when not locked."""
    with changing(sessions) as session:
        row = session.scalar(select(Approver).where(Approver.name == name).with_for_update())
        if row is None:
            raise UserInputError(f"no approver named {name!r} (billing-recon approvers list)")
        if row.locked_at is None:
            return False
        row.locked_at = None
        session.add(ApproverAudit(approver=name, action="unlock", actor=actor,
                                  details=details or {}))
    return True


def get(sessions: Sessions, name: str) -> Approver | None:
    """The approver called ``name``, if registered."""
    with sessions() as session:
        return session.scalar(select(Approver).where(Approver.name == name))


def find(sessions: Sessions, who: str) -> Approver | None:
    """The approver called ``who``, or else the one whose mailbox ``who`` reaches."""
    with sessions() as session:
        row = session.scalar(select(Approver).where(Approver.name == who.strip()))
        return row if row is not None or "@" not in who else _same_person(session, who)


def emails_of(sessions: Sessions, names: list[str]) -> dict[str, str]:
    """The registered address of each of ``names`` that is enrolled."""
    with sessions() as session:
        rows = session.execute(select(Approver.name, Approver.email).where(
            Approver.name.in_(names)))
        return {name: email for name, email in rows}


def all_approvers(sessions: Sessions) -> list[Approver]:
    """Every registered approver, enabled or not, by name."""
    with sessions() as session:
        return list(session.scalars(select(Approver).order_by(Approver.name)))


def registered(sessions: Sessions) -> bool:
    """Whether anyone was ever enrolled (disabled ones count: disabling all locks decisions)."""
    with sessions() as session:
        return bool(session.scalar(select(func.count(Approver.id))))


def secret_of(key: bytes, approver: Approver) -> str:
    """The approver's plain TOTP secret; UserInputError when ``key`` cannot open it."""
    try:
        return unseal(key, approver.secret_sealed)
    except SealBroken as exc:
        raise UserInputError(f"cannot read the TOTP secret of {approver.name!r}: the approver "
                             "key (BILLING_RECON_APPROVER_KEY or approvers.key) is not the one "
                             "it was enrolled with; re-enroll the approver") from exc


def audit(sessions: Sessions, name: str | None = None) -> list[ApproverAudit]:
    """The registry's history, oldest first (optionally of one approver)."""
    with sessions() as session:
        query = select(ApproverAudit).order_by(ApproverAudit.id)
        if name is not None:
            query = query.where(ApproverAudit.approver == name)
        return list(session.scalars(query))


def use_code(session: Session, approver: str, ticket_id: int, step: int) -> None:
    """Record a code's decision on a ticket inside the caller's transaction; IntegrityError
    when it already decided this ticket."""
    session.add(UsedCode(approver=approver, ticket_id=ticket_id, step=step))
    session.flush()


def code_used(sessions: Sessions, approver: str, ticket_id: int, step: int) -> bool:
    """Whether this approver's code of this time step already counted on this ticket."""
    with sessions() as session:
        return session.scalar(select(UsedCode.id).where(
            UsedCode.approver == approver, UsedCode.ticket_id == ticket_id,
            UsedCode.step == step)) is not None

