"""The TLS context of both mail clients: verification always on, an extra CA optional."""

from __future__ import annotations

import ssl
from pathlib import Path

from billing_recon.errors import UserInputError


def context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's CAs, plus ``ca_file`` when given; hostnames are checked."""
    ctx = ssl.create_default_context()
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise UserInputError(f"cannot read the CA file {ca_file}: {exc}") from exc
    return ctx
