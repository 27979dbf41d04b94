"""Secrets sealed at rest: Fernet (AES-128-CBC + HMAC-SHA256) under the approver key.

The key material comes from ``Settings.approver_key()`` (an environment variable or an
owner-only file); any high-entropy string is turned into a Fernet key with SHA-256, so the
raw value never has to be in Fernet's own format.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken


class SealBroken(ValueError):
    """A sealed value that this key cannot open (another key, or tampered)."""


def _fernet(key_material: bytes) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key_material).digest()))


def seal(key_material: bytes, plain: str) -> str:
    """Encrypt and authenticate ``plain``; the result is safe to store."""
    return _fernet(key_material).encrypt(plain.encode()).decode("ascii")


def unseal(key_material: bytes, sealed: str) -> str:
    """Decrypt a value sealed under the same key, or SealBroken."""
    try:
        return _fernet(key_material).decrypt(sealed.encode("ascii")).decode()
    except (InvalidToken, UnicodeError) as exc:
        raise SealBroken("cannot open the sealed value with this key") from exc
