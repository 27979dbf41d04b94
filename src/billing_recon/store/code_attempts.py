"""One approver's one-time code checked under their row lock: wrong codes counted towards a
lockout, accepted codes spent once per time step (issue 14).

The whole check (locked? which step matches? count, lock, spend) runs in one transaction
holding the approver's row (PostgreSQL ``FOR UPDATE``; SQLite's write lock), so two
processes guessing at once are judged one after the other: neither gets a try the limit did
not leave it. Each wrong code is an ``approver_audit`` row (``wrong_code``); the one that
reaches the limit locks the approver (a ``lockout`` row) until an administrator unlocks it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billing_recon.domain import totp
from billing_recon.store.approvers import locked_row
from billing_recon.store.models import Approver, ApproverAudit, SpentCode
from billing_recon.store.tickets import Sessions
from billing_recon.store.types import utcnow

#: How far back an accepted code is still recognised as such once expired (10 min): sent
#: again late (a resumed run), it is refused as expired but is no guess and does not count.
LATE_STEPS = 20
Outcome = Literal["accepted", "wrong", "locked", "spent", "late", "unknown"]


@dataclass(frozen=True)
class Limit:
    """Wrong codes within a window that lock an approver."""

    wrong_codes: int
    window_s: float


@dataclass(frozen=True)
class Check:
    """What one code check found: the outcome, the matching step, the wrong codes counted in
    the window (this one included) and whether this check locked the approver."""

    outcome: Outcome
    step: int | None = None
    wrong_codes: int = 0
    locked_now: bool = False


def check(sessions: Sessions, name: str, secret_of: Callable[[Approver], str], code: str,
          at: float, limit: Limit, *, spend: bool, actor: str,
          context: dict[str, Any]) -> Check:
    """Check ``code`` for approver ``name`` at Unix time ``at``; ``spend``: an accepted code
    is spent here (refused as ``spent`` when it already was). ``context`` (never the code)
    goes into the audit row of a wrong code."""
    try:
        with sessions() as session, session.begin():
            row = locked_row(session, name)
            if row is None:
                return Check("unknown")
            if row.locked_at is not None:
                return Check("locked")
            secret = secret_of(row)
            step = totp.matching_step(secret, code, at)
            if step is None:
                if _spent_earlier(session, name, secret, code, at):
                    return Check("late")
                return _wrong(session, row, limit, actor, context)
            if spend:
                if _is_spent(session, name, step):
                    return Check("spent", step)
                spend_code(session, name, step)
            return Check("accepted", step)
    except IntegrityError:  # a concurrent decision spent the same step first
        return Check("spent")


def _wrong(session: Session, row: Approver, limit: Limit, actor: str,
           context: dict[str, Any]) -> Check:
    now = utcnow()
    session.add(ApproverAudit(approver=row.name, action="wrong_code", actor=actor,
                              details=context, at=now))
    session.flush()
    since = now - timedelta(seconds=limit.window_s)
    unlocked = _last_unlock(session, row.name)  # wrong codes before an unlock are forgiven
    count = session.scalar(select(func.count(ApproverAudit.id)).where(
        ApproverAudit.approver == row.name, ApproverAudit.action == "wrong_code",
        ApproverAudit.at > max(since, unlocked or since))) or 0
    if count < limit.wrong_codes:
        return Check("wrong", wrong_codes=count)
    row.locked_at = now
    session.add(ApproverAudit(approver=row.name, action="lockout", actor=actor, at=now,
                              details={"wrong_codes": count, "window_s": limit.window_s}))
    return Check("wrong", wrong_codes=count, locked_now=True)


def _last_unlock(session: Session, name: str) -> datetime | None:
    return session.scalar(select(func.max(ApproverAudit.at)).where(
        ApproverAudit.approver == name, ApproverAudit.action == "unlock"))


def _spent_earlier(session: Session, name: str, secret: str, code: str, at: float) -> bool:
    """Whether ``code`` is one this approver had accepted in the last LATE_STEPS steps."""
    now = totp.time_step(at)
    steps = session.scalars(select(SpentCode.step).where(
        SpentCode.approver == name, SpentCode.step >= now - LATE_STEPS, SpentCode.step <= now))
    return any(totp.matching_step(secret, code, step * totp.STEP_S, window=0) == step
               for step in steps)


def _is_spent(session: Session, name: str, step: int) -> bool:
    return session.scalar(select(SpentCode.id).where(
        SpentCode.approver == name, SpentCode.step == step)) is not None


def spend_code(session: Session, name: str, step: int) -> None:
    """Spend the approver's code of ``step`` inside the caller's transaction; IntegrityError
    when it was spent already (by another ticket, command or process)."""
    session.add(SpentCode(approver=name, step=step))
    session.flush()


def spent(sessions: Sessions, name: str, step: int) -> bool:
    """Whether the approver's code of ``step`` was accepted already."""
    with sessions() as session:
        return _is_spent(session, name, step)
