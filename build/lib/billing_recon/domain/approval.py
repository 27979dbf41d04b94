"""Approval tokens (SPEC §6): HMAC-SHA256 over ticket key, proposal hash and approvers; and
the proposal MAC, the same key over the ticket key and the proposal hash."""

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


def _proposal_message(ticket_key: str, proposal_hash: str) -> bytes:
    return f"billing-recon proposal v1|{ticket_key}|{proposal_hash}".encode()


def mac_proposal(key: bytes, ticket_key: str, proposal_hash: str) -> str:
    """The proposal's MAC: a keyed seal over its hash (which covers amounts and policy), so a
    proposal edited in the database, even with its SHA-256 recomputed, is detected."""
    return hmac.new(key, _proposal_message(ticket_key, proposal_hash),
                    hashlib.sha256).hexdigest()


def verify_proposal_mac(key: bytes, mac: str | None, ticket_key: str,
                        proposal_hash: str) -> bool:
    """Constant-time check of a proposal's MAC."""
    if not mac:
        return False
    return hmac.compare_digest(mac_proposal(key, ticket_key, proposal_hash), mac)
