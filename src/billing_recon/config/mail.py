"""Mail settings: the mailbox customers write to (IMAP) and the server replies and approver
notices go out through (SMTP).

Set by ``BILLING_RECON_IMAP_*`` and ``BILLING_RECON_SMTP_*``; the mail servers block holds both
sections. TLS is always on and certificates are always verified (``*_CA_FILE`` adds a private
CA, it never turns verification off).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr

from billing_recon.config.variables import Section

Security = Literal["tls", "starttls"]


def _addresses(value: Any) -> Any:
    """``a@x.com, b@y.com`` (from the environment) as a tuple of addresses."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class ImapSettings(Section):
    """The mailbox the batch takes customers' emails from."""

    env_prefix = "BILLING_RECON_IMAP_"

    host: str | None = Field(default=None, description="IMAP server; unset: no mailbox "
                             "(emails come from folders or the inbound-email table).")
    port: int = Field(default=993, ge=1, le=65535, description="993 for implicit TLS, 143 "
                      "for STARTTLS.")
    security: Security = Field(default="tls", description="`tls` (IMAP4 over TLS) or "
                               "`starttls` (plain connect, then STARTTLS before login).")
    user: str = Field(default="", description="The mailbox's login name.")
    password: SecretStr | None = Field(default=None, description="The password or app "
                                       "token of the mailbox.")
    folder: str = Field(default="INBOX", description="The folder customers' emails arrive in.")
    keyword: str = Field(
        default="$BillingReconTicketed", pattern=r"^[A-Za-z$][A-Za-z0-9$_-]*$",
        description="IMAP keyword set on a message once its ticket is committed; messages "
        "without it are taken at the next batch (the message stays in its folder).")
    batch_size: int = Field(default=100, ge=1, le=5000, description="Messages fetched per "
                            "UID range: bounds the memory of one fetch.")
    ca_file: Path | None = Field(default=None, description="PEM file of an extra CA to "
                                 "trust (a private server's); unset: the system's CAs.")
    timeout_s: float = Field(default=60.0, gt=0, description="Socket timeout of the IMAP "
                             "connection, in seconds.")


class SmtpSettings(Section):
    """The server customer replies and approver notices are sent through, exactly once."""

    env_prefix = "BILLING_RECON_SMTP_"

    host: str | None = Field(default=None, description="SMTP server; unset: nothing is "
                             "queued or sent (replies stay drafted on their tickets).")
    port: int = Field(default=465, ge=1, le=65535, description="465 for implicit TLS, 587 "
                      "for STARTTLS.")
    security: Security = Field(default="tls", description="`tls` (SMTP over TLS) or "
                               "`starttls`.")
    user: str = Field(default="", description="Login name; empty: no AUTH.")
    password: SecretStr | None = Field(default=None, description="The password or app "
                                       "token of the SMTP account.")
    from_address: str = Field(default="billing@localhost", description="From address of "
                              "replies and notices; its domain ends their Message-IDs.")
    ca_file: Path | None = Field(default=None, description="PEM file of an extra CA to "
                                 "trust; unset: the system's CAs.")
    timeout_s: float = Field(default=60.0, gt=0, description="Socket timeout of one SMTP "
                             "session, in seconds.")
    notify: Annotated[tuple[str, ...], BeforeValidator(_addresses)] = Field(
        default=(), description="Addresses told when a ticket waits for a decision or is "
        "escalated, comma-separated; empty: every enabled enrolled approver's address.")
    max_age_h: float = Field(
        default=72.0, gt=0, description="Only tickets that changed within this many hours "
        "get a reply or notice queued: turning SMTP on never mails old tickets.")
    lease_s: float = Field(
        default=120.0, gt=0, description="Seconds a sender's claim on a queued message is "
        "trusted; after that a claim that never started sending is taken over.")
