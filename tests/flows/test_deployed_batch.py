"""The deployed batch executes every ticket's own process-ticket run in its own process.

No worker here: the test plays the worker, executing the batch's deployment run (and, after a
decision, the resumed ticket run) with Prefect's engine, as `python -m prefect.engine` would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.flow_engine import run_flow
from prefect.flow_runs import aresume_flow_run
from prefect.states import Cancelled, Pending, Running

from billing_recon.domain.fsm import State
from billing_recon.steps import intake
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon_flows.process_ticket import process_ticket
from billing_recon_flows.reconcile_inbox import reconcile_inbox
from billing_recon_tasks.fanout import BATCH_TAG
from tests.flows.conftest import email, gateway_refunds

pytestmark = [pytest.mark.flows, pytest.mark.anyio]
ACTIVE = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]


@pytest.fixture
async def deployments() -> AsyncIterator[dict[str, UUID]]:
    """The batch and ticket deployments (no work pool needed: nothing here polls one); the
    runs they leave active are cancelled after the test (the backend is the session's)."""
    ids = {"batch": await (await reconcile_inbox.ato_deployment(
                name="scheduled-batch")).apply(),
           "ticket": await (await process_ticket.ato_deployment(name="process-ticket")).apply()}
    yield ids
    async with get_client() as client:
        for run in await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=list(ids.values()))),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=ACTIVE)))):
            await client.set_flow_run_state(run.id, Cancelled(), force=True)


async def _execute(client: PrefectClient, flow: Any, run_id: UUID) -> FlowRun:
    """What a process worker does with a run: the engine, to its end or suspension."""
    try:
        await run_flow(flow, flow_run=await client.read_flow_run(run_id))  # type: ignore[misc]
    except BaseException as exc:  # a suspended run exits through Pause
        if type(exc).__name__ != "Pause":
            raise
    return await client.read_flow_run(run_id)


async def _batch(client: PrefectClient, deployment: UUID, inbox: Path) -> FlowRun:
    run = await client.create_flow_run_from_deployment(
        deployment, parameters={"inbox": str(inbox)}, state=Pending())
    return await _execute(client, reconcile_inbox, run.id)


async def _ticket_runs(client: PrefectClient, batch: FlowRun, ticket_id: int) -> list[FlowRun]:
    """The ticket's runs this batch executed (the backend, and ticket ids, outlive a test)."""
    tags = [f"ticket:{tickets.format_ticket_id(ticket_id)}", f"{BATCH_TAG}{batch.id}"]
    return await client.read_flow_runs(flow_run_filter=FlowRunFilter(
        tags=FlowRunFilterTags(all_=tags)))


def _inbox(tmp_path: Path) -> tuple[Path, str, str]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    email(inbox, "a-hello", "bob@example.com", "Hello there, lunch on Friday?")
    email(inbox, "b-owed", "ann@example.com", "INV-000002 was paid twice, please refund.")
    return inbox, "a-hello@test", "b-owed@test"


@pytest.mark.parametrize("in_flight", ["1", "2"])
async def test_each_ticket_is_its_own_deployment_run_executed_by_the_batch(
        world: Deps, tmp_path: Path, deployments: dict[str, UUID], in_flight: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One run of the ticket deployment per ticket, top-level, executed in the batch's process
    (no worker started it), one at a time or two at once (BILLING_RECON_BATCH_IN_FLIGHT; this
    SQLite-backed test server makes the second wait, so only the outcome is checked here): the
    settled ticket's run completed, the waiting one's suspended; the decision resumes it like
    any suspended run, and its refund happens once."""
    monkeypatch.setenv("BILLING_RECON_BATCH_IN_FLIGHT", in_flight)  # read by each deps()
    inbox, hello, owed = _inbox(tmp_path)
    async with get_client() as client:
        batch = await _batch(client, deployments["batch"], inbox)
        assert batch.state is not None and batch.state.is_completed(), batch.state
        closed, pending = (tickets.find_by_email(world.sessions, e) for e in (hello, owed))
        assert closed is not None and closed.state == State.CLOSED.value
        assert pending is not None and pending.state == State.APPROVAL_PENDING.value
        runs = {t.id: await _ticket_runs(client, batch, t.id) for t in (closed, pending)}
        for (run,) in runs.values():
            assert run.deployment_id == deployments["ticket"]
            assert run.parent_task_run_id is None  # its own run, not a subflow: suspendable
            assert f"{BATCH_TAG}{batch.id}" in run.tags
        (done,), (waiting,) = runs[closed.id], runs[pending.id]
        assert done.state is not None and done.state.is_completed()
        assert waiting.state is not None and waiting.state.name == "Suspended"
        assert pending.flow_run_id == str(waiting.id)
        await aresume_flow_run(waiting.id, run_input={
            "approve": True, "approver": "alice", "proposal_hash": pending.proposal_hash})
        resumed = await _execute(client, process_ticket, waiting.id)
    assert resumed.state is not None and resumed.state.is_completed(), resumed.state
    ticket = tickets.get(world.sessions, pending.id)
    assert (ticket.state, ticket.reason) == (State.CLOSED.value, "refunded")
    assert [(r["charge"], r["amount"]) for r in gateway_refunds(world)] == [("ch_pay-3", 1800)]


async def test_a_ticket_run_left_running_by_a_dead_batch_is_crashed_and_run_again(
        world: Deps, tmp_path: Path, deployments: dict[str, UUID]) -> None:
    """A batch killed mid-ticket leaves that ticket's run Running with nobody to report it;
    the next batch marks it Crashed and runs the ticket again from its committed state. A
    live run of a ticket (here one no batch executed) is left alone."""
    inbox, hello, owed = _inbox(tmp_path)
    _open(world, inbox)  # T-000001 and T-000002, before the runs that hold them
    async with get_client() as client:
        first = await client.create_flow_run_from_deployment(
            deployments["batch"], parameters={"inbox": str(tmp_path)}, state=Pending())
        await client.set_flow_run_state(first.id, Cancelled(), force=True)  # it died
        orphan = await client.create_flow_run_from_deployment(
            deployments["ticket"], tags=["ticket:T-000002", f"{BATCH_TAG}{first.id}"],
            state=Pending())
        await client.set_flow_run_state(orphan.id, Running(), force=True)
        running = await client.create_flow_run_from_deployment(
            deployments["batch"], parameters={"inbox": str(tmp_path)}, state=Pending())
        await client.set_flow_run_state(running.id, Running(), force=True)  # still at work
        alive = await client.create_flow_run_from_deployment(
            deployments["ticket"], tags=["ticket:T-000001", f"{BATCH_TAG}{running.id}"],
            state=Pending())
        await client.set_flow_run_state(alive.id, Running(), force=True)
        batch = await _batch(client, deployments["batch"], inbox)
        assert batch.state is not None and batch.state.is_completed(), batch.state
        crashed = await client.read_flow_run(orphan.id)
        assert crashed.state is not None and crashed.state.is_crashed()
        untouched = await client.read_flow_run(alive.id)
        assert untouched.state is not None and untouched.state.is_running()
    closed, pending = (tickets.find_by_email(world.sessions, e) for e in (hello, owed))
    assert closed is not None and closed.state == State.RECEIVED.value  # its live run has it
    assert pending is not None and pending.state == State.APPROVAL_PENDING.value


async def test_a_live_run_created_before_the_ticket_existed_does_not_hold_it(
        world: Deps, tmp_path: Path, deployments: dict[str, UUID]) -> None:
    """A paused run tagged T-000001 left by another billing database on the same server (the
    demo run again on a fresh database) is another ticket's: this database's T-000001, opened
    after it, runs; the old run is left as it was."""
    async with get_client() as client:
        other = await client.create_flow_run_from_deployment(
            deployments["ticket"], tags=["ticket:T-000001", "ticket:T-000002"],
            state=Pending())
        await client.set_flow_run_state(other.id, Running(), force=True)
        inbox, hello, owed = _inbox(tmp_path)
        batch = await _batch(client, deployments["batch"], inbox)
        assert batch.state is not None and batch.state.is_completed(), batch.state
        untouched = await client.read_flow_run(other.id)
        assert untouched.state is not None and untouched.state.is_running()
    closed, pending = (tickets.find_by_email(world.sessions, e) for e in (hello, owed))
    assert closed is not None and closed.state == State.CLOSED.value
    assert pending is not None and pending.state == State.APPROVAL_PENDING.value


def _open(world: Deps, inbox: Path) -> None:
    for path in sorted(inbox.glob("*.eml")):
        intake.open_ticket(world, path.read_bytes(), str(path))


async def test_ticket_runs_get_the_prefect_settings_the_batch_runs_with(
        world: Deps, tmp_path: Path, deployments: dict[str, UUID],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings an entry point applies in-process (tasks.client_settings) also reach the
    ticket runs the batch executes on its threads, each in an empty context."""
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, get_current_settings
    from prefect.settings import temporary_settings as prefect_settings

    from billing_recon_flows import process_ticket as ticket_module
    from billing_recon_tasks.client_settings import loopback_ca_file

    seen: list[str] = []

    def probe() -> bool:  # called at the end of every ticket run that does not suspend
        seen.append(str(get_current_settings().api.ssl_cert_file))
        return False

    monkeypatch.setattr(ticket_module, "mail_on", probe)
    inbox, _hello, _owed = _inbox(tmp_path)
    ca_file = loopback_ca_file(tmp_path / "only-this-batch")  # what local_client_settings sets
    assert ca_file is not None
    marker = str(ca_file)
    with prefect_settings(updates={PREFECT_API_SSL_CERT_FILE: marker}):
        async with get_client() as client:
            batch = await _batch(client, deployments["batch"], inbox)
    assert batch.state is not None and batch.state.is_completed(), batch.state
    assert seen == [marker]  # the hello ticket's run; the owed one suspended before the end
