"""What SQL a block of code runs: the tests that count statements share this."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker


@contextmanager
def statement_kinds(sessions: sessionmaker[Session]) -> Iterator[list[str]]:
    """The first word (SELECT, INSERT, ...) of each statement run on the sessions' engine
    inside the block, in order."""
    seen: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        seen.append(sql.split()[0].upper())

    engine = sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", statement)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", statement)
