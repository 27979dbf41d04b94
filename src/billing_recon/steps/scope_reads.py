"""The scope rows a ticket's analysis sent to the sandbox, kept in memory for its verification.

``verify_proposal`` runs the trusted rules on rows the orchestrator read from the database
itself. The analysis attempt read the very same rows a moment earlier to make the sandbox's
CSV files (the sandbox only ever receives those bytes, never these objects), so verification
takes them from here instead of reading the scope a second time: one read per ticket instead
of two, and the trusted rules check exactly the rows the sandbox saw. Anything else (another
process, a restart, a changed scope, an entry older than ``MAX_AGE_S``) is a miss, and the
caller reads afresh as before.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import pandas as pd

from billing_recon.store.tickets import Sessions

MAX_AGE_S = 60.0  # analysis and verification run back to back; older rows are not reused
MAX_ENTRIES = 256  # per database: tickets in flight at once in one process, with room to spare


@dataclass(frozen=True)
class _Read:
    scope: str
    tables: dict[str, pd.DataFrame]
    at: float


_lock = threading.Lock()
# Keyed by the session factory, i.e. by database: two databases may share ticket ids.
_reads: weakref.WeakKeyDictionary[Sessions, dict[int, _Read]] = weakref.WeakKeyDictionary()


def _canonical(scope: dict[str, Any] | None) -> str:
    return json.dumps(scope or {}, sort_keys=True, default=str)


def keep(sessions: Sessions, ticket_id: int, scope: dict[str, Any] | None,
         tables: dict[str, pd.DataFrame]) -> None:
    """Remember the rows a ticket's analysis ran on (replacing an earlier attempt's)."""
    with _lock:
        entries = _reads.setdefault(sessions, {})
        entries.pop(ticket_id, None)
        entries[ticket_id] = _Read(_canonical(scope), tables, time.monotonic())
        while len(entries) > MAX_ENTRIES:
            entries.pop(next(iter(entries)))  # the oldest


def take(sessions: Sessions, ticket_id: int, scope: dict[str, Any] | None
         ) -> dict[str, pd.DataFrame] | None:
    """The rows kept for this ticket and scope, once; None when there are none to trust."""
    with _lock:
        read = _reads.get(sessions, {}).pop(ticket_id, None)
    if read is None or read.scope != _canonical(scope):
        return None
    if time.monotonic() - read.at > MAX_AGE_S:
        return None
    return read.tables


def forget(sessions: Sessions | None = None) -> None:
    """Drop every kept read (of one database, or all)."""
    with _lock:
        if sessions is None:
            _reads.clear()
        else:
            _reads.pop(sessions, None)
