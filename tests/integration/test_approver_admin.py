"""The approver registry (issue 14, item 3) on SQLite and PostgreSQL: addresses are compared
as mailboxes (case, +tags) for separation of duties, four-eyes and enrolment."""

from __future__ import annotations

import pytest

from billing_recon.domain import totp
from billing_recon.domain.addresses import normalise_email, same_mailbox
from billing_recon.domain.sealing import seal
from billing_recon.errors import UserInputError
from billing_recon.store import approvers
from billing_recon.store.models import Approver
from billing_recon.store.types import utcnow
from tests.integration.gate_support import Gate, now_code, refused


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
