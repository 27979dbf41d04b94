"""Time-based one-time codes (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits).

Each approver's authenticator app holds a secret enrolled once; the code it shows proves the
decision was made by the person holding that device. A code is accepted one step either side
of now (clock skew); which step matched is returned so the caller can refuse a replay.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import pyotp

from billing_recon.errors import UserInputError

STEP_S = 30
DIGITS = 6
WINDOW = 1  # steps accepted either side of now
ISSUER = "billing-recon"
MIN_SECRET_BYTES = 16  # RFC 4226 R6: at least 128 bits


def new_secret() -> str:
    """A fresh random 160-bit secret, base32 as authenticator apps expect."""
    return pyotp.random_base32()


def normalise_secret(text: str) -> str:
    """A given base32 secret, upper-cased without spaces; refused when short or not base32."""
    secret = "".join(text.split()).upper().rstrip("=")
    try:
        raw = base64.b32decode(secret + "=" * (-len(secret) % 8))
    except (binascii.Error, ValueError) as exc:
        raise UserInputError("the TOTP secret is not base32 (A-Z, 2-7)") from exc
    if len(raw) < MIN_SECRET_BYTES:
        raise UserInputError(f"the TOTP secret is too short: {len(raw) * 8} bits, "
                             f"at least {MIN_SECRET_BYTES * 8} needed")
    return secret


def _totp(secret: str, digits: int = DIGITS) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=digits, digest=hashlib.sha1, interval=STEP_S)


def provisioning_uri(secret: str, name: str) -> str:
    """The ``otpauth://`` URI an authenticator app enrolls from (it contains the secret)."""
    return _totp(secret).provisioning_uri(name=name, issuer_name=ISSUER)


def time_step(at: float) -> int:
    """The RFC 6238 counter T for a Unix time."""
    return int(at // STEP_S)


def code_at(secret: str, at: float, digits: int = DIGITS) -> str:
    """The code an authenticator shows at Unix time ``at``."""
    return _totp(secret, digits).generate_otp(time_step(at))


def matching_step(secret: str, code: str, at: float, window: int = WINDOW) -> int | None:
    """The time step within ``window`` of ``at`` whose code equals ``code``, else None."""
    given = code.strip().replace(" ", "")
    if not given.isdigit() or len(given) != DIGITS:
        return None
    totp, now = _totp(secret), time_step(at)
    for step in range(now - window, now + window + 1):
        if step >= 0 and hmac.compare_digest(totp.generate_otp(step), given):
            return step
    return None
