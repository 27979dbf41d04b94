"""Shadow mode: the production pipeline over labelled emails, with no approval and no money.

Each configuration gets a scratch database of its own (SQLite in a temporary folder), loads
the labelled billing data and runs every email through the same steps as production
(``pipeline.advance``: intake, triage, retrieval, reconciliation in the sandbox with capped
self-correction, the cross-check against the trusted rules, the proposal) up to the approval
gate, where a production ticket would wait. What WOULD be refunded is read from the proposal
(per currency, per invoice, per payment). The gateway client is never built: ``Deps`` gets a
factory that raises ``ShadowModeRefund`` instead, and no embedded gateway or webhook receiver
is started.

Two settings differ from production, on purpose: the database (scratch) and the global
breaker (off), so every ticket is measured on its own instead of waiting behind the
escalations of earlier ones; the per-ticket budget and retries stay as configured.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from billing_recon import pipeline
from billing_recon.config import DatabaseSettings, Settings
from billing_recon.domain.fsm import State
from billing_recon.domain.proposal import Proposal
from billing_recon.errors import BillingReconError, ShadowModeRefund
from billing_recon.evaluation.configs import Configuration
from billing_recon.evaluation.labels import Label
from billing_recon.evaluation.records import ERROR_STATE, TicketRecord, WouldRefund
from billing_recon.llm.backends import chat_model
from billing_recon.runtime import script_author
from billing_recon.sandbox.factory import make_sandbox
from billing_recon.steps import intake
from billing_recon.steps.deps import Deps
from billing_recon.steps.machine import Step
from billing_recon.store import model_calls, tickets
from billing_recon.store.csv_loader import load_directory
from billing_recon.store.db import make_engine, migrate, session_factory
from billing_recon.store.models import Ticket

if TYPE_CHECKING:
    from billing_recon.payments.refunds import RefundClient

__all__ = ["ShadowModeRefund", "run", "run_ticket", "scratch_deps"]

ACTOR = "shadow"
INTAKE = "intake"
#: A breaker threshold no evaluation reaches: the breaker is off in shadow mode.
BREAKER_OFF = 10**12
#: Told after each email: the configuration's name and how many emails are done.
Progress = Callable[[str, int], None]


def no_gateway() -> RefundClient:
    """The refund client factory of shadow mode: refuses, so no gateway client exists."""
    raise ShadowModeRefund("shadow mode never refunds: no gateway client is built")


def shadow_settings(settings: Settings, database_url: str, home: Path) -> Settings:
    """``settings`` with the scratch database, a scratch home (keys) and the breaker off."""
    budgets = settings.budgets.model_copy(update={"breaker_max_escalations": BREAKER_OFF,
                                                  "breaker_max_tokens": BREAKER_OFF})
    return settings.model_copy(update={
        "database": DatabaseSettings(url=SecretStr(database_url)), "budgets": budgets,
        "home": home})


@contextmanager
def scratch_deps(settings: Settings, data_dir: Path) -> Iterator[Deps]:
    """Deps over a new SQLite database holding ``data_dir``'s CSVs; removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="billing-recon-eval-"))
    shadow = shadow_settings(settings, f"sqlite:///{folder / 'billing.db'}", folder)
    engine = make_engine(shadow.database.sqlalchemy_url)
    sandbox = None
    try:
        migrate(engine)
        sessions = session_factory(engine)
        load_directory(sessions, data_dir)
        sandbox = make_sandbox(shadow.sandbox, untrusted_by=script_author(shadow))
        yield Deps(settings=shadow, sessions=sessions, model=chat_model(shadow.llm),
                   sandbox=sandbox, refund_client=no_gateway)
    finally:
        if sandbox is not None:
            sandbox.close()
        engine.dispose()
        shutil.rmtree(folder, ignore_errors=True)


def would_refund(ticket: Ticket) -> list[WouldRefund]:
    """The refunds a ticket waiting for approval proposes (nothing for any other state)."""
    if ticket.state != State.APPROVAL_PENDING.value or not ticket.proposal:
        return []
    proposal = Proposal.model_validate(ticket.proposal)
    return [WouldRefund(r.currency, r.amount, dict(r.invoices), list(r.reasons),
                        {p.payment_id: p.amount for p in r.payments})
            for r in proposal.refunds]


def _record(deps: Deps, label: Label, ticket: Ticket, step_s: dict[str, float],
            error: str | None) -> TicketRecord:
    calls = model_calls.of_ticket(deps.sessions, ticket.id)
    costs = [c.cost_usd for c in calls]
    triage = ticket.triage or {}
    return TicketRecord(
        label=label, state=ERROR_STATE if error else ticket.state,
        reason=None if error else ticket.reason,
        is_billing=triage.get("is_billing"), invoice_ids=triage.get("invoice_ids"),
        would_refund=would_refund(ticket), calls=len(calls),
        prompt_tokens=sum(c.prompt_tokens for c in calls),
        completion_tokens=sum(c.completion_tokens for c in calls),
        cost_usd=None if None in costs else sum((c or Decimal(0) for c in costs), Decimal(0)),
        step_s=step_s, error=error)


def run_ticket(deps: Deps, folder: Path, label: Label) -> TicketRecord:
    """One labelled email through the pipeline up to its approval gate or its end."""
    step_s: dict[str, float] = {}

    def observe(step: Step, seconds: float) -> None:
        step_s[step.value] = step_s.get(step.value, 0.0) + seconds

    started = time.perf_counter()
    opened = intake.open_ticket(deps, (folder / "inbox" / label.email).read_bytes(),
                                label.email)
    step_s[INTAKE] = time.perf_counter() - started
    error = None
    try:
        pipeline.advance(deps, opened.ticket.id, ACTOR, observe)
    except BillingReconError as exc:  # a model server down, say: recorded, the run goes on
        error = f"{type(exc).__name__}: {exc}"
    ticket = tickets.get(deps.sessions, opened.ticket.id)
    return _record(deps, label, ticket, step_s, error)


def run(folder: Path, labels: list[Label], config: Configuration,
        progress: Progress | None = None) -> list[TicketRecord]:
    """Every labelled email of ``folder`` under ``config``, in file-name order."""
    records = []
    with scratch_deps(config.settings, folder / "data") as deps:
        for done, label in enumerate(labels, 1):
            records.append(run_ticket(deps, folder, label))
            if progress is not None:
                progress(config.name, done)
    return records
