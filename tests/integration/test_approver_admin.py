"""Administrators and the approver registry (issue 14, item 3) on SQLite and PostgreSQL:
changes need an administrator's verified code, the first administrator is bootstrapped once,
every change is audited, and addresses are compared as mailboxes (case, +tags)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from billing_recon.domain import totp
from billing_recon.domain.addresses import normalise_email, same_mailbox
from billing_recon.domain.sealing import seal
from billing_recon.errors import ApprovalRefused, UserInputError
from billing_recon.steps import approver_registry
from billing_recon.store import approvers
from billing_recon.store.models import Approver
from billing_recon.store.types import utcnow
from tests.integration.gate_support import Gate, now_code, refused, wrong_code


def _bootstrap(gate: Gate, name: str = "root") -> str:
    secret = totp.new_secret()
    approver_registry.bootstrap_admin(gate.deps, name=name, email=f"{name}@ops.example",
                                      secret=secret, via="cli:test")
    return secret


def _audit(gate: Gate) -> list[tuple[str, str, str, dict[str, object]]]:
    return [(r.approver, r.action, r.actor, r.details)
            for r in approvers.audit(gate.deps.sessions)]


def test_approver_admin_mailboxes_ignore_case_and_plus_tags() -> None:
    assert normalise_email(" Carol+Refunds@Finance.Example ") == "carol@finance.example"
    assert normalise_email("carol@finance.example") == "carol@finance.example"
    assert not same_mailbox("carol@finance.example", "carol@other.example")
    assert normalise_email("+only@x.example") == "+only@x.example"  # no local part to keep


def test_approver_admin_separation_of_duties_compares_mailboxes_not_strings(
        gate: Gate) -> None:
    secret = gate.enroll("carol", email="Carol@Finance.example")
    asked = gate.pending(sender="carol+refunds@finance.example")  # the requester
    refused(gate, asked, "separation of duties", "carol", now_code(secret))
    owed = gate.pending(customer_email="CAROL+billing@finance.example")  # the customer
    refused(gate, owed, "separation of duties", "carol", now_code(secret), approve=False)
    assert gate.decide(gate.pending(), "carol", now_code(secret)).state == "APPROVED"


def test_approver_admin_four_eyes_needs_two_mailboxes(gate: Gate) -> None:
    gate.four_eyes("USD", "5")
    carol, dan = gate.enroll("carol"), gate.enroll("dan")
    twin = totp.new_secret()  # one person enrolled twice before the registry refused it
    with gate.deps.sessions() as s, s.begin():
        s.add(Approver(name="carol2", email="carol+second@finance.example", role="approver",
                       secret_sealed=seal(gate.deps.settings.approver_key(), twin),
                       enabled=True, created_at=utcnow()))
    ticket = gate.pending("6.60")
    assert gate.decide(ticket, "carol", now_code(carol)).state == "APPROVAL_PENDING"
    refused(gate, ticket, "'carol2' and 'carol' have the same mailbox", "carol2", now_code(twin))
    assert gate.decide(ticket, "dan", now_code(dan)).state == "APPROVED"


def test_approver_admin_one_person_is_one_approver_found_by_any_of_their_addresses(
        gate: Gate) -> None:
    gate.enroll("carol", email="carol@finance.example")
    with pytest.raises(UserInputError, match="is the address of approver 'carol'"):
        gate.enroll("carol2", email="Carol+Second@finance.example")
    found = approvers.find(gate.deps.sessions, "CAROL+x@finance.example")
    assert found is not None and found.name == "carol"
    assert approvers.find(gate.deps.sessions, "nobody@finance.example") is None


def test_approver_admin_registry_changes_need_a_verified_administrators_code(
        gate: Gate) -> None:
    root = _bootstrap(gate)
    carol = gate.enroll("carol")
    with pytest.raises(ApprovalRefused, match="'carol' is not an administrator"):
        approver_registry.authorise(gate.deps, "carol", now_code(carol), "cli:mallory", "add")
    with pytest.raises(ApprovalRefused, match="wrong or expired"):
        approver_registry.authorise(gate.deps, "root", wrong_code(root), "cli:mallory", "add")
    code = now_code(root)
    admin = approver_registry.authorise(gate.deps, "root", code, "cli:ops", "add dan")
    approver_registry.enroll(gate.deps, admin, name="dan", email="dan@finance.example",
                             role="admin", secret=totp.new_secret())
    with pytest.raises(ApprovalRefused, match="already used"):  # one code, one command
        approver_registry.authorise(gate.deps, "root", code, "cli:ops", "disable carol")
    again = approver_registry.authorise(gate.deps, "root", now_code(root, 1), "cli:ops", "x")
    assert approver_registry.set_enabled(gate.deps, again, "carol", False)
    assert _audit(gate)[1:] == [
        ("carol", "add", "test", {"email": "carol@finance.example", "role": "approver"}),
        ("root", "wrong_code", "cli:mallory", {"channel": "admin", "command": "add"}),
        ("dan", "add", "root", {"email": "dan@finance.example", "role": "admin",
                                "via": "cli:ops"}),
        ("carol", "disable", "root", {"via": "cli:ops"})]


def test_approver_admin_bootstrap_works_once_even_when_two_race(gate: Gate) -> None:
    start, outcomes = threading.Barrier(2), []

    def bootstrap(name: str) -> None:
        start.wait()
        try:
            _bootstrap(gate, name)
            outcomes.append("admin")
        except UserInputError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=bootstrap, args=(n,)) for n in ("root", "eve")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes)[0] == "admin" and "an administrator exists already" in sorted(
        outcomes)[1]
    with gate.deps.sessions() as s:
        assert len(list(s.scalars(select(Approver).where(Approver.role == "admin")))) == 1
    assert [(a, act, by) for a, act, by, _ in _audit(gate)] in (
        [("root", "bootstrap_admin", "cli:test")], [("eve", "bootstrap_admin", "cli:test")])


def test_approver_admin_bootstrap_promotes_an_enrolled_approver_with_their_own_code(
        gate: Gate) -> None:
    carol = gate.enroll("carol")  # enrolled before administrators existed
    with pytest.raises(UserInputError, match=r"enrolled with carol@finance\.example"):
        approver_registry.bootstrap_admin(gate.deps, name="carol", email="c@x.example",
                                          secret="", via="cli:test", code=now_code(carol))
    with pytest.raises(ApprovalRefused, match="wrong or expired"):
        approver_registry.bootstrap_admin(gate.deps, name="carol", secret="", via="cli:test",
                                          email="carol@finance.example", code=wrong_code(carol))
    done = approver_registry.bootstrap_admin(
        gate.deps, name="carol", email="Carol+Admin@finance.example", secret="", via="cli:t",
        code=now_code(carol))
    assert (done.admin.role, done.secret_enrolled) == ("admin", False)
    assert _audit(gate)[-1] == ("carol", "promote", "cli:t", {"role": "admin", "via": "cli:t"})
    with pytest.raises(UserInputError, match=r"an administrator exists already \(carol\)"):
        _bootstrap(gate)


def test_approver_admin_the_last_enabled_administrator_cannot_be_disabled(gate: Gate) -> None:
    root = _bootstrap(gate)
    admin = approver_registry.authorise(gate.deps, "root", now_code(root), "cli:ops", "x")
    with pytest.raises(UserInputError, match="'root' is the last enabled administrator"):
        approver_registry.set_enabled(gate.deps, admin, "root", False)
    approver_registry.enroll(gate.deps, admin, name="ops", email="ops@ops.example",
                             role="admin", secret=totp.new_secret())
    assert approver_registry.set_enabled(gate.deps, admin, "root", False)
