"""Exactly once per money owed: overlapping tickets, tampered proposals, frozen policies.

One customer of the sample set (CUST-001, ap@acme-robotics.example) has three invoices, one of
them (INV-000037) over-charged by 3.56 USD on PAY-000037. The issue's reproduction: a first
email about INV-000037, a follow-up about it and INV-000001, and one naming no invoice (every
invoice) became three tickets that each proposed, and after approval refunded, the same 3.56.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select, update

from billing_recon import pipeline, runtime
from billing_recon.domain.fsm import Reason
from billing_recon.domain.proposal import Proposal
from billing_recon.errors import ApprovalRefused, InvalidApprovalToken, RefundRefused
from billing_recon.steps import (
    approval_gate,
    money_owed,
    presentation,
    reconciliation,
    refund_worker,
)
from billing_recon.steps.deps import Deps
from billing_recon.store import ledger, tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.models import Payment, Refund, Ticket
from billing_recon.store.sample_data import generate

SENDER = "ap@acme-robotics.example"
OVERCHARGED, OTHER = "INV-000037", "INV-000001"
EMAILS = {
    "first": f"Invoice {OVERCHARGED} charges our Pro seats at the list price, but our contract "
             "price started on 1 March. Please refund the difference.",
    "follow-up": f"Following up: {OVERCHARGED} and {OTHER} both look overcharged to us. "
                 "Please check the seat price and refund the difference.",
    "every invoice": "We think we were overcharged on our invoices this year. Please check "
                     "them all and refund the difference.",
}


@dataclass
class World:
    """The sample data in a fresh database, and a way to write emails."""

    deps: Deps
    seq: int = 0

    def email(self, body: str, sender: str = SENDER) -> Ticket:
        """Process one email through the core pipeline up to its approval gate."""
        self.seq += 1
        raw = (f"From: {sender}\nTo: billing@recon.example\nSubject: Our invoices\n"
               f"Message-ID: <money-owed-{self.seq}@test>\n"
               f"Date: Fri, 20 Mar 2026 09:37:00 +0000\n\n{body}\n").encode()
        return pipeline.process_email(self.deps, raw, f"email-{self.seq}")

    def approve(self, ticket: Ticket, by: str = "alice") -> Ticket:
        """Approve the ticket's current proposal."""
        return approval_gate.record_decision(self.deps, ticket.id, approval_gate.Decision(
            True, by, ticket.proposal_hash or "", "cli"), f"cli:{by}")

    def pay(self, ticket: Ticket) -> Ticket:
        """The refund step: the worker, then the ledger rows and REFUNDED."""
        results = refund_worker.execute_refund(self.deps, ticket.id, "test")
        return refund_worker.record_refunds(self.deps, ticket.id, results, "test")

    def refunded(self, payment_id: str) -> list[Decimal]:
        """What the ledger holds as executed by tickets for a payment."""
        with self.deps.sessions() as s:
            return [r.amount for r in s.scalars(select(Refund).where(
                Refund.payment_id == payment_id, Refund.ticket_id.is_not(None)))]

    def get(self, ticket: Ticket) -> Ticket:
        """The ticket as stored now."""
        return tickets.get(self.deps.sessions, ticket.id)


@pytest.fixture
def world(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The sample data loaded into a fresh database (SQLite and PostgreSQL), local gateway."""
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_RECON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BILLING_RECON_GATEWAY_DB", f"sqlite:///{tmp_path}/gateway.db")
    for name in ("BILLING_RECON_LLM", "BILLING_RECON_FOUR_EYES", "BILLING_RECON_GATEWAY_URL"):
        monkeypatch.delenv(name, raising=False)
    runtime.reset()
    sample = generate(tmp_path / "sample", seed=7)
    deps = runtime.build()
    load_directory(deps.sessions, sample.data_dir)
    yield World(deps)
    runtime.reset()


def _proposal(ticket: Ticket) -> Proposal:
    return Proposal.model_validate(ticket.proposal)


def test_overlapping_emails_propose_and_refund_one_overcharge_once(world: World) -> None:
    first, follow_up, every = (world.email(body) for body in EMAILS.values())
    assert (first.state, _proposal(first).total()) == ("APPROVAL_PENDING", Decimal("3.56"))
    for later in (follow_up, every):  # nothing else is owed: duplicates of the first, by money
        assert (later.state, later.reason) == ("DUPLICATE", "duplicate")
        assert later.duplicate_of == first.id
        covered = _proposal(later).covered
        assert [(c.invoice_id, c.ticket, c.amount, c.status) for c in covered] == [
            (OVERCHARGED, tickets.format_ticket_id(first.id), Decimal("3.56"), "proposed")]
    world.pay(world.approve(first))
    assert world.refunded("PAY-000037") == [Decimal("3.56")]


def test_a_follow_up_proposes_only_what_the_first_ticket_does_not_hold(world: World) -> None:
    with world.deps.sessions() as s, s.begin():  # INV-000001 over-paid too, by 1.00
        pay = s.get(Payment, "PAY-000001")
        assert pay is not None
        pay.amount += Decimal("1.00")
    first = world.email(EMAILS["first"])
    follow_up = world.email(EMAILS["follow-up"])
    assert follow_up.state == "APPROVAL_PENDING"
    proposal = _proposal(follow_up)
    assert proposal.refunds[0].invoices == {OTHER: Decimal("1.00")}
    assert [(c.invoice_id, c.ticket, c.status) for c in proposal.covered] == [
        (OVERCHARGED, tickets.format_ticket_id(first.id), "proposed")]
    form = presentation.proposal_markdown(follow_up, "billing-recon approve")  # the UI form
    held = f"- {OVERCHARGED}: 3.56 proposed in {tickets.format_ticket_id(first.id)}, pending"
    assert held in form
    world.pay(world.approve(follow_up))
    world.pay(world.approve(first))
    assert (world.refunded("PAY-000037"), world.refunded("PAY-000001")) == (
        [Decimal("3.56")], [Decimal("1.00")])
    assert [(c.ticket, c.status) for c in _proposal(world.email(EMAILS["every invoice"])).covered
            ] == [(tickets.format_ticket_id(follow_up.id), "refunded"),
                  (tickets.format_ticket_id(first.id), "refunded")]


def test_a_rejected_proposal_releases_its_money(world: World) -> None:
    first = world.email(EMAILS["first"])
    approval_gate.record_decision(world.deps, first.id, approval_gate.Decision(
        False, "bob", first.proposal_hash or "", "cli"), "cli:bob")
    again = world.email(EMAILS["follow-up"])
    assert (again.state, _proposal(again).total()) == ("APPROVAL_PENDING", Decimal("3.56"))
    assert _proposal(again).covered == []


def test_an_expired_proposal_releases_its_money(world: World) -> None:
    first = world.email(EMAILS["first"])
    with world.deps.sessions() as s, s.begin():
        s.execute(update(Ticket).where(Ticket.id == first.id).values(
            approval_deadline=datetime(2026, 1, 1, tzinfo=UTC)))
    assert approval_gate.expire_if_due(world.deps, first.id, "test")
    again = world.email(EMAILS["follow-up"])
    assert (again.state, _proposal(again).total()) == ("APPROVAL_PENDING", Decimal("3.56"))


def _seal(world: World, ticket: Ticket, proposal: Proposal) -> None:
    """Store a proposal with a valid MAC, as a bug (or a holder of the signing key) might."""
    with world.deps.sessions() as s, s.begin():
        s.execute(update(Ticket).where(Ticket.id == ticket.id).values(
            **money_owed.ticket_fields(world.deps.settings, proposal)))


def _forged_twin(world: World, ticket: Ticket, source: Ticket) -> Ticket:
    """``ticket`` awaiting approval of a sealed copy of ``source``'s proposal (as if the money
    other tickets hold had not been counted)."""
    with world.deps.sessions() as s, s.begin():
        s.execute(update(Ticket).where(Ticket.id == ticket.id).values(state="APPROVAL_PENDING"))
    mine = _proposal(source).model_copy(update={"ticket_key": ticket.ticket_key,
                                                "covered": []})
    _seal(world, ticket, mine)
    return world.get(ticket)


def test_of_two_approved_proposals_on_the_same_money_the_first_to_pay_wins(
        world: World) -> None:
    first = world.email(EMAILS["first"])
    second = world.email(EMAILS["follow-up"])  # DUPLICATE by money; forge it a proposal
    twin = _forged_twin(world, second, first)
    world.pay(world.approve(twin))
    approved = world.approve(first)
    with pytest.raises(RefundRefused, match=tickets.format_ticket_id(second.id)) as refused:
        refund_worker.execute_refund(world.deps, approved.id, "test")
    assert refused.value.others == [tickets.format_ticket_id(second.id)]
    assert world.refunded("PAY-000037") == [Decimal("3.56")]


def test_the_worker_refuses_money_in_flight_for_another_ticket(world: World) -> None:
    first = world.approve(world.email(EMAILS["first"]))
    second = world.email(EMAILS["follow-up"])
    twin = _forged_twin(world, second, first)
    approved = world.approve(twin)
    lost = refund_worker.execute_refund(world.deps, first.id, "test")  # then it dies
    assert [r.amount for r in lost] == [Decimal("3.56")]
    with pytest.raises(RefundRefused, match="in_flight in"):
        refund_worker.execute_refund(world.deps, approved.id, "test")
    # The first ticket's call, not yet in the ledger, is still counted; its re-run records it.
    reconciliation.escalate(world.deps, approved.id, Reason.POLICY_VIOLATION, "test", {})
    world.pay(world.get(first))
    assert world.refunded("PAY-000037") == [Decimal("3.56")]


def test_the_worker_refuses_once_the_other_ticket_has_refunded(world: World) -> None:
    first = world.email(EMAILS["first"])
    second = world.email(EMAILS["follow-up"])
    world.pay(world.approve(first))
    twin = _forged_twin(world, second, first)
    approved = world.approve(twin)
    with pytest.raises(RefundRefused, match=r"owe 0\.00"):
        refund_worker.execute_refund(world.deps, approved.id, "test")
    assert world.refunded("PAY-000037") == [Decimal("3.56")]


def test_the_invariant_is_checked_again_right_before_each_call_is_claimed(
        world: World) -> None:
    """A worker whose re-derivation came before another ticket paid the same money is still
    refused at the claim of its call, under the customer's lock, and claims nothing."""
    first = world.approve(world.email(EMAILS["first"]))
    second = world.email(EMAILS["follow-up"])
    twin = _forged_twin(world, second, first)
    approved = world.approve(twin)
    proposal = _proposal(approved)
    with world.deps.sessions() as s:  # the second worker re-derives: nothing moving yet
        expected = money_owed.rederive(s, approved, proposal)
    world.pay(first)  # meanwhile the first ticket pays the same 3.56
    pay = proposal.refunds[0].payments[0]
    call = refund_worker.Call(approved, proposal, "USD", pay, expected[pay.invoice_id])
    engine = world.deps.sessions.kw["bind"]
    with pytest.raises(RefundRefused, match="below its expected total"):
        ledger.claim_call(engine, "k2", ticket_id=approved.id, payment_id=pay.payment_id,
                          holder="h", lease_s=60, guard=call.guard)
    with engine.connect() as conn:
        assert conn.execute(select(ledger.calls).where(ledger.calls.c.key == "k2")).first() is None
    assert world.refunded("PAY-000037") == [Decimal("3.56")]


def _edit(proposal: Proposal, amount: str, payment: str | None = None) -> Proposal:
    refund = proposal.refunds[0]
    pay = refund.payments[0].model_copy(update={"amount": Decimal(amount)})
    if payment is not None:
        pay = pay.model_copy(update={"payment_id": payment})
    return proposal.model_copy(update={"refunds": [refund.model_copy(update={
        "amount": Decimal(amount), "invoices": {pay.invoice_id: Decimal(amount)},
        "payments": [pay]})]})


def test_a_proposal_edited_in_the_database_is_refused_at_the_gate_and_escalated(
        world: World) -> None:
    ticket = world.email(EMAILS["first"])
    edited = _edit(_proposal(ticket), "59.40")
    with world.deps.sessions() as s, s.begin():  # the SHA-256 recomputed, no key for the MAC
        s.execute(update(Ticket).where(Ticket.id == ticket.id).values(
            proposal=edited.model_dump(mode="json"), proposal_hash=edited.hash()))
    with pytest.raises(ApprovalRefused, match="MAC"):
        world.approve(world.get(ticket))
    assert (world.get(ticket).state, world.get(ticket).reason) == ("ESCALATED",
                                                                   "policy_violation")
    assert world.refunded("PAY-000037") == []


def test_a_proposal_approved_then_edited_is_refused_by_the_worker(world: World) -> None:
    ticket = world.approve(world.email(EMAILS["first"]))
    edited = _edit(_proposal(ticket), "59.40")
    with world.deps.sessions() as s, s.begin():
        s.execute(update(Ticket).where(Ticket.id == ticket.id).values(
            proposal=edited.model_dump(mode="json"), proposal_hash=edited.hash()))
    with pytest.raises(InvalidApprovalToken):
        refund_worker.execute_refund(world.deps, ticket.id, "test")
    assert world.refunded("PAY-000037") == []


@pytest.mark.parametrize(("amount", "payment", "why"), [
    ("59.40", None, r"owe 3\.56"),  # more than the trusted rules owe
    ("3.56", "PAY-000038", "not a USD payment of an in-scope invoice"),  # another customer's
])
def test_the_worker_re_derives_a_sealed_proposal_from_the_trusted_rules(
        world: World, amount: str, payment: str | None, why: str) -> None:
    ticket = world.email(EMAILS["first"])
    _seal(world, ticket, _edit(_proposal(ticket), amount, payment))
    approved = world.approve(world.get(ticket))
    with pytest.raises(RefundRefused, match=why):
        refund_worker.execute_refund(world.deps, approved.id, "test")
    assert world.refunded("PAY-000037") == world.refunded("PAY-000038") == []


def test_the_worker_refuses_a_charge_shared_by_two_payments(world: World) -> None:
    ticket = world.approve(world.email(EMAILS["first"]))
    with world.deps.sessions() as s, s.begin():
        charge = s.scalar(select(Payment.charge_ref).where(Payment.payment_id == "PAY-000037"))
        s.execute(update(Payment).where(Payment.payment_id == "PAY-000038")
                  .values(charge_ref=charge))
    with pytest.raises(RefundRefused, match="shared by 2 payments"):
        refund_worker.execute_refund(world.deps, ticket.id, "test")


def _deps_with(monkeypatch: pytest.MonkeyPatch, four_eyes: str | None) -> Deps:
    if four_eyes is None:
        monkeypatch.delenv("BILLING_RECON_FOUR_EYES", raising=False)
    else:
        monkeypatch.setenv("BILLING_RECON_FOUR_EYES", four_eyes)
    runtime.reset()
    return runtime.build()


def test_four_eyes_is_frozen_on_the_proposal_not_read_from_the_deciding_process(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.deps = _deps_with(monkeypatch, "USD:1")
    ticket = world.email(EMAILS["first"])
    assert _proposal(ticket).policy is not None
    assert _proposal(ticket).policy.required_approvals == 2  # type: ignore[union-attr]
    world.deps = _deps_with(monkeypatch, None)  # a shell without the setting
    after_one = world.approve(ticket, "alice")
    assert after_one.state == "APPROVAL_PENDING"
    assert approval_gate.approval_count(world.deps, after_one).required == 2
    assert world.approve(after_one, "bob").state == "APPROVED"


def test_a_process_with_a_stricter_setting_cannot_raise_a_frozen_policy(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    ticket = world.email(EMAILS["first"])
    world.deps = _deps_with(monkeypatch, "USD:1")
    world.pay(world.approve(ticket, "alice"))
    assert world.refunded("PAY-000037") == [Decimal("3.56")]
