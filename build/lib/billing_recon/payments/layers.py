"""The three exactly-once layers of a refund (switched off only by tests: steps/switches.py).

1. ``cache`` - the Prefect cache and SERIALIZABLE transaction on the ticket key (tasks/refund.py)
2. ``ledger`` - the ledger's unique row and write-ahead call record per idempotency key
3. ``gateway_idempotency`` - the gateway's replay of ``Idempotency-Key``
"""

from __future__ import annotations

from enum import StrEnum


class Layer(StrEnum):
    """One exactly-once layer."""

    CACHE = "cache"
    LEDGER = "ledger"
    GATEWAY_IDEMPOTENCY = "gateway_idempotency"
