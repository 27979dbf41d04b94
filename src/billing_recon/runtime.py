"""Build the pipeline's dependencies once per process (database, model, sandbox, gateway)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing_recon.config import Settings, load
from billing_recon.domain.fsm import State
from billing_recon.domain.money import to_minor_units
from billing_recon.domain.proposal import Proposal
from billing_recon.llm.backends import chat_model
from billing_recon.payments.gateway_store import GatewayStore
from billing_recon.payments.refunds import RefundClient
from billing_recon.sandbox.factory import make_sandbox
from billing_recon.steps.deps import Deps
from billing_recon.steps.switches import Switches
from billing_recon.store import ledger
from billing_recon.store.db import make_engine, migrate, session_factory
from billing_recon.store.models import Payment, Refund, Ticket

if TYPE_CHECKING:
    from billing_recon.payments.gateway_server import GatewayServer
    from billing_recon.payments.webhook_server import WebhookServer

log = logging.getLogger(__name__)
_lock = threading.Lock()
_cache: dict[str, Deps] = {}
_gateways: dict[str, GatewayServer] = {}  # GatewayServer: imported lazily (see below)
_receivers: list[WebhookServer] = []  # the embedded gateways' webhook receivers
_seeded: dict[str, int] = {}
_source: Callable[[], Settings | None] | None = None


SEED_CHUNK = 500  # payment ids per IN (...) list


def _payments_to_refund(session: Session) -> list[str]:
    """The payments the refund worker may call the gateway for: those of APPROVED tickets."""
    wanted: set[str] = set()
    for stored in session.scalars(select(Ticket.proposal).where(
            Ticket.state == State.APPROVED.value, Ticket.proposal.is_not(None))):
        try:
            proposal = Proposal.model_validate(stored)
        except ValueError:  # the worker refuses this ticket itself; it holds up no other
            continue
        wanted.update(pay.payment_id for refund in proposal.refunds for pay in refund.payments)
    return sorted(wanted)


def seed_gateway_charges(store: GatewayStore, session: Session) -> int:
    """Mirror as gateway charges the billing payments about to be refunded (lazily).

    The refund worker calls the gateway only for payments of APPROVED tickets, so only those
    charges must exist; seeding every payment stalled the first refund for minutes with a
    million payments. Existing charges are never changed. Returns how many payments with a
    charge this call covered: the caller seeds again (for the next approved tickets) unless
    that is every payment with a charge.
    """
    wanted, seeded = _payments_to_refund(session), 0
    for start in range(0, len(wanted), SEED_CHUNK):
        ids = wanted[start:start + SEED_CHUNK]
        prior: dict[str, Decimal] = {}
        for refund in session.scalars(select(Refund).where(Refund.payment_id.in_(ids),
                                                           ledger.counted())):
            prior[refund.payment_id] = prior.get(refund.payment_id, Decimal(0)) + refund.amount
        for pay in session.scalars(select(Payment).where(
                Payment.payment_id.in_(ids), Payment.charge_ref.is_not(None))):
            refunded = min(prior.get(pay.payment_id, Decimal(0)), pay.amount)
            try:
                amount = to_minor_units(pay.amount, pay.currency)
                done = to_minor_units(refunded, pay.currency)
            except ValueError as exc:  # the refund worker refuses this payment itself
                log.warning("no gateway charge for payment %s: %s", pay.payment_id, exc)
                continue
            store.ensure_charge(pay.charge_ref or "", amount, pay.currency, done)
            seeded += 1
    return seeded


def embedded_gateway_url(settings: Settings, deps: Deps) -> str:
    """Start the local gateway once per process (on loopback), with a webhook receiver for
    its events unless BILLING_RECON_WEBHOOK_URL names one, and seed its charges."""
    with _lock:
        gateway = settings.gateway
        server = _gateways.get(gateway.db_url)
        if server is None:
            # Imported here: the local gateway pulls in FastAPI and uvicorn, which a run against
            # a real gateway (or one that never refunds) should not pay for at start-up.
            from billing_recon.payments.gateway_server import GatewayServer

            # Its events go to the configured endpoint, else to a receiver of our own.
            hook = settings.webhooks.url or _embedded_receiver(settings, deps)
            server = GatewayServer(gateway.db_url, api_key=settings.local_gateway_key(),
                                   retention_s=gateway.retention_h * 3600,
                                   key_lease_s=gateway.key_lease_s, lifecycle=gateway.lifecycle,
                                   webhook_url=hook, webhook_secret=settings.webhook_secret()
                                   ).start()
            _gateways[gateway.db_url] = server
            log.info("local payment gateway listening on %s", server.url)
    with deps.sessions() as session:
        payments = session.scalar(select(func.count(Payment.payment_id))
                                  .where(Payment.charge_ref.is_not(None))) or 0
        if _seeded.get(gateway.db_url) != payments:  # new billing data since the last seed
            store = GatewayStore(gateway.db_url)
            try:
                _seeded[gateway.db_url] = seed_gateway_charges(store, session)
            finally:
                store.close()
    return server.url


def seed_shared_gateway(settings: Settings, deps: Deps) -> None:
    """Seed the charges of a local gateway another process of this home runs (a gateway URL
    without a Stripe key: it answers only this home's local key), in its database."""
    with deps.sessions() as session:
        store = GatewayStore(settings.gateway.db_url)
        try:
            seed_gateway_charges(store, session)
        finally:
            store.close()


def _embedded_receiver(settings: Settings, deps: Deps) -> str:
    """Start the webhook receiver on loopback for the embedded gateway; its URL."""
    from billing_recon.payments.webhook_server import WebhookServer
    from billing_recon.steps.webhook_inbox import WebhookInbox

    receiver = WebhookServer(WebhookInbox(deps), secret=settings.webhook_secret(),
                             tolerance_s=settings.webhooks.tolerance_s).start()
    _receivers.append(receiver)
    log.info("webhook receiver listening on %s", receiver.url)
    return receiver.url


def use_settings_from(source: Callable[[], Settings | None] | None) -> None:
    """Where ``build()`` without settings gets them (e.g. Prefect blocks); None: the env."""
    global _source
    _source = source


def build(settings: Settings | None = None) -> Deps:
    """Deps for these settings (else the registered source's, else the env's), once per process."""
    settings = settings or (_source() if _source else None) or load()
    # Every field counts (sandbox limits, model names, budgets, secrets): a changed setting
    # must never be served the deps built for the old one.
    cache_key = settings.fingerprint()
    with _lock:
        if cache_key in _cache:
            return _cache[cache_key]
    engine = make_engine(settings.database.sqlalchemy_url)
    migrate(engine)
    deps = Deps(settings=settings, sessions=session_factory(engine),
                model=chat_model(settings.llm),
                sandbox=make_sandbox(settings.sandbox, untrusted_by=script_author(settings)),
                refund_client=lambda: _client(settings, deps),
                switches=Switches.from_settings(settings.switches))
    with _lock:
        return _cache.setdefault(cache_key, deps)


def script_author(settings: Settings) -> str | None:
    """The model whose scripts the sandbox will run, when it is not the offline one (whose
    reference script is ours): those need strong isolation."""
    return None if settings.llm.backend == "offline" else settings.llm.analysis_model


def _client(settings: Settings, deps: Deps) -> RefundClient:
    url = settings.gateway.url or embedded_gateway_url(settings, deps)
    if settings.gateway.url and settings.gateway.stripe_api_key is None:
        seed_shared_gateway(settings, deps)
    return RefundClient.from_settings(settings.gateway, url, settings.refund_api_key())


def reset() -> None:
    """Forget cached deps, stop embedded gateways and sandboxes (tests, end of a CLI command)."""
    with _lock:
        sandboxes = [deps.sandbox for deps in _cache.values()]
        _cache.clear()
        servers = list(_gateways.values())
        _gateways.clear()
        _seeded.clear()
        receivers = list(_receivers)
        _receivers.clear()
    for receiver in receivers:  # first: a worker still at work would start a gateway again
        receiver.stop()
    for server in servers:
        server.stop()
    for sandbox in sandboxes:
        sandbox.close()  # warm workers are processes: stop them with the deps that own them
