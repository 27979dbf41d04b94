"""A real SMTP server for the tests: aiosmtpd in its own process, TLS or STARTTLS with AUTH.

Every message it accepts is written to a Maildir before it answers 250 to DATA, so a test can
count exactly what arrived, even when the sender was killed right after. Run as
``python -m tests.mail.smtp_server --port P --cert C --key K --store DIR --mode tls|starttls``;
it prints READY and serves until SIGTERM. ``SmtpServer`` starts it and stops it by pid.
"""

from __future__ import annotations

import argparse
import mailbox
import signal
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from tests.mail.process import stop as stop_process

USER, PASSWORD = "billing-smtp", "smtp-token-1"
ROOT = Path(__file__).resolve().parents[2]


def _serve(args: argparse.Namespace) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    store = mailbox.Maildir(args.store, create=True)

    class Handler:
        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                              options: list[str]) -> str:
            if address.endswith("@refused.test"):
                return "550 5.1.1 no such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            store.add(envelope.original_content or envelope.content)  # before the 250
            return "250 2.0.0 stored"

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode()
              and auth_data.password == PASSWORD.encode())
        return AuthResult(success=ok)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    common: dict[str, Any] = {"hostname": "127.0.0.1", "port": args.port,
                              "authenticator": authenticate, "auth_require_tls": True}
    if args.mode == "tls":
        client = ssl.create_default_context(cafile=args.ca)
        # the whole session is TLS; aiosmtpd only counts STARTTLS as TLS for AUTH
        common["auth_require_tls"] = False
        controller = Controller(Handler(), ssl_context=ctx, server_hostname="127.0.0.1",
                                **common)
        controller._trigger_server = _tls_trigger(controller, client)  # type: ignore[method-assign]
    else:
        controller = Controller(Handler(), tls_context=ctx, require_starttls=True, **common)
    controller.start()
    print("READY", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()


def _tls_trigger(controller: Any, client: ssl.SSLContext) -> Any:
    """aiosmtpd's readiness probe, with a context that trusts the tests' CA."""
    import socket

    def trigger() -> None:
        with socket.create_connection(("127.0.0.1", controller.port), 1.0) as raw, \
                client.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.recv(1024)
    return trigger


@dataclass
class SmtpServer:
    """A running aiosmtpd process and the Maildir of what it accepted."""

    port: int
    store: Path
    process: subprocess.Popen[bytes]
    mode: str = "tls"
    user: str = USER
    password: str = PASSWORD

    def received(self) -> list[Any]:
        """Every message accepted so far, parsed."""
        box = mailbox.Maildir(self.store, create=True)
        return [message_from_bytes(box.get_bytes(key), policy=policy.default)
                for key in sorted(box.keys())]

    def stop(self) -> None:
        """Stop it by its pid."""
        stop_process(self.process)


def start(port: int, certs: Any, store: Path, mode: str) -> SmtpServer:
    """Start the server process; READY on its stdout means it accepts connections."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mail.smtp_server", "--port", str(port), "--cert",
         str(certs.cert), "--key", str(certs.key), "--ca", str(certs.ca), "--store", str(store),
         "--mode", mode], cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert process.stdout is not None
    line = process.stdout.readline()
    if b"READY" not in line:
        process.kill()
        process.wait()
        raise RuntimeError(f"the SMTP server did not start: {line!r}")
    return SmtpServer(port, store, process, mode)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("--port", "--cert", "--key", "--ca", "--store", "--mode"):
        parser.add_argument(name, required=True)
    parsed = parser.parse_args()
    parsed.port = int(parsed.port)
    _serve(parsed)
