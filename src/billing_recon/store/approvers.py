"""Approver registry: enrolled people, their roles and sealed TOTP secrets, and its audit.

Secrets are sealed here on the way in and opened here on the way out, so no other module
ever sees the stored form or has to remember to encrypt. Every change of the registry appends
an audit row in the same transaction; nothing is ever deleted. Who may make a change (an
administrator with a verified code) is decided by steps/approver_registry.py, not here.
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

APPROVER_ROLE, ADMIN_ROLE, DEMO_ROLE = "approver", "admin", "demo"
ROLES = (APPROVER_ROLE, ADMIN_ROLE, DEMO_ROLE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+$")
_REGISTRY_LOCK = 0x62726567  # PostgreSQL advisory lock id of registry changes ("breg")


def _validate(name: str, email: str, role: str) -> None:
    if not _NAME.match(name):
        raise UserInputError(f"approver name {name!r}: use letters, digits and . _ @ - "
                             "(at most 64, no spaces or commas)")
    if not _EMAIL.match(email):
        raise UserInputError(f"approver email {email!r} is not an address")
    if role not in ROLES:
        raise UserInputError(f"role {role!r}: one of {', '.join(ROLES)}")


def validate(name: str, email: str, role: str) -> None:
    """Refuse a malformed name, address or role before anything is spent on the change."""
    _validate(name, email.strip().lower(), role)


@contextmanager
def changing(sessions: Sessions) -> Iterator[Session]:
    """A transaction that changes the registry, one at a time: PostgreSQL takes an advisory
    lock, SQLite its write lock at the start. Checks made inside it (no administrator yet,
    an address not enrolled) still hold when it commits."""
    with sessions() as session, session.begin():
        _serialise(session)
        yield session


def _serialise(session: Session) -> None:
    """Take the database's write lock first thing in the transaction (SQLite) or a lock of
    the registry's own (PostgreSQL)."""
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")
    else:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _REGISTRY_LOCK})


def locked_row(session: Session, name: str) -> Approver | None:
    """The approver's row, locked until the transaction ends: PostgreSQL locks the row, SQLite
    takes its write lock (so call it first thing in a fresh transaction)."""
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")
    return session.scalar(select(Approver).where(Approver.name == name).with_for_update())


def _audit(session: Session, approver: str, action: str, actor: str,
           details: dict[str, Any]) -> None:
    session.add(ApproverAudit(approver=approver, action=action, actor=actor, details=details))


def _same_person(session: Session, email: str) -> Approver | None:
    mailbox = normalise_email(email)
    return next((row for row in session.scalars(select(Approver))
                 if normalise_email(row.email) == mailbox), None)


def insert(session: Session, key: bytes, *, name: str, email: str, role: str, secret: str,
           actor: str, action: str = "add", details: dict[str, Any] | None = None) -> Approver:
    """Enroll an approver (enabled) inside ``changing``; audited. One person, one approver:
    a name or a mailbox (``normalise_email``) already enrolled is refused."""
    email = email.strip().lower()
    _validate(name, email, role)
    if session.scalar(select(Approver.id).where(Approver.name == name)) is not None:
        raise UserInputError(f"approver {name!r} is already registered")
    if (holder := _same_person(session, email)) is not None:
        raise UserInputError(f"{email} is the address of approver {holder.name!r} "
                             f"({holder.email}): one person, one approver")
    row = Approver(name=name, email=email, role=role, secret_sealed=seal(key, secret),
                   enabled=True)
    session.add(row)
    _audit(session, name, action, actor, {"email": email, "role": role, **(details or {})})
    session.flush()
    return row


def add(sessions: Sessions, key: bytes, *, name: str, email: str, role: str, secret: str,
        actor: str, details: dict[str, Any] | None = None) -> Approver:
    """Enroll an approver in a transaction of its own (see ``insert``)."""
    with changing(sessions) as session:
        return insert(session, key, name=name, email=email, role=role, secret=secret,
                      actor=actor, details=details)


def _target(session: Session, name: str) -> Approver:
    row = session.scalar(select(Approver).where(Approver.name == name).with_for_update())
    if row is None:
        raise UserInputError(f"no approver named {name!r} (billing-recon approvers list)")
    return row


def set_enabled(sessions: Sessions, name: str, enabled: bool, actor: str,
                details: dict[str, Any] | None = None) -> bool:
    """Enable or disable an approver; False (and no audit row) when it already was so.
    The last enabled administrator cannot be disabled: nobody could change the registry."""
    with changing(sessions) as session:
        row = _target(session, name)
        if row.enabled == enabled:
            return False
        if not enabled and row.role == ADMIN_ROLE and _enabled_admins(session) == [name]:
            raise UserInputError(f"{name!r} is the last enabled administrator: enroll another "
                                 "one (approvers add NAME --role admin) before disabling it")
        row.enabled = enabled
        _audit(session, name, "enable" if enabled else "disable", actor, details or {})
    return True


def reset_secret(sessions: Sessions, key: bytes, name: str, secret: str, actor: str,
                 details: dict[str, Any] | None = None) -> Approver:
    """Give an approver a new TOTP secret (a lost or exposed device); audited."""
    with changing(sessions) as session:
        row = _target(session, name)
        row.secret_sealed = seal(key, secret)
        _audit(session, name, "reset", actor, details or {})
    return row


def unlock(sessions: Sessions, name: str, actor: str,
           details: dict[str, Any] | None = None) -> bool:
    """Clear a lockout (wrong codes before it no longer count); False when not locked."""
    with changing(sessions) as session:
        row = _target(session, name)
        if row.locked_at is None:
            return False
        row.locked_at = None
        _audit(session, name, "unlock", actor, details or {})
    return True


def promote(session: Session, name: str, actor: str, details: dict[str, Any]) -> Approver:
    """Make an enrolled approver an administrator, inside ``changing``; audited."""
    row = _target(session, name)
    row.role = ADMIN_ROLE
    _audit(session, name, "promote", actor, {"role": ADMIN_ROLE, **details})
    return row


def _enabled_admins(session: Session) -> list[str]:
    return list(session.scalars(select(Approver.name).where(
        Approver.role == ADMIN_ROLE, Approver.enabled.is_(True))))


def admin_exists(session: Session) -> str | None:
    """The name of an administrator (enabled or not), if there is one."""
    return session.scalar(select(Approver.name).where(Approver.role == ADMIN_ROLE).limit(1))


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
