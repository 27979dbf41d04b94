"""Real mail servers on 127.0.0.1 for the mailbox and reply tests: dovecot (IMAP) and aiosmtpd
(SMTP), each started here with the tests' own CA and stopped by its pid."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_recon import runtime
from billing_recon.steps.deps import Deps
from tests.mail import dovecot, smtp_server
from tests.mail.certs import Certs, make_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA and a 127.0.0.1 certificate, for both servers."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def imap_server(certs: Certs) -> Iterator[dovecot.Dovecot]:
    """A fresh dovecot (empty INBOX); CI must not skip these tests, so a missing one fails."""
    if not os.path.exists(dovecot.DOVECOT):
        if os.environ.get("CI"):
            pytest.fail("dovecot is required in CI (.ci/apt-packages.txt: dovecot-imapd)")
        pytest.skip("dovecot not installed (Debian package dovecot-imapd)")
    server = dovecot.start(certs)
    yield server
    server.stop()


@pytest.fixture(params=["tls", "starttls"])
def smtp(request: pytest.FixtureRequest, certs: Certs,
         tmp_path: Path) -> Iterator[smtp_server.SmtpServer]:
    """An aiosmtpd process with AUTH, over implicit TLS and over STARTTLS."""
    server = smtp_server.start(dovecot.free_port(), certs, tmp_path / "received",
                               str(request.param))
    yield server
    server.stop()


def imap_env(server: dovecot.Dovecot, certs: Certs, security: str = "tls") -> dict[str, str]:
    """The settings of the mailbox on ``server``."""
    port = server.tls_port if security == "tls" else server.starttls_port
    return {"BILLING_RECON_IMAP_HOST": "127.0.0.1", "BILLING_RECON_IMAP_PORT": str(port),
            "BILLING_RECON_IMAP_SECURITY": security, "BILLING_RECON_IMAP_USER": server.user,
            "BILLING_RECON_IMAP_PASSWORD": server.password,
            "BILLING_RECON_IMAP_CA_FILE": str(certs.ca)}


def smtp_env(server: smtp_server.SmtpServer, certs: Certs, security: str) -> dict[str, str]:
    """The settings of the SMTP account on ``server``."""
    return {"BILLING_RECON_SMTP_HOST": "127.0.0.1", "BILLING_RECON_SMTP_PORT": str(server.port),
            "BILLING_RECON_SMTP_SECURITY": security, "BILLING_RECON_SMTP_USER": server.user,
            "BILLING_RECON_SMTP_PASSWORD": server.password,
            "BILLING_RECON_SMTP_CA_FILE": str(certs.ca),
            "BILLING_RECON_SMTP_FROM_ADDRESS": "billing@acme.test",
            "BILLING_RECON_SMTP_NOTIFY": "approvers@acme.test"}


@pytest.fixture
def mail_deps(db_url: str, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[Deps]:
    """Deps on a migrated database; the test sets the mail variables first (``use``)."""
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_RECON_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BILLING_RECON_LLM", raising=False)
    runtime.reset()
    yield runtime.build()
    runtime.reset()


def use(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Deps:
    """Deps built with these variables set."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    return runtime.build()
