"""Test switches the refund path obeys: exactly-once layers off, named crash points.

Production never sets any: the default ``Switches()`` in ``Deps`` keeps every layer on and
arms no crash point, so the refund path runs unchanged and reads nothing per call. Tests
inject others through ``Deps``; a worker process of the chaos suite gets them from its
environment once, when ``runtime.build`` makes its ``Deps`` (``Switches.from_env``):

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
from collections.abc import Mapping
from dataclasses import dataclass, field

from billing_recon.payments.layers import Layer

LAYERS_OFF_ENV = "BILLING_RECON_LAYERS_OFF"
KILL_AT_ENV = "BILLING_RECON_CHAOS_KILL_AT"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Switches:
    """Which exactly-once layers are off and which crash point is armed (none, in production)."""

    layers_off: frozenset[Layer] = frozenset()
    kill_at: tuple[str, int] | None = None
    _seen: Counter[str] = field(default_factory=Counter, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Switches:
        """The switches a test worker's environment names; an unknown layer is a ValueError."""
        raw = environ.get(LAYERS_OFF_ENV, "")
        names = frozenset(name.strip().lower() for name in raw.split(",") if name.strip())
        unknown = names - {layer.value for layer in Layer}
        if unknown:
            raise ValueError(f"{LAYERS_OFF_ENV}: unknown layer(s) {sorted(unknown)}; "
                             f"known: {', '.join(layer.value for layer in Layer)}")
        if names:
            log.warning("exactly-once layers switched off for testing: %s",
                        ", ".join(sorted(names)))
        point, _, nth = environ.get(KILL_AT_ENV, "").partition(":")
        return cls(frozenset(Layer(n) for n in names),
                   (point, int(nth or "1")) if point else None)

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
