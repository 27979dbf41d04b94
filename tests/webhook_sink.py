"""A webhook endpoint for tests: a real HTTP server on loopback that records what it is sent.

It stands where a webhook receiver would (the gateway under test POSTs to it) and answers the
statuses a test scripts (500 twice, then 200, say), so delivery, retries, signatures, order
and duplicates can be checked from the outside.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Received:
    """One POST as it arrived."""

    at: float
    body: str
    signature: str | None
    answered: int

    @property
    def event(self) -> dict[str, Any]:
        """The body as JSON."""
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class WebhookSink:
    """Records every POST; answers ``script``'s statuses in turn, then 200."""

    def __init__(self, script: list[int] | None = None) -> None:
        """Bind a free loopback port; ``start()`` serves."""
        self.script = list(script or [])
        self.received: list[Received] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                with sink.lock:
                    status = sink.script.pop(0) if sink.script else 200
                    sink.received.append(Received(time.monotonic(), body,
                                                  self.headers.get("Stripe-Signature"), status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/webhooks/stripe"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookSink:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()

    def accepted(self) -> list[Received]:
        """The deliveries answered 2xx, in arrival order."""
        with self.lock:
            return [r for r in self.received if r.answered < 300]

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """Wait until ``count`` deliveries were accepted; them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.accepted()
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{len(self.accepted())} of {count} webhook deliveries arrived")
