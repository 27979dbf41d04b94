"""Test switches the refund path obeys: exactly-once layers off, named crash points.

Production never sets any: the default ``Switches()`` in ``Deps`` keeps every layer on and
arms no crash point, so the refund path runs unchanged and reads nothing per call. Tests
inject others through ``Deps``; a worker process of the chaos suite gets them from its
settings (section ``switches``) once, when ``runtime.build`` makes its ``Deps``:

- ``BILLING_RECON_LAYERS_OFF=cache,ledger`` switches exactly-once layers off, so the chaos
  suite can prove each one alone prevents a second refund (payments/layers.py);
- ``BILLING_RECON_CHAOS_KILL_AT=refund.after_call:2`` SIGKILLs the process the second time
  the refund worker passes ``refund.after_call``: nothing gets to clean up, as in a crash.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections import Counter
from dataclasses import dataclass, field

from billing_recon.config.sections import SwitchSettings
from billing_recon.payments.layers import Layer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Switches:
    """Which exactly-once layers are off and which crash point is armed (none, in production)."""

    layers_off: frozenset[Layer] = frozenset()
    kill_at: tuple[str, int] | None = None
    _seen: Counter[str] = field(default_factory=Counter, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @classmethod
    def from_settings(cls, given: SwitchSettings) -> Switches:
        """The switches a test worker's settings name (none in production)."""
        if given.layers_off:
            log.warning("exactly-once layers switched off for testing: %s",
                        ", ".join(sorted(given.layers_off)))
        point, _, nth = (given.chaos_kill_at or "").partition(":")
        return cls(given.layers_off, (point, int(nth or "1")) if point else None)

    def on(self, layer: Layer) -> bool:
        """Whether ``layer`` protects refunds in this process."""
        return layer not in self.layers_off

    def crash_point(self, name: str) -> None:
        """Die here (SIGKILL) if this point is armed and reached its count."""
        if self.kill_at is None or self.kill_at[0] != name:
            return
        with self._lock:
            self._seen[name] += 1
            reached = self._seen[name] >= self.kill_at[1]
        if reached:
            os.kill(os.getpid(), signal.SIGKILL)
