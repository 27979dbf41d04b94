"""Sample tickets moved to a given state, for the tests of the steps after it."""

from __future__ import annotations

from typing import Any

from billing_recon import pipeline
from billing_recon.domain.fsm import State
from billing_recon.steps import intake
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets


def fetched_ticket(deps: Deps, sample: Any, actor: str = "test") -> int:
    """A sample ticket with a refund to propose, moved to DATA_FETCHED."""
    name = next(n for n, t in sorted(sample.ground_truth.items())
                if t["expected_state"] == State.APPROVAL_PENDING.value)
    ticket = intake.open_ticket(deps, (sample.inbox_dir / name).read_bytes(), name).ticket
    while ticket.state != State.DATA_FETCHED.value:
        pipeline.step(deps, ticket, actor)
        ticket = tickets.get(deps.sessions, ticket.id)
    return ticket.id
