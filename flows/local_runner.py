"""The local runner the managed Prefect server runs beside it (billing_recon_tasks.local_server).

    python -m billing_recon_flows.local_runner --key KEY --state PATH

Serves the process-ticket flow as deployment ``process-ticket/local-KEY`` (Prefect's Runner, as
``flow.serve`` does): a run of it that was suspended for a decision and resumed, from the UI or
by ``billing-recon approve``, is executed here in a process of its own, like a worker does with a
deployed one. It also runs the local payment gateway and its webhook receiver for as long as it
lives, and hands its runs the gateway's URL: a refund that settles after its run ended still has
a receiver for its webhook. Once the deployment is registered it writes PATH (pid, deployment,
gateway URL) and serves until SIGTERM; a setting it cannot start with is written there as
``error`` instead, and it exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from prefect.runner import Runner
from prefect.settings import PREFECT_API_URL
from prefect.types.entrypoint import EntrypointType

from billing_recon import runtime
from billing_recon.config import load
from billing_recon.errors import UserInputError
from billing_recon_flows.process_ticket import process_ticket
from billing_recon_tasks.local_server import DEPLOYMENT_PREFIX, hand_gateway_to_runs, write_state

POLL_S = 2  # how soon a resumed run starts here (Prefect's default: 10 s)


def _gateway_url() -> str:
    """The configured gateway, else the local one, started here with its webhook receiver;
    exported so that every run started from here refunds through it."""
    settings = load()
    url = settings.gateway.url or runtime.embedded_gateway_url(settings, runtime.build(settings))
    hand_gateway_to_runs(url)
    return url


async def serve(key: str, state: Path) -> None:
    """Register the deployment, record where everything is, then run resumed runs."""
    gateway = _gateway_url()
    runner = Runner(name=f"billing-recon-local-{key}", query_seconds=POLL_S,
                    pause_on_shutdown=False)
    name = DEPLOYMENT_PREFIX.removeprefix(f"{process_ticket.name}/") + key
    # By module path, not the flow object: each run then starts as `python -m prefect.engine`
    # and imports the flow as a worker does (a pickled copy of it does not validate its
    # parameters: their annotations are strings there).
    deployment = await process_ticket.ato_deployment(
        name=name, entrypoint_type=EntrypointType.MODULE_PATH)
    await runner.aadd_deployment(deployment)
    write_state(state, {"pid": os.getpid(), "key": key, "api_url": PREFECT_API_URL.value(),
                        "deployment": f"{DEPLOYMENT_PREFIX}{key}", "gateway_url": gateway,
                        "cwd": str(Path.cwd())})
    await runner.start()


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--key", required=True, help="the data location's key")
    parser.add_argument("--state", required=True, type=Path, help="where to record the runner")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.key, args.state))
    except UserInputError as exc:  # a setting to fix (e.g. a model's scripts refused without
        # strong isolation): the command that started us says it, as it would have itself
        write_state(args.state, {"pid": os.getpid(), "error": str(exc)})
        return 2
    finally:
        runtime.reset()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
