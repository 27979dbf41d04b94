"""Read sessions (no ``begin()``) open no transaction on PostgreSQL; writes stay atomic.

store.db.BillingSession sends a session's statements outside an explicit ``begin()`` through
an autocommit engine on the same pool, so a read costs no BEGIN and ROLLBACK round trips.
These tests hold it to that and to what must not change: an explicit transaction is still
one transaction, a write outside ``begin()`` is refused, and a connection goes back to the pool
transactional.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session, sessionmaker

from billing_recon.store.db import migrate, session_factory
from billing_recon.store.models import Customer
from tests.conftest import _pg_schema_engine

ADA = {"customer_id": "C1", "name": "Ada", "email": "ada@example.com", "currency": "USD",
       "tax_rate": Decimal("0.2")}


def _driver(session: Session) -> psycopg.Connection[object]:
    connection = session.connection().connection.dbapi_connection
    assert isinstance(connection, psycopg.Connection)
    return connection


def _customers(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count(Customer.customer_id))) or 0)


@pytest.fixture
def pg_sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a migrated PostgreSQL schema of their own."""
    schema = _pg_schema_engine(pg_url)
    engine = next(schema)
    migrate(engine)
    yield session_factory(engine)
    next(schema, None)


@pytest.mark.postgres
def test_a_read_session_leaves_no_transaction_open_on_postgresql(
        pg_sessions: sessionmaker[Session]) -> None:
    sessions = pg_sessions  # SQLite's driver opens no transaction for a read anyway
    with sessions() as session:
        assert session.scalar(select(func.count(Customer.customer_id))) == 0
        assert _driver(session).info.transaction_status == TransactionStatus.IDLE
    with sessions() as session, session.begin():
        session.scalar(select(func.count(Customer.customer_id)))
        assert _driver(session).info.transaction_status == TransactionStatus.INTRANS


def test_an_explicit_transaction_after_a_read_session_is_still_one_transaction(
        sessions: sessionmaker[Session]) -> None:
    assert _customers(sessions) == 0  # the pooled connection served a read first
    with pytest.raises(RuntimeError, match="after the insert"), sessions() as session, \
            session.begin():
        session.add(Customer(**ADA))
        session.flush()
        raise RuntimeError("after the insert")
    assert _customers(sessions) == 0
    with sessions() as session, session.begin():
        session.add(Customer(**ADA))
    assert _customers(sessions) == 1


def test_an_orm_write_outside_begin_is_refused(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        session.add(Customer(**ADA))
        with pytest.raises(InvalidRequestError, match=r"outside session\.begin"):
            session.flush()
    assert _customers(sessions) == 0


def test_a_write_statement_outside_begin_is_refused(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, session.begin():
        session.add(Customer(**ADA))
    with sessions() as session:  # in autocommit, this UPDATE would commit at once
        with pytest.raises(InvalidRequestError, match=r"outside session\.begin"):
            session.execute(update(Customer).values(name="Eve"))
        with pytest.raises(InvalidRequestError, match=r"outside session\.begin"):
            session.execute(delete(Customer))
    with sessions() as session:
        assert session.scalars(select(Customer.name)).all() == ["Ada"]


def test_a_locking_read_outside_begin_is_refused(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, session.begin():
        session.add(Customer(**ADA))
    with sessions() as session:  # in autocommit, the row lock would end with the statement
        with pytest.raises(InvalidRequestError, match=r"outside session\.begin"):
            session.get(Customer, "C1", with_for_update=True)
        with pytest.raises(InvalidRequestError, match=r"outside session\.begin"):
            session.scalar(select(Customer).with_for_update())
    with sessions() as session, session.begin():
        locked = session.get(Customer, "C1", with_for_update=True)
        assert locked is not None and locked.name == "Ada"
