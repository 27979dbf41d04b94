"""Run the webhook receiver: in a background thread beside the embedded local gateway, or as
its own service when deployed:

    python -m billing_recon.payments.webhook_server [--host 0.0.0.0] [--port 8788]

serves ``POST /v1/webhooks/stripe`` until SIGTERM or SIGINT, on the billing database and with
the signing secret of the settings (BILLING_RECON_WEBHOOK_*, docs/configuration.md). Point
Stripe's webhook endpoint (or the local gateway's ``BILLING_RECON_WEBHOOK_URL``) at it.
"""

from __future__ import annotations

import argparse
import signal
import socket
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

import httpx
import uvicorn

from billing_recon.config.webhooks import PATH
from billing_recon.payments.webhook_app import create_webhook_app

if TYPE_CHECKING:
    from billing_recon.steps.webhook_inbox import WebhookInbox


class WebhookServer:
    """The receiver app for ``inbox``, served by uvicorn in a daemon thread (port 0: any)."""

    def __init__(self, inbox: WebhookInbox, *, secret: str, tolerance_s: int,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        """Configure; ``start()`` binds, serves and starts the inbox's worker."""
        self.inbox, self.host, self.port = inbox, host, port
        app = create_webhook_app(inbox.record, inbox.wake, secret=secret,
                                 tolerance_s=tolerance_s)
        self._server = uvicorn.Server(uvicorn.Config(
            app, lifespan="off", log_config=None, log_level="warning", access_log=False,
            timeout_graceful_shutdown=5))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The endpoint's URL, e.g. ``http://127.0.0.1:43121/v1/webhooks/stripe``."""
        return f"http://{self.host}:{self.port}{PATH}"

    def start(self, timeout_s: float = 15.0) -> WebhookServer:
        """Serve, start the inbox's worker (it first works on what an earlier run left)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="webhook-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not (self._server.started and _answers(f"http://{self.host}:{self.port}/healthz")):
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.02)
        self.inbox.start()
        return self

    def stop(self) -> None:
        """Stop serving, then the inbox's worker."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.inbox.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Serve the receiver on the settings' database and secret until SIGTERM/SIGINT."""
    from billing_recon import runtime
    from billing_recon.config import load
    from billing_recon.steps.webhook_inbox import WebhookInbox

    settings = load()
    parser = argparse.ArgumentParser(prog="python -m billing_recon.payments.webhook_server",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.webhooks.host)
    parser.add_argument("--port", type=int, default=settings.webhooks.port)
    args = parser.parse_args(argv)
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    deps = runtime.build(settings)
    server = WebhookServer(WebhookInbox(deps), secret=settings.webhook_secret(),
                           tolerance_s=settings.webhooks.tolerance_s, host=args.host,
                           port=args.port).start()
    print(server.url, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        runtime.reset()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
