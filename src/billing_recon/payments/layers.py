"""The three exactly-once layers of a refund, and the test switch that turns them off.

1. ``cache`` - the Prefect cache and SERIALIZABLE transaction on the ticket key (tasks/refund.py)
2. ``ledger`` - the ledger's unique row and write-ahead call record per idempotency key
3. ``gateway_idempotency`` - the gateway's replay of ``Idempotency-Key``

``BILLING_RECON_LAYERS_OFF=cache,ledger`` switches layers off so the chaos suite can prove each
one alone prevents a second refund. Never set it outside tests.
"""

from __future__ import annotations

import logging
import os
from enum import StrEnum

LAYERS_OFF_ENV = "BILLING_RECON_LAYERS_OFF"
log = logging.getLogger(__name__)
_warned: set[frozenset[str]] = set()


class Layer(StrEnum):
    """One exactly-once layer."""

    CACHE = "cache"
    LEDGER = "ledger"
    GATEWAY_IDEMPOTENCY = "gateway_idempotency"


def layers_off() -> frozenset[Layer]:
    """The layers switched off by the environment (read on every call: tests change it)."""
    raw = os.environ.get(LAYERS_OFF_ENV, "")
    names = frozenset(name.strip().lower() for name in raw.split(",") if name.strip())
    unknown = names - {layer.value for layer in Layer}
    if unknown:
        raise ValueError(f"{LAYERS_OFF_ENV}: unknown layer(s) {sorted(unknown)}; "
                         f"known: {', '.join(layer.value for layer in Layer)}")
    if names and names not in _warned:
        _warned.add(names)
        log.warning("exactly-once layers switched off for testing: %s", ", ".join(sorted(names)))
    return frozenset(Layer(name) for name in names)


def is_on(layer: Layer) -> bool:
    """Whether ``layer`` protects refunds in this process."""
    return layer not in layers_off()
