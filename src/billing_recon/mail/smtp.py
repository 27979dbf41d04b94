"""Sending one message by SMTP over TLS (or STARTTLS) with stdlib ``smtplib``.

The envelope (MAIL FROM, RCPT TO) and the DATA command are separate calls, so the caller can
commit "sending" between them: until DATA, nothing can have been delivered.
"""

from __future__ import annotations

import smtplib
from types import TracebackType
from typing import Self

from billing_recon.config.mail import SmtpSettings
from billing_recon.errors import MailRefused, MailUnavailable, UserInputError
from billing_recon.mail.tls import context

#: Errors that leave it unknown whether the server accepted DATA.
UNKNOWN_AFTER_DATA = (OSError, smtplib.SMTPServerDisconnected)


def _refusal(code: int, message: bytes | str, what: str) -> Exception:
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    if 500 <= code < 600:
        return MailRefused(code, f"{what}: {text}")
    return MailUnavailable(f"SMTP {what}: {code} {text}")


class SmtpSession:
    """A logged-in SMTP session (a context manager)."""

    def __init__(self, settings: SmtpSettings) -> None:
        if not settings.host:
            raise UserInputError("no SMTP server is configured (BILLING_RECON_SMTP_HOST)")
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> Self:
        s = self.settings
        ctx = context(s.ca_file)
        try:
            if s.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(s.host or "", s.port, timeout=s.timeout_s,
                                                      context=ctx)
            else:
                smtp = smtplib.SMTP(s.host or "", s.port, timeout=s.timeout_s)
                smtp.starttls(context=ctx)
            self._smtp = smtp
            smtp.ehlo()
            if s.user:
                smtp.login(s.user, s.password.get_secret_value() if s.password else "")
        except smtplib.SMTPAuthenticationError as exc:
            self.close()
            raise MailUnavailable(f"SMTP login refused: {exc.smtp_code} {exc.smtp_error!r}") \
                from exc
        except (OSError, smtplib.SMTPException) as exc:
            self.close()
            raise MailUnavailable(f"SMTP {s.host}:{s.port}: {exc}") from exc
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """QUIT (best effort)."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()

    def envelope(self, sender: str, recipients: list[str]) -> None:
        """MAIL FROM and RCPT TO; a refusal raises (nothing was sent)."""
        smtp = self._live()
        try:
            code, message = smtp.mail(sender)
            if code != 250:
                raise _refusal(code, message, f"MAIL FROM {sender}")
            for rcpt in recipients:
                code, message = smtp.rcpt(rcpt)
                if code not in (250, 251):
                    raise _refusal(code, message, f"RCPT TO {rcpt}")
        except (OSError, smtplib.SMTPException) as exc:
            raise MailUnavailable(f"SMTP envelope: {exc}") from exc

    def data(self, message: bytes) -> None:
        """DATA: returns once the server accepted the message. A refusal raises MailRefused
        or MailUnavailable (not delivered); a lost connection raises what
        ``UNKNOWN_AFTER_DATA`` lists (delivery unknown)."""
        smtp = self._live()
        try:
            smtp.data(message)
        except smtplib.SMTPDataError as exc:
            raise _refusal(exc.smtp_code, exc.smtp_error, "DATA") from exc

    def reset(self) -> None:
        """RSET after a refused envelope, so the session can send the next message."""
        try:
            self._live().rset()
        except (OSError, smtplib.SMTPException):
            self.close()

    def _live(self) -> smtplib.SMTP:
        if self._smtp is None:
            raise MailUnavailable("the SMTP session is closed")
        return self._smtp
