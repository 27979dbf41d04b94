"""The webhook receiver's server: in a background thread beside the embedded local gateway, or
as its own service when deployed (``python -m billing_recon.webhook_service``, which builds the
deps this module does not import).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import uvicorn

from billing_recon.config.webhooks import PATH
from billing_recon.payments.serving import answers, bind
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
        sock = bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="webhook-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not (self._server.started and answers(f"http://{self.host}:{self.port}/healthz")):
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
