"""After a decision: reach the run waiting on the ticket with a few HTTP calls to Prefect's API.

``approve`` and ``reject`` import this, not the driver: no flow, no engine, no temporary server
when a managed server or PREFECT_API_URL is there, and on the managed local server not even
Prefect's client (one POST), so a decision from a second terminal takes a second or two rather
than running the ticket's flow here.
"""

from __future__ import annotations

import os
import socket
from typing import Any
from uuid import UUID

import httpx

from billing_recon.errors import UserInputError
from billing_recon.store.models import Ticket
from billing_recon.store.tickets import format_ticket_id
from billing_recon_tasks import local_server

SUSPENDED = "suspended"  # tasks.approval's waiter mark for a run suspended on a worker


def _api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def _managed_api() -> str | None:
    """The API of the managed local server this command uses (ours: loopback, no auth)."""
    managed = local_server.in_use()
    return managed.server.api_url if managed else None


def check_server_access(ticket: Ticket) -> None:
    """Fail before a decision is recorded when the configured Prefect server refuses us.

    A decision needs the server afterwards (to resume the waiting run, or to run the refund
    here); finding out only then would leave an approved ticket and a confusing traceback.
    The managed local server was just checked (/api/health) and asks for no credential.
    """
    if not ticket.flow_run_id or _managed_api() or not _api_url():
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
    managed = _managed_api()
    try:
        if managed:
            return _resume_by_http(managed, ticket.flow_run_id, form)
        if not _api_url():
            from billing_recon_tasks.temporary_server import ensure_api

            ensure_api()
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            result = client.resume_flow_run(UUID(ticket.flow_run_id), run_input=form)
    except Exception:  # the pause timed out or the run is gone: continue it ourselves
        return False
    return result.status.value == "ACCEPT"


def _resume_by_http(api_url: str, flow_run_id: str, form: dict[str, Any]) -> bool:
    """``POST /flow_runs/{id}/resume`` with the form as run input, the request Prefect's
    client sends, on our own loopback server: without importing Prefect (about 1.1 s of a
    2 s command here). The server checks the input against the form's schema."""
    reply = httpx.post(f"{api_url}/flow_runs/{flow_run_id}/resume", json={"run_input": form},
                       timeout=30, trust_env=False)
    return reply.is_success and reply.json().get("status") == "ACCEPT"


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
