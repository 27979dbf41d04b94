"""Leases: locks that expire, in the billing database every worker already shares.

A lease is one row per key naming its holder and when it expires. Taking it is an INSERT (or
an UPDATE of an expired row); a holder killed while holding it blocks its key for at most the
lease, after which the next worker takes it over. Works on SQLite (one machine, many processes)
and PostgreSQL (many machines); expiry uses each worker's wall clock, so clocks must agree to
well within a lease (NTP).

The table is created by this module (``metadata.create_all``), like the gateway's, not by the
billing schema's migrations: it holds no business data and can be dropped at any time no
refund step is running.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

POLL_S = 0.1

metadata = sa.MetaData()
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
_created: set[int] = set()
_create_lock = threading.Lock()


def ensure_tables(engine: Engine, meta: sa.MetaData = metadata) -> None:
    """Create the module's tables once per engine (tolerating another process doing it too)."""
    marker = hash((id(engine), id(meta)))
    with _create_lock:
        if marker in _created:
            return
        try:
            meta.create_all(engine)
        except sa.exc.DBAPIError:
            meta.create_all(engine)  # created concurrently: the second pass only checks
        _created.add(marker)


@dataclass
class LeaseStore:
    """Acquire, check and release leases on ``engine``."""

    engine: Engine
    lease_s: float
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        """Make sure the table exists."""
        ensure_tables(self.engine)

    def try_acquire(self, key: str, holder: str, lease_s: float | None = None) -> bool:
        """Take the lease if it is free, expired or already ours (then it is extended)."""
        now = self.clock()
        expires = now + (lease_s or self.lease_s)
        try:
            with self.engine.begin() as conn:
                conn.execute(leases.insert().values(key=key, holder=holder, expires_at=expires))
            return True
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            taken = conn.execute(
                leases.update()
                .where(leases.c.key == key)
                .where(sa.or_(leases.c.expires_at <= now, leases.c.holder == holder))
                .values(holder=holder, expires_at=expires))
        return taken.rowcount == 1

    def acquire(self, key: str, holder: str, timeout: float | None = None,
                lease_s: float | None = None) -> bool:
        """Wait up to ``timeout`` (None: until the current lease expires) to take the lease."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.try_acquire(key, holder, lease_s):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True

    def release(self, key: str, holder: str) -> bool:
        """Give the lease up; False if it was not ours any more (it expired and was taken)."""
        with self.engine.begin() as conn:
            gone = conn.execute(
                leases.delete().where(leases.c.key == key).where(leases.c.holder == holder))
        return gone.rowcount == 1

    def holder(self, key: str) -> str | None:
        """Who holds an unexpired lease on ``key``."""
        with self.engine.connect() as conn:
            return conn.scalar(sa.select(leases.c.holder).where(
                leases.c.key == key, leases.c.expires_at > self.clock()))

    def wait_free(self, key: str, timeout: float | None = None) -> bool:
        """Wait until nobody holds ``key``; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.holder(key) is not None:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True
