"""After a decision: reach the run waiting on the ticket with a few HTTP calls to Prefect's API.

``approve`` and ``reject`` import this, not the driver: they need Prefect's API client only
(no flow, no engine, no temporary server when a managed server or PREFECT_API_URL is there),
so a decision from a second terminal takes about a second rather than starting a flow here.
"""

from __future__ import annotations

import os
import socket
from typing import Any
from uuid import UUID

from billing_recon.errors import UserInputError
from billing_recon.store.models import Ticket
from billing_recon.store.tickets import format_ticket_id

SUSPENDED = "suspended"  # tasks.approval's waiter mark for a run suspended on a worker


def _api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def check_server_access(ticket: Ticket) -> None:
    """Fail before a decision is recorded when the configured Prefect server refuses us.

    A decision needs the server afterwards (to resume the waiting run, or to run the refund
    here); finding out only then would leave an approved ticket and a confusing traceback.
    """
    if not ticket.flow_run_id or not _api_url():
        return  # an ephemeral server is our own; nothing ran on a server for this ticket
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        with get_client(sync_client=True) as client:
            client.read_flow_run(UUID(ticket.flow_run_id))
    except ObjectNotFound:
        return
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code in (401, 403):
            raise UserInputError(
                f"the Prefect server at {_api_url()} refused this client "
                f"({exc.response.status_code}): set PREFECT_API_AUTH_STRING to its credential; "
                "no decision was recorded") from exc
        raise


def waiter_alive(ticket: Ticket) -> bool:
    """Whether the process that paused for this ticket still runs on this host."""
    host, _, pid = (ticket.waiter or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resume_waiting(ticket: Ticket, form: dict[str, Any]) -> bool:
    """Resume the run waiting on a decided ticket: a live paused process, or a run suspended
    on the work pool or the local runner (which then runs it). False when nobody waits."""
    suspended = ticket.waiter == SUSPENDED
    if not ticket.flow_run_id or not (suspended or waiter_alive(ticket)):
        return False
    try:
        if not _api_url():
            from billing_recon_tasks.temporary_server import ensure_api

            ensure_api()
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            result = client.resume_flow_run(UUID(ticket.flow_run_id), run_input=form)
    except Exception:  # the pause timed out or the run is gone: continue it ourselves
        return False
    return result.status.value == "ACCEPT"


def run_on_runner(deployment: str, ticket_id: int) -> str:
    """Have the local runner run the ticket from its committed state (a new run of its
    deployment); the run's id."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        run = client.create_flow_run_from_deployment(
            found.id, parameters={"ticket_id": ticket_id, "approval_wait_s": 0},
            tags=[f"ticket:{format_ticket_id(ticket_id)}"])
    return str(run.id)
