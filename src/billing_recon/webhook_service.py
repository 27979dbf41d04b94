"""Run the webhook receiver as its own service (deployed):

    python -m billing_recon.webhook_service [--host 0.0.0.0] [--port 8788]

serves ``POST /v1/webhooks/stripe`` until SIGTERM or SIGINT, on the billing database and with
the signing secret of the settings (BILLING_RECON_WEBHOOK_*, docs/configuration.md). Point
Stripe's webhook endpoint (or the local gateway's ``BILLING_RECON_WEBHOOK_URL``) at it. It sits
beside ``runtime`` (whose deps it builds), above ``payments.webhook_server``, which ``runtime``
also uses for the embedded receiver.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from billing_recon import runtime
from billing_recon.config import load
from billing_recon.payments.webhook_server import WebhookServer
from billing_recon.steps.webhook_inbox import WebhookInbox


def main(argv: list[str] | None = None) -> int:
    """Serve the receiver on the settings' database and secret until SIGTERM/SIGINT."""
    settings = load()
    parser = argparse.ArgumentParser(prog="python -m billing_recon.webhook_service",
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
