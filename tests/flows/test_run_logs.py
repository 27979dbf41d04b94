"""The core's warnings reach the flow run's logs (what the Prefect UI shows), and a record made
outside any run is neither sent nor warned about."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler

from billing_recon import runtime
from billing_recon.steps.deps import Deps
from billing_recon_flows.process_ticket import process_ticket
from billing_recon_tasks.logs import CORE_LOGGER, forward_core_logs
from tests.flows.conftest import email

pytestmark = [pytest.mark.flows, pytest.mark.anyio]
SWITCHED_OFF = "exactly-once layers switched off for testing"


async def test_a_core_warning_is_in_the_flow_runs_logs(
        world: Deps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_RECON_LAYERS_OFF", "cache")  # the core warns when it builds
    runtime.reset()
    state = await process_ticket(email_path=email(tmp_path, "m1", "ann@example.com",
                                                  "INV-000001 is wrong"),
                                 approval_wait_s=0, return_state=True)
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    await APILogHandler.aflush()
    async with get_client() as client:
        logs = await client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    core = [log for log in logs if log.name.startswith(CORE_LOGGER + ".")]
    assert [(log.level, SWITCHED_OFF in log.message) for log in core] == [(30, True)]
    monkeypatch.delenv("BILLING_RECON_LAYERS_OFF")
    runtime.reset()


def test_a_core_record_outside_any_run_is_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    forward_core_logs()
    forward_core_logs()  # idempotent: one forwarding handler
    handlers = logging.getLogger(CORE_LOGGER).handlers
    assert sum(type(h).__name__ == "RunLogs" for h in handlers) == len(
        logging.getLogger("prefect.extra").handlers) >= 1
    with caplog.at_level(logging.WARNING):  # warnings are errors in this suite: none is raised
        logging.getLogger(CORE_LOGGER + ".sandbox").warning("outside a run")
    assert "outside a run" in caplog.text
