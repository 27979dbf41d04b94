"""Recorded model calls in the database: one row per (ticket, agent, input), also under races."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from billing_recon.domain.email import parse_email
from billing_recon.store import inbox, model_calls
from billing_recon.store.models import ModelCall
from tests.sql_statements import statement_kinds

RAW = b"From: a@x.com\r\nSubject: hi\r\nMessage-ID: <m1@x>\r\n\r\nINV-000001\r\n"


def _call(ticket_id: int, model: str = "m") -> dict[str, Any]:
    return {"ticket_id": ticket_id, "agent": "triage", "input_hash": "h" * 64, "model": model,
            "output": {"ok": True}, "error": None, "prompt_tokens": 10,
            "completion_tokens": 5, "usage_reported": True, "cost_usd": None}


def _record(sessions: sessionmaker[Session], call: dict[str, Any]) -> int:
    with sessions() as session, session.begin():
        return model_calls.add_within(session, call)


def _rows(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count(ModelCall.id))) or 0)


def test_a_call_recorded_again_keeps_the_first_and_returns_its_id(
        sessions: sessionmaker[Session]) -> None:
    tid = inbox.open_ticket(sessions, parse_email(RAW), None).ticket.id
    first = _record(sessions, _call(tid, "first"))
    assert _record(sessions, _call(tid, "second")) == first
    assert [c.model for c in model_calls.of_ticket(sessions, tid)] == ["first"]
    assert model_calls.of_ticket(sessions, tid)[0].created_at is not None


def test_the_same_call_recorded_concurrently_is_one_row(sessions: sessionmaker[Session]) -> None:
    tid = inbox.open_ticket(sessions, parse_email(RAW), None).ticket.id

    def record(_: int) -> int | str:
        try:
            return _record(sessions, _call(tid))
        except Exception as exc:  # SQLite may report its writer lock: not a second row
            return type(exc).__name__

    with ThreadPoolExecutor(6) as pool:
        ids = {i for i in pool.map(record, range(6)) if isinstance(i, int)}
    assert len(ids) == 1 and _rows(sessions) == 1


def test_a_new_call_is_recorded_in_one_statement_without_a_savepoint(
        sessions: sessionmaker[Session]) -> None:
    tid = inbox.open_ticket(sessions, parse_email(RAW), None).ticket.id
    with statement_kinds(sessions) as seen:
        _record(sessions, _call(tid))
    assert seen == ["INSERT"]
