"""What a ticket's run does besides its steps (issue 19): settings read once per flow run, the
ticket read once per step by the flow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.context import FlowRunContext, TaskRunContext
from sqlalchemy import event

from billing_recon.steps.deps import Deps
from billing_recon_flows.process_ticket import process_ticket
from billing_recon_tasks.runtime import deps
from tests.flows.conftest import email

pytestmark = [pytest.mark.flows, pytest.mark.anyio]
BOTH = "Hello, INV-000001 and INV-000002 look wrong: I was overcharged $24.60."


async def test_settings_are_read_once_per_flow_run(world: Deps,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_RECON_PAUSE_POLL_S", "3")

    @flow(persist_result=False)
    async def reads_twice() -> tuple[float, float]:
        first = deps().settings.orchestration.pause_poll_s
        monkeypatch.setenv("BILLING_RECON_PAUSE_POLL_S", "7")
        return first, deps().settings.orchestration.pause_poll_s

    assert await reads_twice() == (3, 3)  # the run keeps what it started with
    assert await reads_twice() == (7, 7)  # the next run sees the change


def test_outside_a_run_settings_are_read_on_every_call(world: Deps,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_RECON_PAUSE_POLL_S", "3")
    assert deps().settings.orchestration.pause_poll_s == 3
    monkeypatch.setenv("BILLING_RECON_PAUSE_POLL_S", "7")
    assert deps().settings.orchestration.pause_poll_s == 7


@contextmanager
def flow_ticket_reads(deps_: Deps) -> Iterator[list[str]]:
    """Statements reading one ticket by id that the flow itself (not a task run) issues."""
    engine = deps_.sessions.kw["bind"]
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if (FlowRunContext.get() is not None and TaskRunContext.get() is None
                and statement.lstrip().upper().startswith("SELECT")
                and "FROM tickets" in statement and "WHERE tickets.id =" in statement):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_the_flow_reads_the_ticket_once_per_step(world: Deps, tmp_path: Path) -> None:
    """RECEIVED -> TRIAGED -> DATA_FETCHED -> APPROVAL_PENDING: three steps, so the flow reads
    the ticket at the start, after each step, twice in the approval gate (its own look and the
    deadline check) and at the end: 7 reads (it was 12: twice before each step)."""
    with flow_ticket_reads(world) as reads:
        result = await process_ticket(email_path=email(tmp_path, "m1", "ann@example.com", BOTH),
                                      approval_wait_s=0)
    assert result["state"] == "APPROVAL_PENDING"
    assert len(reads) == 7
