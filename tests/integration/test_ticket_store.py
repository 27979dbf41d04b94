"""Tickets in the database: one per email, transitions with their events, race-safe keys."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from billing_recon.domain.email import parse_email
from billing_recon.domain.fsm import Reason, State
from billing_recon.errors import ConcurrentTransition, IllegalTransition
from billing_recon.steps import intake
from billing_recon.store import inbox, tickets
from billing_recon.store.models import InboundEmail, Ticket, TicketEvent
from billing_recon.store.types import utcnow
from tests.bad_mail import INTAKE, corpus, oversized_email
from tests.sql_statements import statement_kinds

RAW = b"From: a@x.com\r\nSubject: hi\r\nMessage-ID: <m1@x>\r\n\r\nINV-000001\r\n"


def _open(sessions: sessionmaker[Session], raw: bytes = RAW) -> int:
    return inbox.open_ticket(sessions, parse_email(raw), "inbox/m1.eml").ticket.id


def test_same_email_opens_one_ticket(sessions: sessionmaker[Session]) -> None:
    first = inbox.open_ticket(sessions, parse_email(RAW), None)
    again = inbox.open_ticket(sessions, parse_email(RAW), None)
    assert first.created and not again.created
    assert first.ticket.id == again.ticket.id
    assert tickets.count(sessions) == 1


def test_same_email_opened_concurrently_is_still_one_ticket(
        sessions: sessionmaker[Session]) -> None:
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: _open(sessions), range(8)))
    assert len(ids) == 1
    assert tickets.count(sessions) == 1


def test_transition_writes_state_and_event_together(sessions: sessionmaker[Session]) -> None:
    tid = _open(sessions)
    ticket = tickets.transition(sessions, tid, State.TRIAGED, actor="t", payload={"x": 1})
    assert ticket.state == "TRIAGED"
    log = tickets.events(sessions, tid)
    assert [(e.from_state, e.to_state) for e in log] == [(None, "RECEIVED"),
                                                         ("RECEIVED", "TRIAGED")]
    assert log[-1].payload == {"x": 1} and log[-1].actor == "t"


def _columns(ticket: Ticket) -> dict[str, Any]:
    return {c.key: getattr(ticket, c.key) for c in Ticket.__table__.columns}


def test_transition_returns_the_ticket_exactly_as_a_fresh_read_gives_it(
        sessions: sessionmaker[Session]) -> None:
    tid = _open(sessions)
    # A tuple comes back from JSON as a list: the returned ticket must hold what was stored.
    fields = {"triage": {"invoice_ids": ("INV-1", "INV-2"), "n": 1},
              "approval_deadline": utcnow(), "subject": "changed"}
    moved = tickets.transition(sessions, tid, State.TRIAGED, actor="t", fields=fields)
    assert _columns(moved) == _columns(tickets.get(sessions, tid))
    assert moved.triage == {"invoice_ids": ["INV-1", "INV-2"], "n": 1} and moved.version == 2


def test_transition_reads_the_ticket_once_and_not_again_after_its_commit(
        sessions: sessionmaker[Session]) -> None:
    tid = _open(sessions)
    with statement_kinds(sessions) as seen:
        tickets.transition(sessions, tid, State.TRIAGED, actor="t")
    assert seen == ["SELECT", "UPDATE", "INSERT"]


def test_illegal_transition_raises_and_writes_nothing(sessions: sessionmaker[Session]) -> None:
    tid = _open(sessions)
    with pytest.raises(IllegalTransition):
        tickets.transition(sessions, tid, State.APPROVED, actor="t")
    assert tickets.get(sessions, tid).state == "RECEIVED"
    assert len(tickets.events(sessions, tid)) == 1


def test_failure_inside_the_transaction_rolls_back_state_and_event(
        sessions: sessionmaker[Session]) -> None:
    tid = _open(sessions)

    def boom(_s: Session, _t: object) -> None:
        raise RuntimeError("crash mid-transition")

    with pytest.raises(RuntimeError):
        tickets.transition(sessions, tid, State.TRIAGED, actor="t", within=boom)
    assert tickets.get(sessions, tid).state == "RECEIVED"
    assert len(tickets.events(sessions, tid)) == 1


def test_stale_expectation_is_refused(sessions: sessionmaker[Session]) -> None:
    tid = _open(sessions)
    tickets.transition(sessions, tid, State.TRIAGED, actor="t")
    with pytest.raises(ConcurrentTransition):
        tickets.transition(sessions, tid, State.CLOSED, reason=Reason.NOT_BILLING, actor="t",
                           expect=State.RECEIVED)


def test_racing_transitions_let_exactly_one_win(sessions: sessionmaker[Session]) -> None:
    tid = _open(sessions)

    def move(_: int) -> str:
        try:
            tickets.transition(sessions, tid, State.TRIAGED, actor="t", expect=State.RECEIVED)
            return "won"
        except (ConcurrentTransition, IllegalTransition):
            return "lost"
        except Exception as exc:  # SQLite may report the lock instead; still not a win
            return f"lost:{type(exc).__name__}"

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(move, range(6)))
    assert outcomes.count("won") == 1
    assert [e.to_state for e in tickets.events(sessions, tid)].count("TRIAGED") == 1


def test_ticket_key_has_one_owner_under_races(sessions: sessionmaker[Session]) -> None:
    ids = [_open(sessions, RAW.replace(b"m1@x", f"m{i}@x".encode())) for i in range(6)]

    def claim(tid: int) -> int:
        with sessions() as session, session.begin():
            return tickets.claim_key(session, "key-1", tid)

    with ThreadPoolExecutor(6) as pool:
        owners = set(pool.map(claim, ids))
    assert len(owners) == 1


def test_a_taken_ticket_key_stays_its_first_owners(sessions: sessionmaker[Session]) -> None:
    first, second = (_open(sessions, RAW.replace(b"m1@x", f"m{i}@x".encode())) for i in (1, 2))
    with sessions() as session, session.begin():
        assert tickets.claim_key(session, "key-1", first) == first
    with sessions() as session, session.begin():
        assert tickets.claim_key(session, "key-1", second) == first


def test_a_free_ticket_key_is_claimed_in_one_statement_without_a_savepoint(
        sessions: sessionmaker[Session]) -> None:
    tid = _open(sessions)
    with statement_kinds(sessions) as seen, sessions() as session, session.begin():
        assert tickets.claim_key(session, "key-1", tid) == tid
    assert seen == ["INSERT"]


def test_event_log_is_append_only_numbered(sessions: sessionmaker[Session]) -> None:
    tid = _open(sessions)
    tickets.note(sessions, tid, "analysis_attempt", "t", {"n": 1})
    tickets.transition(sessions, tid, State.TRIAGED, actor="t")
    with sessions() as session:
        seqs = list(session.scalars(select(TicketEvent.seq).where(TicketEvent.ticket_id == tid)
                                    .order_by(TicketEvent.seq)))
    assert seqs == [1, 2, 3]


def _stored_raw(sessions: sessionmaker[Session], email_id: str) -> bytes:
    with sessions() as session:
        row = session.get(InboundEmail, email_id)
    assert row is not None
    return row.raw


@pytest.mark.parametrize(("name", "raw", "expected"), corpus(), ids=[c[0] for c in corpus()])
def test_bad_mail_corpus_email_opens_one_ticket_and_keeps_its_bytes(
        sessions: sessionmaker[Session], name: str, raw: bytes, expected: dict[str, Any]) -> None:
    """Binary garbage, Latin-1 headers, NUL bytes, a 400-character Message-ID or From: each
    raised UnicodeEncodeError or DataError here (PostgreSQL) before issue 14."""
    opened = inbox.open_ticket(sessions, parse_email(raw), f"inbox/{name}")
    assert opened.created
    assert _stored_raw(sessions, opened.ticket.email_id) == raw
    if expected.get("reason") in INTAKE:
        assert (opened.ticket.state, opened.ticket.reason) == ("REJECTED", expected["reason"])
        refusal = tickets.events(sessions, opened.ticket.id)[-1].payload
        assert refusal["file"] == f"inbox/{name}" and expected["problem"] in refusal["problem"]
    else:
        assert (opened.ticket.state, opened.ticket.sender) == ("RECEIVED", expected["sender"])
    again = inbox.open_ticket(sessions, parse_email(raw), f"inbox/{name}")
    assert (again.created, again.ticket.id) == (False, opened.ticket.id)


def test_bad_mail_above_the_size_limit_is_rejected_unread(
        sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """A 50 MB email took 747 MB of RSS: it is refused on its size, its bytes never read in
    (only streamed through SHA-256, its identity), nothing of it stored."""
    path = str(oversized_email(tmp_path, 50 * 1024 * 1024))
    email = intake.load_email(path, 10 * 1024 * 1024)
    assert (email.raw, email.rejection and email.rejection.reason) == (
        b"", Reason.EMAIL_TOO_LARGE)
    opened = inbox.open_ticket(sessions, email, path)
    assert (opened.ticket.state, opened.ticket.reason) == ("REJECTED", "email_too_large")
    refusal = tickets.events(sessions, opened.ticket.id)[-1].payload
    assert refusal == {"file": path, "problem": "the email is 52428800 bytes, above the limit "
                       "of 10485760 bytes (BILLING_RECON_INTAKE_MAX_EMAIL_BYTES)"}
    assert _stored_raw(sessions, opened.ticket.email_id) == b""
    again = inbox.open_ticket(sessions, intake.load_email(path, 10 * 1024 * 1024), path)
    assert (again.created, again.ticket.id) == (False, opened.ticket.id)


def test_sender_reusing_a_message_id_gets_a_ticket_of_its_own_and_a_warning(
        sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture) -> None:
    """Before issue 14 the second email was taken for the first: it resumed Ann's ticket."""
    ann = inbox.open_ticket(sessions, parse_email(RAW.replace(b"a@x.com", b"ann@x.com")), "a")
    bob_raw = RAW.replace(b"a@x.com", b"Bob <bob@x.com>").replace(b"INV-000001", b"Hello")
    with caplog.at_level(logging.WARNING, logger="billing_recon.store.inbox"):
        bob = inbox.open_ticket(sessions, parse_email(bob_raw), "inbox/bob.eml")
    assert bob.created and bob.ticket.id != ann.ticket.id
    assert (bob.ticket.sender, bob.ticket.email_id) == ("bob@x.com", "m1@x|bob@x.com")
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "inbox/bob.eml" in caplog.text and "<m1@x>" in caplog.text
    assert tickets.events(sessions, bob.ticket.id)[0].payload["message_id_collision"] == (
        f"{tickets.format_ticket_id(ann.ticket.id)} from ann@x.com")
    redelivered = b"Received: from relay\r\n" + bob_raw  # other bytes, same email
    for raw, owner in [(redelivered, bob), (RAW.replace(b"a@x.com", b"ann@x.com"), ann)]:
        again = inbox.open_ticket(sessions, parse_email(raw), None)
        assert (again.created, again.ticket.id) == (False, owner.ticket.id)


def test_sender_of_a_ticket_opened_before_issue_14_still_finds_it(
        sessions: sessionmaker[Session]) -> None:
    """Existing databases keep deduplicating: the id of a ticket stored under the bare
    Message-ID (as every ticket was) is still the same email's."""
    with sessions() as session, session.begin():
        session.add(InboundEmail(email_id="m1@x", source="old.eml", raw=RAW))
        session.add(Ticket(email_id="m1@x", state="RECEIVED", version=1, sender="a@x.com",
                           subject="hi"))
    with sessions() as session:
        old = session.scalar(select(Ticket.id).where(Ticket.email_id == "m1@x"))
    again = inbox.open_ticket(sessions, parse_email(RAW), "old.eml")
    assert (again.created, again.ticket.id) == (False, old)


def test_sender_messages_with_the_same_id_opened_concurrently_get_one_ticket_each(
        sessions: sessionmaker[Session]) -> None:
    raws = [RAW.replace(b"a@x.com", f"s{i % 3}@x.com".encode()) for i in range(9)]
    with ThreadPoolExecutor(6) as pool:
        opened = list(pool.map(lambda raw: inbox.open_ticket(sessions, parse_email(raw), None),
                               raws))
    by_sender = {o.ticket.sender: o.ticket.id for o in opened}
    assert all(by_sender[o.ticket.sender] == o.ticket.id for o in opened)
    assert len(by_sender) == tickets.count(sessions) == 3
