"""Authenticated approvals (issue 8) on SQLite and PostgreSQL: the registry, one-time codes,
replay, separation of duties and four-eyes, down to the refund worker's own check."""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import pytest
from sqlalchemy import select, text, update

from billing_recon.domain.approval import mint_token, verify_token
from billing_recon.errors import InvalidApprovalToken, UserInputError
from billing_recon.steps import approval_gate, presentation, refund_worker
from billing_recon.store import approvers, tickets
from billing_recon.store.models import ApprovalDecision, Ticket
from tests.integration.gate_support import Gate, now_code, refused


def test_without_enrollment_names_decide_with_no_code_and_after_it_only_verified_codes(
        gate: Gate) -> None:
    first = gate.pending()
    assert gate.decide(first, "alice").state == "APPROVED"  # the embedded default
    secret = gate.enroll("carol")
    second = gate.pending()
    refused(gate, second, "'alice' is not an approver: not enrolled", "alice")
    assert gate.decide(second, "carol", now_code(secret)).state == "APPROVED"
    rows = [approval_gate.decisions(gate.deps, t.id)[0] for t in (first, second)]
    assert [(r.approver, r.channel, r.code_verified) for r in rows] == [
        ("alice", "cli", False), ("carol", "cli", True)]


def test_missing_wrong_expired_codes_and_disabled_approvers_are_refused(gate: Gate) -> None:
    secret = gate.enroll("carol")
    ticket = gate.pending()
    refused(gate, ticket, "a one-time code is required", "carol")
    wrong = "000000" if now_code(secret) != "000000" else "111111"
    refused(gate, ticket, "wrong or expired one-time code", "carol", wrong)
    refused(gate, ticket, "wrong or expired one-time code", "carol", now_code(secret, -2))
    assert approvers.set_enabled(gate.deps.sessions, "carol", False, "test")
    refused(gate, ticket, "'carol' is disabled", "carol", now_code(secret))
    assert approval_gate.decisions(gate.deps, ticket.id) == []
    assert approvers.set_enabled(gate.deps.sessions, "carol", True, "test")
    assert gate.decide(ticket, "carol", now_code(secret)).state == "APPROVED"


def test_the_production_switch_refuses_decisions_without_an_enrolled_non_demo_approver(
        gate: Gate) -> None:
    gate.approval(require_code=True)
    ticket = gate.pending()
    refused(gate, ticket, "nobody is enrolled and BILLING_RECON_REQUIRE_CODE is set", "alice")
    demo = gate.enroll("dora", role="demo")
    refused(gate, ticket, "demo approver", "dora", now_code(demo))


def test_an_approver_cannot_decide_on_a_refund_to_their_own_address(gate: Gate) -> None:
    secret = gate.enroll("carol", email="Carol@Example.com")
    own = gate.pending(sender="carol@example.com")
    refused(gate, own, "separation of duties", "carol", now_code(secret), approve=True)
    refused(gate, own, "separation of duties", "carol", now_code(secret), approve=False)
    other = gate.pending()
    assert gate.decide(other, "carol", now_code(secret)).state == "APPROVED"




def test_a_replayed_code_is_refused_the_same_decision_counts_once_and_no_code_is_kept(
        gate: Gate) -> None:
    gate.four_eyes("USD", "5")
    secret = gate.enroll("carol")
    ticket = gate.pending()
    code = now_code(secret)
    assert gate.decide(ticket, "carol", code).state == "APPROVAL_PENDING"  # 1 of 2
    # The CLI resumes the waiting run with the decision it recorded: a repeat, not a second.
    again = approval_gate.decide(gate.deps, ticket.id, approval_gate.Decision(
        True, "carol", ticket.proposal_hash or "", "ui", code=code), "prefect-ui")
    assert (again.ticket.state, again.counted) == ("APPROVAL_PENDING", False)
    assert len(approval_gate.decisions(gate.deps, ticket.id)) == 1
    refused(gate, ticket, "already used", "carol", code, approve=False)
    log = json.dumps([e.payload for e in tickets.events(gate.deps.sessions, ticket.id)])
    assert secret not in log and '"code"' not in log
    with gate.deps.sessions() as s:
        row = s.scalars(select(ApprovalDecision)).one()
    assert code not in [row.approver, row.note, row.channel, row.decision]


def test_four_eyes_refuses_the_same_approver_twice_and_a_second_one_completes(
        gate: Gate) -> None:
    gate.four_eyes("USD", "6.60")  # above, not equal
    carol, dan = gate.enroll("carol"), gate.enroll("dan")
    small = gate.pending("6.60")
    assert gate.decide(small, "dan", now_code(dan)).state == "APPROVED"
    ticket = gate.pending("6.61")
    assert gate.decide(ticket, "carol", now_code(carol)).state == "APPROVAL_PENDING"
    assert [e.payload["approvals"] for e in tickets.events(
        gate.deps.sessions, ticket.id, "approval_recorded")] == [1]
    assert approval_gate.approval_count(gate.deps, tickets.get(gate.deps.sessions, ticket.id)
                                  ).approved_by == ("carol",)
    pending = tickets.get(gate.deps.sessions, ticket.id)
    shown = presentation.proposal_markdown(pending, "billing-recon approve",
                                           approval_gate.approval_count(gate.deps, pending))
    assert "approvals: 1 of 2 (carol)" in shown and "--code CODE" in shown
    refused(gate, ticket, "'carol' has already approved", "carol", now_code(carol, 1))
    done = gate.decide(ticket, "dan", now_code(dan, 1))
    assert done.state == "APPROVED"
    assert verify_token(gate.deps.settings.signing_key(), done.approval_token,
                        done.ticket_key or "", done.proposal_hash or "", ["carol", "dan"])
    results = refund_worker.execute_refund(gate.deps, ticket.id, "test")
    assert [r.amount for r in results] == [Decimal("6.61")] and len(gate.gateway_refunds()) == 1


def test_four_eyes_rejection_by_the_second_approver_moves_no_money(gate: Gate) -> None:
    gate.four_eyes("USD", "5")
    carol, dan = gate.enroll("carol"), gate.enroll("dan")
    ticket = gate.pending("6.60")
    gate.decide(ticket, "carol", now_code(carol))
    assert gate.decide(ticket, "dan", now_code(dan), approve=False).state == (
        "REJECTED_BY_APPROVER")
    with pytest.raises(InvalidApprovalToken, match="not APPROVED"):
        refund_worker.execute_refund(gate.deps, ticket.id, "test")
    assert gate.gateway_refunds() == []


def test_the_refund_worker_wants_two_approvers_above_the_threshold_and_verified_codes(
        gate: Gate) -> None:
    unverified = gate.pending()
    gate.decide(unverified, "alice")  # embedded default: no code; then someone enrolls
    carol = gate.enroll("carol")
    with pytest.raises(InvalidApprovalToken, match="without a verified one-time code"):
        refund_worker.execute_refund(gate.deps, unverified.id, "test")
    gate.four_eyes("USD", "5")
    ticket = gate.pending("6.60")
    gate.decide(ticket, "carol", now_code(carol))
    token = mint_token(gate.deps.settings.signing_key(), ticket.ticket_key or "",
                       ticket.proposal_hash or "", ["carol"])
    with gate.deps.sessions() as s, s.begin():  # a bug or a hand in the database skips dan
        s.execute(update(Ticket).where(Ticket.id == ticket.id).values(
            state="APPROVED", approval_token=token))
    with pytest.raises(InvalidApprovalToken, match="2 different approvers"):
        refund_worker.execute_refund(gate.deps, ticket.id, "test")
    assert gate.gateway_refunds() == []


def test_two_approvers_at_the_same_moment_complete_four_eyes_once(gate: Gate) -> None:
    gate.four_eyes("USD", "5")
    secrets = {name: gate.enroll(name) for name in ("carol", "dan")}
    ticket = gate.pending("6.60")
    start, errors = threading.Barrier(2), []

    def approve(name: str) -> None:
        start.wait()
        try:
            gate.decide(ticket, name, now_code(secrets[name]))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=approve, args=(n,)) for n in secrets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    done = tickets.get(gate.deps.sessions, ticket.id)
    assert done.state == "APPROVED"
    assert approval_gate.approvers_of(gate.deps, ticket.id, done.proposal_hash or "") == [
        "carol", "dan"]


def test_registry_changes_are_audited_and_secrets_sealed_at_rest(gate: Gate) -> None:
    secret = gate.enroll("carol")
    assert approvers.set_enabled(gate.deps.sessions, "carol", False, "cli:root")
    assert not approvers.set_enabled(gate.deps.sessions, "carol", False, "cli:root")
    assert approvers.set_enabled(gate.deps.sessions, "carol", True, "cli:ops")
    with pytest.raises(UserInputError, match="already registered"):
        gate.enroll("carol")
    rows = approvers.audit(gate.deps.sessions)
    assert [(r.approver, r.action, r.actor) for r in rows] == [
        ("carol", "add", "test"), ("carol", "disable", "cli:root"), ("carol", "enable", "cli:ops")]
    assert rows[0].details == {"email": "carol@finance.example", "role": "approver"}
    with gate.deps.sessions() as s:
        stored = s.execute(text("SELECT secret_sealed FROM approvers")).scalar_one()
    row = approvers.get(gate.deps.sessions, "carol")
    assert row is not None and secret not in stored + repr(row) + json.dumps(rows[0].details)
    assert approvers.secret_of(gate.deps.settings.approver_key(), row) == secret
    with pytest.raises(UserInputError, match="re-enroll"):
        approvers.secret_of(b"another key", row)
