"""Changes of the approver registry, each authorised by an administrator's verified one-time
code (issue 14); and the explicit, one-time bootstrap of the first administrator.

An administrator is an enrolled, enabled approver with role ``admin`` (who may also decide on
refunds). Their code goes through ``approver_identity.verify_code``, the check every decision
uses: a wrong one counts towards their own lockout, an accepted one is spent (one code, one
command). Every change is an audit row naming the administrator (``actor``), the change, its
target and time, and the operating-system user who ran the command (``via``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from billing_recon.domain.addresses import same_mailbox
from billing_recon.errors import ApprovalRefused, UserInputError
from billing_recon.steps.approver_identity import verify_code
from billing_recon.steps.deps import Deps
from billing_recon.store import approvers
from billing_recon.store.models import Approver


@dataclass(frozen=True)
class Admin:
    """An administrator whose code was verified (and spent) for one command."""

    name: str
    via: str  # the operating-system user who ran the command

    def details(self) -> dict[str, Any]:
        """What the audit row keeps besides the administrator's name."""
        return {"via": self.via}


def authorise(deps: Deps, admin: str, code: str, via: str, command: str) -> Admin:
    """The administrator ``admin`` proven by ``code`` for ``command``, or ApprovalRefused."""
    row = approvers.find(deps.sessions, admin)
    if row is None or row.role != approvers.ADMIN_ROLE:
        hint = (" (no administrator yet: billing-recon approvers bootstrap-admin NAME --email "
                "ADDR)" if not _admin_exists(deps) else "")
        raise ApprovalRefused(f"{admin!r} is not an administrator: changes of the approver "
                              f"registry need one{hint}")
    if not row.enabled:
        raise ApprovalRefused(f"administrator {row.name!r} is disabled")
    verify_code(deps, row, code, actor=via, spend=True,
                context={"channel": "admin", "command": command})
    return Admin(row.name, via)


def _admin_exists(deps: Deps) -> bool:
    with deps.sessions() as session:
        return approvers.admin_exists(session) is not None


def enroll(deps: Deps, admin: Admin, *, name: str, email: str, role: str,
           secret: str) -> Approver:
    """Enroll an approver (one person, one approver); audited as ``add`` by ``admin``."""
    return approvers.add(deps.sessions, deps.settings.approver_key(), name=name, email=email,
                         role=role, secret=secret, actor=admin.name, details=admin.details())


def set_enabled(deps: Deps, admin: Admin, name: str, enabled: bool) -> bool:
    """Enable or disable ``name``; False when it already was so."""
    return approvers.set_enabled(deps.sessions, name, enabled, admin.name, admin.details())


def reset(deps: Deps, admin: Admin, name: str, secret: str) -> Approver:
    """Enroll a new secret for ``name`` (a lost or exposed device)."""
    return approvers.reset_secret(deps.sessions, deps.settings.approver_key(), name, secret,
                                  admin.name, admin.details())


def unlock(deps: Deps, admin: Admin, name: str) -> bool:
    """Lift the lockout of ``name``; False when it was not locked out."""
    return approvers.unlock(deps.sessions, name, admin.name, admin.details())


@dataclass(frozen=True)
class Bootstrapped:
    """The first administrator; ``secret_enrolled``: a new approver whose secret the command
    must hand over (a promoted one keeps the secret their app already has)."""

    admin: Approver
    secret_enrolled: bool


def bootstrap_admin(deps: Deps, *, name: str, email: str, secret: str, via: str,
                    code: str = "") -> Bootstrapped:
    """Make the first administrator, only while there is none.

    A new name is enrolled with role ``admin`` and ``secret``. An enrolled approver's name is
    promoted instead, once they prove themselves with their own ``code`` (checked and spent
    like any other), so one person stays one approver. Audited with ``via`` as the actor.
    """
    _refuse_second(deps)
    existing = approvers.get(deps.sessions, name)
    if existing is None:
        approvers.validate(name, email, approvers.ADMIN_ROLE)
        with approvers.changing(deps.sessions) as session:
            _refuse_second_in(session)
            row = approvers.insert(session, deps.settings.approver_key(), name=name,
                                   email=email, role=approvers.ADMIN_ROLE, secret=secret,
                                   actor=via, action="bootstrap_admin")
        return Bootstrapped(row, secret_enrolled=True)
    _check_promotable(existing, email)
    verify_code(deps, existing, code, actor=via, spend=True,
                context={"channel": "admin", "command": "bootstrap-admin"})
    with approvers.changing(deps.sessions) as session:
        _refuse_second_in(session)
        row = approvers.promote(session, name, via, {"via": via})
    return Bootstrapped(row, secret_enrolled=False)


def _check_promotable(row: Approver, email: str) -> None:
    if not same_mailbox(row.email, email):
        raise UserInputError(f"{row.name!r} is enrolled with {row.email}, not {email}: give "
                             "that address to make this approver the first administrator")
    if not row.enabled or row.role == approvers.DEMO_ROLE:
        raise UserInputError(f"{row.name!r} is {'a demo' if row.enabled else 'a disabled'} "
                             "approver and cannot become an administrator")


def _refuse_second(deps: Deps) -> None:
    with deps.sessions() as session:
        _refuse_second_in(session)


def _refuse_second_in(session: Session) -> None:
    admin = approvers.admin_exists(session)
    if admin is not None:
        raise UserInputError(f"an administrator exists already ({admin}): bootstrap-admin "
                             "works only once; administrators enroll others (approvers add "
                             "NAME --email ADDR --role admin --admin ADMIN)")
