"""Replies and approver notices through a real SMTP server (aiosmtpd on 127.0.0.1, implicit TLS
and STARTTLS, AUTH): each owed message is sent once, threaded, from the configured address."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from billing_recon import pipeline
from billing_recon.domain.email import parse_email
from billing_recon.domain.fsm import Reason, State
from billing_recon.steps import outbox as mail_outbox
from billing_recon.steps import refund_status, refund_worker
from billing_recon.steps.deps import Deps
from billing_recon.store import outbox, tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.models import Ticket
from billing_recon.store.sample_data import generate
from billing_recon.store.types import utcnow
from tests.chaos.harness import World, direct_world
from tests.mail.certs import Certs
from tests.mail.conftest import smtp_env, use
from tests.mail.smtp_server import SmtpServer

UI = "http://prefect.acme.test:4200"


@pytest.fixture
def settled(mail_deps: Deps, smtp: SmtpServer, certs: Certs, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> tuple[Deps, dict[str, Ticket], Path]:
    """The sample inbox run through the core pipeline, with SMTP configured."""
    deps = use(monkeypatch, smtp_env(smtp, certs, smtp.mode))
    sample = generate(tmp_path / "sample", seed=7)
    load_directory(deps.sessions, sample.data_dir)
    done = {path.name: pipeline.process_email(deps, path.read_bytes(), str(path))
            for path in sorted(sample.inbox_dir.glob("*.eml"))}
    return deps, done, sample.inbox_dir


def _by_to(messages: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for msg in messages:
        out.setdefault(str(msg["To"]), []).append(msg)
    return out


def test_reply_once_to_each_closed_customer_threaded_under_their_email(
        settled: tuple[Deps, dict[str, Ticket], Path], smtp: SmtpServer) -> None:
    deps, done, inbox = settled
    closed = {n: t for n, t in done.items() if (t.state, t.reason) == ("CLOSED",
                                                                       "no_discrepancy")}
    pending = [t for t in done.values() if t.state == State.APPROVAL_PENDING.value]
    assert closed and pending
    with deps.sessions() as session, session.begin():  # the paused run of one ticket
        session.execute(update(Ticket).where(Ticket.id == pending[0].id)
                        .values(flow_run_id="0f0e-run"))
    queued = mail_outbox.queue_due(deps, UI)
    delivery = mail_outbox.deliver(deps)
    assert sorted(delivery.sent) == sorted(queued) and not delivery.failed
    received = _by_to(smtp.received())
    assert len(received["approvers@acme.test"]) == len(pending)
    replies = [m for to, ms in received.items() if to != "approvers@acme.test" for m in ms]
    assert len(replies) == len(closed)
    for name, ticket in closed.items():
        original = parse_email((inbox / name).read_bytes())
        [reply] = received[ticket.sender]
        assert reply["Message-ID"] == f"<reply.{ticket.ticket_key}@acme.test>"
        assert reply["In-Reply-To"] == f"<{original.message_id}>"
        assert str(reply["References"]).endswith(f"<{original.message_id}>")
        assert reply["Subject"] == f"Re: {original.subject}"
        assert reply["From"] == "billing@acme.test"
        assert reply.get_content().strip() == (ticket.reply or "").strip()
    # never for an unknown sender, a non-billing email or a duplicate
    for ticket in done.values():
        if ticket.reason in {"unknown_sender", "not_billing", "duplicate", "invoice_not_owned"}:
            assert ticket.sender not in received
    [notice] = [m for m in received["approvers@acme.test"]
                if f"T-{pending[0].id:06d}" in str(m["Subject"])]
    body = notice.get_content()
    assert f"{UI}/runs/flow-run/0f0e-run" in body and pending[0].sender in body
    assert "waits for a decision" in str(notice["Subject"])
    # a second pass owes nothing: nothing queued, nothing sent
    assert mail_outbox.queue_due(deps, UI) == []
    assert mail_outbox.deliver(deps).sent == []
    assert len(smtp.received()) == len(closed) + len(pending)
    events = tickets.events(deps.sessions, next(iter(closed.values())).id, "mail_sent")
    assert len(events) == 1


def test_reply_notice_for_an_escalation_and_nothing_when_smtp_is_off(
        settled: tuple[Deps, dict[str, Ticket], Path], smtp: SmtpServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    deps, done, _ = settled
    pending = next(t for t in done.values() if t.state == State.APPROVAL_PENDING.value)
    tickets.transition(deps.sessions, pending.id, State.ESCALATED,
                       reason=Reason.APPROVAL_TIMEOUT, actor="test")
    monkeypatch.delenv("BILLING_RECON_SMTP_HOST")
    off = use(monkeypatch, {})
    assert mail_outbox.queue_due(off, UI) == [] and outbox.rows(off.sessions) == []
    on = use(monkeypatch, {"BILLING_RECON_SMTP_HOST": "127.0.0.1"})
    mail_outbox.queue_due(on, UI)
    mail_outbox.deliver(on)
    escalated = [m for m in smtp.received() if "escalated (approval_timeout)" in str(m["Subject"])]
    assert len(escalated) == 1 and f"T-{pending.id:06d}" in str(escalated[0]["Subject"])


def test_reply_never_for_tickets_older_than_the_mail_window(
        settled: tuple[Deps, dict[str, Ticket], Path], smtp: SmtpServer) -> None:
    deps, _, _ = settled  # SMTP turned on after these tickets settled days ago
    with deps.sessions() as session, session.begin():
        session.execute(update(Ticket).values(updated_at=utcnow() - timedelta(hours=73)))
    assert mail_outbox.queue_due(deps, UI) == []
    assert mail_outbox.deliver(deps).sent == [] and smtp.received() == []


def test_smtp_refused_recipient_is_failed_and_never_sent_again(
        settled: tuple[Deps, dict[str, Ticket], Path], smtp: SmtpServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    deps = use(monkeypatch, {"BILLING_RECON_SMTP_NOTIFY": "nobody@refused.test"})
    mail_outbox.queue_due(deps, UI)
    first = mail_outbox.deliver(deps)
    assert first.failed and all(k.startswith("notice:") for k in first.failed)
    assert first.sent  # the replies went on
    again = mail_outbox.deliver(deps)
    assert again.sent == again.failed == []
    row = next(r for r in outbox.rows(deps.sessions) if r.key == first.failed[0])
    assert row.status == outbox.FAILED and "550" in (row.error or "")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """Billing database, a gateway process and approved tickets (tests/chaos/harness.py)."""
    with direct_world(tmp_path / "w") as made:
        yield made


def test_reply_for_a_refund_only_once_the_refund_succeeded(
        world: World, smtp: SmtpServer, certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    deps = use(monkeypatch, {**world.env(), **smtp_env(smtp, certs, smtp.mode)})
    exp = world.approved_ticket(1)
    results = refund_worker.execute_refund(deps, exp.ticket_id, "test")
    refund_worker.record_refunds(deps, exp.ticket_id, [
        r.model_copy(update={"status": "pending"}) for r in results], "test")
    assert refund_status.settle(deps, exp.ticket_id, "test").state == State.REFUNDED.value
    mail_outbox.queue_due(deps, UI)
    mail_outbox.deliver(deps)
    assert smtp.received() == []  # REFUNDED, the money not there yet: no reply
    client = deps.refund_client()
    try:
        made = client.retrieve_refund(results[0].gateway_refund_id)
    finally:
        client.close()
    refund_status.apply(deps, replace(made, status="succeeded"), actor="webhook")
    closed = refund_status.settle(deps, exp.ticket_id, "test")
    assert (closed.state, closed.reason) == ("CLOSED", "refunded")
    mail_outbox.queue_due(deps, UI)
    assert mail_outbox.deliver(deps).sent == [f"reply:{closed.ticket_key}"]
    [reply] = smtp.received()
    assert reply["To"] == closed.sender and reply.get_content().strip() == closed.reply
