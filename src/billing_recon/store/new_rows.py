"""Inserts that skip a row whose key is taken: one statement where a savepoint took three.

``INSERT ... ON CONFLICT (key) DO NOTHING`` (SQLite and PostgreSQL) with ``RETURNING``: the
row comes back when it was inserted, nothing when another row holds the key. On PostgreSQL an
uncommitted insert of the same key by another transaction makes ours wait for its outcome
(inserted if it rolls back, skipped if it commits), as the unique index did for the savepoint;
any other integrity error (a foreign key) still raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from billing_recon.store.models import Base


def insert_new(session: Session, model: type[Base], values: dict[str, Any],
               key: Sequence[str]) -> Insert:
    """An insert of ``values`` into ``model``'s table that does nothing when a row with the
    same ``key`` columns exists; the caller adds ``returning`` to see which happened."""
    if session.get_bind().dialect.name == "sqlite":
        return sqlite.insert(model).values(values).on_conflict_do_nothing(index_elements=key)
    return postgresql.insert(model).values(values).on_conflict_do_nothing(index_elements=key)
