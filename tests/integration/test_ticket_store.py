"""Tickets in the database: one per email, transitions with their events, race-safe keys."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from billing_recon.domain.email import parse_email
from billing_recon.domain.fsm import Reason, State
from billing_recon.errors import ConcurrentTransition, IllegalTransition
from billing_recon.store import tickets
from billing_recon.store.models import TicketEvent

RAW = b"From: a@x.com\r\nSubject: hi\r\nMessage-ID: <m1@x>\r\n\r\nINV-000001\r\n"


def _open(sessions: sessionmaker[Session], raw: bytes = RAW) -> int:
    return tickets.open_ticket(sessions, parse_email(raw), "inbox/m1.eml").ticket.id


def test_same_email_opens_one_ticket(sessions: sessionmaker[Session]) -> None:
    first = tickets.open_ticket(sessions, parse_email(RAW), None)
    again = tickets.open_ticket(sessions, parse_email(RAW), None)
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


def test_event_log_is_append_only_numbered(sessions: sessionmaker[Session]) -> None:
    tid = _open(sessions)
    tickets.note(sessions, tid, "analysis_attempt", "t", {"n": 1})
    tickets.transition(sessions, tid, State.TRIAGED, actor="t")
    with sessions() as session:
        seqs = list(session.scalars(select(TicketEvent.seq).where(TicketEvent.ticket_id == tid)
                                    .order_by(TicketEvent.seq)))
    assert seqs == [1, 2, 3]
