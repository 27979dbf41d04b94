"""The mail servers block: the IMAP mailbox customers write to and the SMTP server replies and
approver notices go out through."""

from __future__ import annotations

from pydantic import Field

from billing_recon.config import ImapSettings, SmtpSettings
from billing_recon.mail.imap import Mailbox
from billing_recon.mail.smtp import SmtpSession
from billing_recon_blocks.parts import DOCS_URL, SectionsBlock


class MailServers(SectionsBlock):
    """Where customers' emails are taken from (IMAP) and replies are sent through (SMTP).

    Example:
        ```python
        from billing_recon_blocks.mail import MailServers

        servers = MailServers.load("BLOCK_NAME")
        with servers.get_mailbox() as box:
            print(box.untaken())
        ```
    """

    _block_type_name = "Billing Recon Mail Servers"
    _documentation_url = DOCS_URL  # type: ignore[assignment]

    imap: ImapSettings = Field(description="The mailbox: server, TLS or STARTTLS, login, "
                               "password or app token, folder, keyword, UID range size.")
    smtp: SmtpSettings = Field(description="The SMTP server: TLS or STARTTLS, login, password "
                               "or app token, From address, who is told of decisions due.")

    def get_mailbox(self) -> Mailbox:
        """An IMAP session on the folder (use it as a context manager)."""
        return Mailbox(self.imap)

    def get_smtp(self) -> SmtpSession:
        """An SMTP session (use it as a context manager)."""
        return SmtpSession(self.smtp)
