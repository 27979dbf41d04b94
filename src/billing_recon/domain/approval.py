"""Approval tokens (SPEC §6): HMAC-SHA256 over ticket key, proposal hash and approvers."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


def _message(ticket_key: str, proposal_hash: str, approvers: Sequence[str]) -> bytes:
    return "|".join([ticket_key, proposal_hash, ",".join(sorted(approvers))]).encode()


def mint_token(key: bytes, ticket_key: str, proposal_hash: str, approvers: Sequence[str]) -> str:
    """The token the orchestrator hands the refund worker after an approval."""
    if not approvers:
        raise ValueError("an approval token needs at least one approver")
    return hmac.new(key, _message(ticket_key, proposal_hash, approvers), hashlib.sha256).hexdigest()


def verify_token(
    key: bytes, token: str | None, ticket_key: str, proposal_hash: str, approvers: Sequence[str]
) -> bool:
    """Constant-time check that ``token`` was minted for exactly this proposal and approvers."""
    if not token or not approvers:
        return False
    expected = mint_token(key, ticket_key, proposal_hash, approvers)
    return hmac.compare_digest(expected, token)
