"""Engines, sessions and schema migrations for the billing database."""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, inspect, make_url
from sqlalchemy.orm import Session, SessionTransactionOrigin, sessionmaker

from billing_recon.errors import UserInputError

MIGRATIONS = Path(__file__).parent / "migrations"
#: Server connections are replaced after this long, so one silently dropped by the network
#: (which sends nothing a readiness check could see) is not kept for ever.
POOL_RECYCLE_S = 1800


def shown_url(url: str) -> str:
    """The URL as it may be printed or logged: any password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        return "<unparseable database URL>"


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and enforced foreign keys.

    A URL SQLAlchemy cannot use (unparseable, an unknown dialect or a missing driver, a port
    that is not a number) is a ``UserInputError`` naming it, password masked.
    """
    try:
        return _engine(url)
    except (exc.ArgumentError, ValueError, ImportError) as error:
        raise UserInputError(f"bad database URL {shown_url(url)}: {error} (expected e.g. "
                             f"sqlite:///billing_recon.db or postgresql://user@host:5432/db)"
                             ) from error


def _engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("sqlite"):
        engine = create_engine(url, pool_recycle=POOL_RECYCLE_S)
        event.listen(engine, "checkout", _check_idle_connection)
        return engine
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        if ":memory:" not in url:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    return engine


def _has_input(dbapi_conn: Any) -> bool:
    """Whether the server sent anything (or the socket closed) since the connection went idle.

    A pooled connection has no query in flight, so a readable socket means the server spoke
    on its own: almost always its goodbye (a restart, an administrator's terminate) and EOF.
    """
    fd = dbapi_conn.fileno()
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


def _check_idle_connection(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """On checkout: a round trip only for a connection the server spoke on while it was idle.

    ``pool_pre_ping`` sends a ``SELECT 1`` on every checkout, some 10% of a ticket's database
    time. Looking at the socket first costs no round trip; a dead connection raises
    InvalidatePoolError, so the pool (as after a failed pre-ping) drops every connection made
    before now and hands out a new one: a database restart is still invisible to callers.
    """
    try:
        if dbapi_conn.closed or _has_input(dbapi_conn):
            with dbapi_conn.cursor() as cursor:
                cursor.execute("SELECT 1")
            dbapi_conn.rollback()
    except Exception as error:  # the driver's own error types: any failure means unusable
        raise exc.InvalidatePoolError(f"stale pooled connection: {error}") from error


class BillingSession(Session):
    """A session whose reads outside ``begin()`` open no transaction on PostgreSQL.

    Every write here runs inside an explicit ``session.begin()`` (or ``transaction``); a
    session used without one only reads. On PostgreSQL such a read session used to cost a
    BEGIN and a ROLLBACK round trip around its statements, and each ROLLBACK made psycopg
    drop its prepared statements (so none was ever prepared). Its statements now run in
    autocommit, on the same pool: the same data at READ COMMITTED, where each statement
    already saw its own snapshot. SQLite's driver opens no transaction for a read anyway.
    A write outside ``begin()`` (an ORM flush, an INSERT, UPDATE or DELETE statement) is an
    error on either database: it was never committed, and in autocommit it would be at once.
    So is a locking read (``FOR UPDATE``): its lock would end with its own statement.
    """

    def __init__(self, *args: Any, reads: Engine | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reads = reads

    def get_bind(self, mapper: Any = None, *, clause: Any = None, **kw: Any) -> Any:
        bind = super().get_bind(mapper, clause=clause, **kw)
        begun = self.get_transaction()
        if begun is not None and begun.origin is not SessionTransactionOrigin.AUTOBEGIN:
            return bind
        if self._flushing or getattr(clause, "is_dml", False):
            raise exc.InvalidRequestError("a write outside session.begin() would never be "
                                          "committed: open the transaction explicitly")
        if getattr(clause, "_for_update_arg", None) is not None:
            raise exc.InvalidRequestError("a locking read outside session.begin() would hold "
                                          "its lock for no transaction: open it explicitly")
        return bind if self._reads is None else self._reads


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory that keeps loaded objects usable after commit (``BillingSession``)."""
    reads = (engine.execution_options(isolation_level="AUTOCOMMIT")
             if engine.dialect.name == "postgresql" else None)
    return sessionmaker(engine, expire_on_commit=False, class_=BillingSession, reads=reads)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    from alembic import command

    command.upgrade(_alembic_config(engine), "head")


def has_schema(engine: Engine) -> bool:
    """Whether the billing tables exist."""
    return inspect(engine).has_table("tickets")
