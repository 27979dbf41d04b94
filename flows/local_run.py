"""Running a flow from its file, the way a Prefect developer tries it first.

    python flows/process_ticket.py EMAIL.eml [EMAIL.eml ...] [--wait SECONDS]
    python flows/process_ticket.py --ticket T-000042            # resume or continue one ticket
    python flows/reconcile_inbox.py INBOX_DIR [--wait SECONDS]
    python flows/reconcile_inbox.py INBOX_DIR --serve           # its schedule, served locally

The flows run on the settings of the environment (docs/configuration.md) against the Prefect
API of ``PREFECT_API_URL``, else a temporary local Prefect server. Each ticket's state is
printed when the run ends; a ticket waiting for a decision says how to give it. ``--serve``
serves reconcile-inbox with the schedule of the ``scheduled-batch`` deployment in
deployments/prefect.yaml until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow
from prefect.schedules import Cron
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    temporary_settings,
)

from billing_recon.errors import BillingReconError, UserInputError
from billing_recon.store import tickets
from billing_recon_tasks.client_settings import local_client_settings
from billing_recon_tasks.temporary_server import ensure_api

# The flow a file runs is handed in by that file's __main__ block: this module imports no flow
# (so no flow module and this one import each other).
AnyFlow = Flow[..., Coroutine[Any, Any, Any]]  # both flows are async

DEPLOYMENTS = Path(__file__).resolve().parent.parent / "deployments" / "prefect.yaml"
BATCH_DEPLOYMENT = "scheduled-batch"
# As the command line's: no telemetry from offline machines, and time for a temporary server
# to start on a loaded 2-core machine (Prefect's 20 s default is too short there).
LOCAL_PREFECT = {PREFECT_SERVER_ANALYTICS_ENABLED: False,
                 PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 90}


def _parser(flow_name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python flows/{flow_name.replace('-', '_')}.py",
                                description=__doc__.splitlines()[0])
    if flow_name == "process-ticket":
        p.add_argument("emails", nargs="*", metavar="EMAIL", help=".eml files, one ticket each")
        p.add_argument("--ticket", action="append", default=[], metavar="T-000042",
                       help="resume or continue this ticket (repeatable)")
    else:
        p.add_argument("inbox", metavar="INBOX_DIR", help="folder of .eml files")
        p.add_argument("--serve", action="store_true",
                       help="serve the flow with the scheduled-batch deployment's schedule")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="how long a ticket waits here for a decision (default 0: it stays "
                   "pending, decided later with `billing-recon approve` or in the UI)")
    return p


def schedules() -> list[dict[str, Any]]:
    """The schedules of the scheduled-batch deployment, read from deployments/prefect.yaml."""
    config = yaml.safe_load(DEPLOYMENTS.read_text(encoding="utf-8"))
    for deployment in config.get("deployments", []):
        if deployment.get("name") == BATCH_DEPLOYMENT:
            return list(deployment.get("schedules") or [])
    raise UserInputError(f"{DEPLOYMENTS} has no {BATCH_DEPLOYMENT} deployment")


def _line(result: dict[str, Any]) -> str:
    ticket, state = result.get("ticket_id", "?"), result.get("state", "FAILED")
    reason = result.get("reason") or result.get("error") or ""
    line = f"{ticket:10} {state:18} {reason}".rstrip()
    if state == "APPROVAL_PENDING":
        where = PREFECT_API_URL.value()
        ui = f" or in the Prefect UI at {where.removesuffix('/api')}" if where else ""
        line += f"  (decide: billing-recon approve {ticket}{ui})"
    return line


async def _run(flow: AnyFlow, args: argparse.Namespace) -> list[dict[str, Any]]:
    if flow.name == "process-ticket":
        runs = [flow(email_path=str(Path(e).resolve()), approval_wait_s=args.wait)
                for e in args.emails]
        runs += [flow(ticket_id=tickets.parse_ticket_id(t), approval_wait_s=args.wait)
                 for t in args.ticket]
        return [await run for run in runs]  # one after another, in the order given
    results: list[dict[str, Any]] = await flow(inbox=str(Path(args.inbox).resolve()),
                                               approval_wait_s=args.wait)
    return results


def _serve(flow: AnyFlow, args: argparse.Namespace) -> None:
    plan = [Cron(s["cron"], timezone=s.get("timezone")) for s in schedules() if s.get("cron")]
    flow.serve(name="local-batch", schedules=plan,
                          parameters={"inbox": str(Path(args.inbox).resolve()),
                                      "approval_wait_s": args.wait})


def _check(flow_name: str, args: argparse.Namespace) -> None:
    """Bad input is reported before any Prefect server is started."""
    if flow_name == "process-ticket":
        if not args.emails and not args.ticket:
            raise UserInputError("give at least one EMAIL or --ticket")
        missing = [e for e in args.emails if not Path(e).is_file()]
        if missing:
            raise UserInputError(f"no such email file: {', '.join(missing)}")
        for ticket in args.ticket:
            tickets.parse_ticket_id(ticket)
    elif not Path(args.inbox).is_dir():
        raise UserInputError(f"no such folder: {args.inbox}")


def main(flow: AnyFlow, argv: Sequence[str] | None = None) -> int:
    """Run (or serve) ``flow`` from the command line; 0 done, 1 refused, 2 bad input."""
    flow_name = flow.name
    args = _parser(flow_name).parse_args(argv)
    try:
        _check(flow_name, args)
        ensure_api()  # no API configured: a temporary server that dies with this process
        with local_client_settings(), temporary_settings(updates=LOCAL_PREFECT):
            if flow_name == "reconcile-inbox" and args.serve:
                _serve(flow, args)
                return 0
            results = asyncio.run(_run(flow, args))
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BillingReconError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    for result in results:
        print(_line(result), flush=True)
    return 0
