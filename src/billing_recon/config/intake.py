"""Intake settings: what an inbound email may be before it is refused unread."""

from __future__ import annotations

from pydantic import Field

from billing_recon.config.variables import Section

MIB = 1024 * 1024


class IntakeSettings(Section):
    """How inbound emails are taken in."""

    env_prefix = "BILLING_RECON_INTAKE_"

    max_email_bytes: int = Field(
        default=10 * MIB, ge=1, description="Emails larger than this many bytes are refused "
        "unread as REJECTED(email_too_large) (default 10 MiB); parsing takes about ten times "
        "an email's size in memory.")
