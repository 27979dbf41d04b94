"""The sweep for lost webhooks (`billing-recon refunds sync`): every refund that is not final
is re-read from the gateway (a real process whose webhooks are all lost) and applied with the
webhook's effects; refunds outside the late-failure window are left alone."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from billing_recon import runtime
from billing_recon.domain.fsm import Reason, State
from billing_recon.steps import refund_status, refund_sync, refund_worker
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon_cli.main import main
from tests.chaos.harness import NO_PREFECT, Expected, World

Worlds = Callable[..., tuple[World, Deps]]
LOST = {"BILLING_RECON_GATEWAY_WEBHOOK_LOSS_SHARE": "1"}


@pytest.fixture
def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worlds]:
    """A world whose gateway has the given lifecycle and loses every webhook event."""
    made: list[World] = []

    def build(**settings: str) -> tuple[World, Deps]:
        world = World(tmp_path / f"w{len(made)}", NO_PREFECT,
                      lifecycle={**LOST, **{k: v for k, v in settings.items()
                                            if k.startswith("BILLING_RECON_GATEWAY")}})
        made.append(world)
        for name, value in {**world.env(), **settings}.items():
            monkeypatch.setenv(name, value)
        runtime.reset()
        return world, runtime.build()

    yield build
    for world in made:
        world.close()
    runtime.reset()


def _refund(deps: Deps, exp: Expected) -> str:
    results = refund_worker.execute_refund(deps, exp.ticket_id, "test")
    refund_worker.record_refunds(deps, exp.ticket_id, results, "test")
    return refund_status.settle_after_refund(deps, exp.ticket_id, "test").state


def test_sync_settles_pending_refunds_whose_webhooks_were_lost(make: Worlds) -> None:
    world, deps = make(BILLING_RECON_GATEWAY_PENDING_SHARE="1",
                       BILLING_RECON_GATEWAY_SETTLE_S="0.3")
    exp = [world.approved_ticket(2), world.approved_ticket(1)]
    assert [_refund(deps, e) for e in exp] == [State.REFUNDED.value] * 2
    time.sleep(0.6)  # settled at the gateway; no event ever arrives
    assert tickets.get(deps.sessions, exp[0].ticket_id).state == State.REFUNDED.value
    report = refund_sync.sync_once(deps)
    assert (report.checked, report.changed, report.errors) == (3, 3, [])
    assert report.moved == {e.ticket_id: "CLOSED(refunded)" for e in exp}
    changes = tickets.events(deps.sessions, exp[0].ticket_id, refund_status.EVENT)
    assert [(e.actor, e.payload["to"]) for e in changes] == [("sweep", "succeeded")] * 2
    again = refund_sync.sync_once(deps)  # succeeded ones are re-read in the window: no change
    assert (again.checked, again.changed, again.moved) == (3, 0, {})


def test_sync_finds_a_refund_failed_after_its_ticket_closed(make: Worlds) -> None:
    world, deps = make(BILLING_RECON_GATEWAY_LATE_FAILURE_SHARE="1",
                       BILLING_RECON_GATEWAY_LATE_FAILURE_S="0.3")
    exp = world.approved_ticket(1)
    assert _refund(deps, exp) == State.CLOSED.value
    time.sleep(0.6)
    report = refund_sync.sync_once(deps)
    assert report.moved == {exp.ticket_id: "ESCALATED(refund_failed)"}
    done = tickets.get(deps.sessions, exp.ticket_id)
    assert (done.state, done.reason) == (State.ESCALATED.value, Reason.REFUND_FAILED.value)


def test_sync_leaves_succeeded_refunds_outside_the_late_failure_window_alone(
        make: Worlds) -> None:
    world, deps = make(BILLING_RECON_WEBHOOK_LATE_FAILURE_DAYS="0")
    exp = world.approved_ticket(1)
    assert _refund(deps, exp) == State.CLOSED.value
    assert refund_sync.sync_once(deps).checked == 0


def test_refunds_sync_command_reports_pending_refund_settled(
        make: Worlds, capsys: pytest.CaptureFixture[str]) -> None:
    world, deps = make(BILLING_RECON_GATEWAY_PENDING_SHARE="1",
                       BILLING_RECON_GATEWAY_SETTLE_S="0.2")
    exp = world.approved_ticket(1)
    _refund(deps, exp)
    time.sleep(0.4)
    capsys.readouterr()
    assert main(["refunds", "sync", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    name = tickets.format_ticket_id(exp.ticket_id)
    assert (shown["checked"], shown["changed"], shown["tickets"]) == (
        1, 1, {name: "CLOSED(refunded)"})
    assert main(["refunds", "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["ticket_id"] == name]
    assert [(r["status"], r["failure_reason"]) for r in rows] == [("succeeded", None)]
