"""PostgreSQL connection pool: no round trip to check out a healthy connection, and a pooled
connection the server dropped is replaced before anyone uses it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest
from sqlalchemy import Engine, text

from billing_recon.store.db import make_engine

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    """An engine as the application makes it, with one connection in its pool."""
    made = make_engine(pg_url)
    yield made
    made.dispose()


@pytest.fixture
def admin(pg_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A separate autocommit connection that watches (and terminates) the pooled one."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        yield conn


def _pooled_backend(engine: Engine) -> int:
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    return int(pid)


def _last_activity(admin: psycopg.Connection[tuple[object, ...]], pid: int) -> datetime | None:
    row = admin.execute("SELECT state_change FROM pg_stat_activity WHERE pid = %s",
                        (pid,)).fetchone()
    return None if row is None else row[0]  # type: ignore[return-value]


def test_checking_out_a_healthy_pooled_connection_sends_nothing_to_the_server(
        engine: Engine, admin: psycopg.Connection[tuple[object, ...]]) -> None:
    pid = _pooled_backend(engine)
    before = _last_activity(admin, pid)
    with engine.connect() as conn:
        checked_out = conn.connection.dbapi_connection
        assert checked_out is not None and checked_out.info.backend_pid == pid  # same one
        assert _last_activity(admin, pid) == before  # no ping: the backend did nothing


def test_a_pooled_connection_the_server_terminated_is_replaced_on_checkout(
        engine: Engine, admin: psycopg.Connection[tuple[object, ...]]) -> None:
    pid = _pooled_backend(engine)
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 10
    while _last_activity(admin, pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)  # the backend is gone once it leaves pg_stat_activity
    with engine.connect() as conn:  # no OperationalError: the dead connection never surfaced
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
