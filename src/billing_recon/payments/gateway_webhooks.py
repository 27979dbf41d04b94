"""The local gateway's clock: refunds settle and events go out signed, as Stripe sends them.

A daemon thread beside the gateway's server settles due refunds (gateway_settlement.py) and,
when a webhook endpoint is configured, POSTs each due event to it with a ``Stripe-Signature``
header made by the official SDK (``stripe.WebhookSignature``) with the endpoint's secret. A
2xx is a delivery; anything else, or no answer, is retried with exponential backoff.
"""

from __future__ import annotations

import json
import logging
import threading

import httpx
import stripe

from billing_recon.payments import gateway_settlement
from billing_recon.payments.gateway_store import GatewayStore

log = logging.getLogger(__name__)
TICK_S = 0.1
SEND_TIMEOUT_S = 5.0


class WebhookSender:
    """Settles refunds and delivers events for one gateway store until stopped."""

    def __init__(self, store: GatewayStore, url: str | None, secret: str | None) -> None:
        """``url``/``secret``: the endpoint and its signing secret; without them refunds
        still settle and events wait in the database for an endpoint."""
        if url and not secret:
            raise ValueError("a webhook endpoint needs its signing secret")
        self.store, self.url, self.secret = store, url, secret
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-webhooks", daemon=True)
        self._http = httpx.Client(timeout=SEND_TIMEOUT_S, trust_env=False)

    def start(self) -> WebhookSender:
        """Start ticking in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop ticking and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._http.close()

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick()
            except Exception:  # a database hiccup: the next tick tries again
                log.exception("local gateway: settling or delivering failed")

    def tick(self) -> int:
        """Settle what is due and attempt every due delivery; how many were delivered."""
        gateway_settlement.settle_due(self.store)
        if not self.url:
            return 0
        sent = 0
        for body in gateway_settlement.claim_due_events(self.store):
            if self._send(body):
                gateway_settlement.delivered(self.store, body["id"])
                sent += 1
            else:
                gateway_settlement.undelivered(self.store, body["id"])
        return sent

    def _send(self, body: dict[str, object]) -> bool:
        assert self.url is not None and self.secret is not None
        payload = json.dumps(body, separators=(",", ":"))
        header = stripe.WebhookSignature.generate_signature_header(payload, self.secret)
        try:
            answer = self._http.post(self.url, content=payload, headers={
                "Stripe-Signature": header, "Content-Type": "application/json"})
        except httpx.HTTPError:
            return False
        return answer.is_success
