"""What SQL a block of code runs, and how many commits: the tests that count them share this."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker


@contextmanager
def _listening(sessions: sessionmaker[Session], name: str,
               listener: Callable[..., None]) -> Iterator[None]:
    engine = sessions.kw["bind"]
    event.listen(engine, name, listener)
    try:
        yield
    finally:
        event.remove(engine, name, listener)


@contextmanager
def statements(sessions: sessionmaker[Session]) -> Iterator[list[str]]:
    """The text of each statement run on the sessions' engine inside the block, in order."""
    seen: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        seen.append(sql)

    with _listening(sessions, "before_cursor_execute", statement):
        yield seen


@contextmanager
def statement_kinds(sessions: sessionmaker[Session]) -> Iterator[list[str]]:
    """The first word (SELECT, INSERT, ...) of each statement run on the sessions' engine
    inside the block, in order."""
    seen: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        seen.append(sql.split()[0].upper())

    with _listening(sessions, "before_cursor_execute", statement):
        yield seen


@contextmanager
def commits(sessions: sessionmaker[Session]) -> Iterator[list[object]]:
    """One entry per commit on the sessions' engine inside the block."""
    seen: list[object] = []
    with _listening(sessions, "commit", seen.append):
        yield seen
