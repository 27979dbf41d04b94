"""The ticket key of SPEC §5: the idempotency key of a whole ticket."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

# Fixed forever: changing it would re-key every ticket and defeat duplicate detection.
TICKET_KEY_NAMESPACE = uuid.UUID("5b0f3c1e-6a44-4c8e-9a43-2f1f0e7b9d21")


def ticket_key(sender_email: str, invoice_ids: Iterable[str]) -> str:
    """UUIDv5 over ``sender_lowercase | sorted,invoice,ids``."""
    name = sender_email.strip().lower() + "|" + ",".join(sorted(set(invoice_ids)))
    return str(uuid.uuid5(TICKET_KEY_NAMESPACE, name))


def refund_idempotency_key(key: str, payment_id: str, attempt: int = 0) -> str:
    """The gateway Idempotency-Key of one (ticket, payment) refund call.

    ``attempt`` counts the earlier refunds of this (ticket, payment) that failed or were
    canceled: a retry after a failure is a new request (the gateway would replay the failed
    one under the old key); the first attempt keeps SPEC §5's key.
    """
    base = f"{key}:{payment_id}"
    return base if attempt == 0 else f"{base}:retry{attempt}"
