"""Named crash points for the chaos suite: SIGKILL this process the n-th time one is reached.

``BILLING_RECON_CHAOS_KILL_AT=refund.after_call:2`` kills the process the second time the
refund worker passes ``refund.after_call``. Unset (always, outside tests), a point costs one
dictionary lookup. A SIGKILL, not an exception: nothing gets to clean up, as in a real crash.
"""

from __future__ import annotations

import os
import signal
import threading

KILL_AT_ENV = "BILLING_RECON_CHAOS_KILL_AT"
_lock = threading.Lock()
_seen: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Die here if the environment names this point and its count is reached."""
    target = os.environ.get(KILL_AT_ENV)
    if not target:
        return
    point, _, nth = target.partition(":")
    if point != name:
        return
    with _lock:
        _seen[name] = _seen.get(name, 0) + 1
        reached = _seen[name] >= int(nth or "1")
    if reached:
        os.kill(os.getpid(), signal.SIGKILL)
