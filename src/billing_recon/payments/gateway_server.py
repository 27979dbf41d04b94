"""Run the local gateway: in a background thread (tests, demo) or as its own process.

    python -m billing_recon.payments.gateway_server --db sqlite:///gateway.db --port 12111

prints the gateway's URL once it answers and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import socket
import threading
import time
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from billing_recon.config import load
from billing_recon.config.sections import GatewaySettings
from billing_recon.payments.gateway_app import create_app
from billing_recon.payments.gateway_lifecycle import Lifecycle
from billing_recon.payments.gateway_store import (
    DEFAULT_LEASE_S,
    DEFAULT_RETENTION_S,
    GatewayStore,
)
from billing_recon.payments.gateway_webhooks import WebhookSender
from billing_recon.payments.serving import answers, bind

if TYPE_CHECKING:  # fault injection is a test double, not shipped
    from billing_recon.testing.gateway_faults import FaultInjector, FaultPlan

def fault_plan(spec: str | None) -> FaultPlan | None:
    """The fault plan of a spec (tests only): the fault injection is a test double that a
    wheel does not ship, so asking for it there is a clear error."""
    if spec is None:
        return None
    try:
        from billing_recon.testing.gateway_faults import FaultPlan
    except ImportError as exc:
        raise SystemExit("fault injection is a test feature of the source checkout; this "
                         "installation does not include billing_recon.testing") from exc
    return FaultPlan.parse(spec)


class GatewayServer:
    """The gateway app served by uvicorn on a loopback port, in a daemon thread.

    Use as a context manager, or call start() and stop(). `port=0` picks a free port; `.url`
    is known once started.
    """

    def __init__(
        self,
        store_url: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str,
        retention_s: float = DEFAULT_RETENTION_S,
        key_lease_s: float = DEFAULT_LEASE_S,
        faults: FaultPlan | None = None,
        startup_timeout_s: float = 15.0,
        lifecycle: Lifecycle | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        """Configure the server; nothing runs until start(). `faults` switches fault
        injection on (tests only). `lifecycle`: what happens to refunds after their first
        answer; events go to `webhook_url`, signed with `webhook_secret`."""
        self.store_url, self.host, self.port = store_url, host, port
        self.api_key, self.faults = api_key, faults
        self.lifecycle = lifecycle
        self.webhook_url, self.webhook_secret = webhook_url, webhook_secret
        self._sender: WebhookSender | None = None
        self.retention_s, self.key_lease_s = retention_s, key_lease_s
        self.startup_timeout_s = startup_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._store: GatewayStore | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. `http://127.0.0.1:43121` (only while running)."""
        if self._server is None:
            raise RuntimeError("the gateway server is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def store(self) -> GatewayStore:
        """The running server's store (to seed charges in-process, say)."""
        if self._store is None:
            raise RuntimeError("the gateway server is not running")
        return self._store

    def start(self) -> GatewayServer:
        """Open the store, bind the port, serve in a daemon thread; return once it answers."""
        if self._server is not None:
            raise RuntimeError("the gateway server is already running")
        self._store = GatewayStore(
            self.store_url, retention_s=self.retention_s, lease_s=self.key_lease_s,
            lifecycle=self.lifecycle,
        )
        sock = self._bind()
        config = uvicorn.Config(
            self._app(self._store),
            lifespan="off",
            log_config=None,  # leave the host process's logging configuration alone
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="gateway-server", daemon=True
        )
        self._thread.start()
        try:
            self._wait_until_answering()
            self._sender = WebhookSender(self._store, self.webhook_url,
                                         self.webhook_secret).start()
        except BaseException:
            self.stop()
            raise
        return self

    def _app(self, store: GatewayStore) -> FaultInjector | FastAPI:
        app = create_app(store, api_key=self.api_key, faults=self.faults)
        if self.faults is None:
            return app
        from billing_recon.testing.gateway_faults import FaultInjector

        return FaultInjector(app)

    def stop(self) -> None:
        """Stop settling and sending, shut uvicorn down gracefully, wait for its thread and
        close the store."""
        if self._sender is not None:
            self._sender.stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._store is not None:
            self._store.close()
        self._server = self._thread = self._store = self._sender = None

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _bind(self) -> socket.socket:
        sock = bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        return sock

    def _wait_until_answering(self) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError("the gateway server exited during startup")
            if self._server.started and answers(f"{self.url}/healthz"):
                return
            time.sleep(0.02)
        raise TimeoutError(f"the gateway server did not answer within {self.startup_timeout_s}s")


def _parse_args(argv: list[str] | None, gateway: GatewaySettings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m billing_recon.payments.gateway_server",
        description="Run the local Stripe-compatible refund gateway. Unset options come from "
        "the BILLING_RECON_GATEWAY_* settings (docs/configuration.md).",
    )
    parser.add_argument("--db", default=gateway.db_url, help="gateway database URL")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0 = any free port)")
    parser.add_argument(
        "--retention-hours", type=float, default=gateway.retention_h,
        help="how long idempotency keys are kept, at least 24 (default: %(default)s)")
    parser.add_argument(
        "--key-lease-seconds", type=float, default=gateway.key_lease_s,
        help="after this long a request's in-flight key may be taken over if its request died "
        "(default: %(default)s)")
    parser.add_argument(
        "--faults", default=gateway.faults,
        help="TESTS ONLY: a fault plan, e.g. 'drop=0.2,seed=7' ('' arms the fault routes only)")
    args = parser.parse_args(argv)
    if args.retention_hours < 24:
        parser.error("--retention-hours must be at least 24 (Stripe keeps keys 24 h)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT. Callers must send the local gateway's key
    (BILLING_RECON_GATEWAY_API_KEY, else the generated key in the home folder's gateway.key)."""
    settings = load()
    gateway = settings.gateway
    args = _parse_args(argv, gateway)
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = GatewayServer(
        args.db,
        args.host,
        args.port,
        api_key=settings.local_gateway_key(),
        retention_s=args.retention_hours * 3600,
        key_lease_s=args.key_lease_seconds,
        faults=fault_plan(args.faults),
        lifecycle=gateway.lifecycle,
        webhook_url=settings.webhooks.url,
        webhook_secret=settings.webhook_secret() if settings.webhooks.url else None,
    )
    with server:
        print(server.url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
