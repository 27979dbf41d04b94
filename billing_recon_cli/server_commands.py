"""``billing-recon server start|status|stop``: the managed local Prefect server and its runners."""

from __future__ import annotations

import argparse
from typing import Any

from billing_recon.config import load
from billing_recon_cli.output import emit
from billing_recon_tasks import local_server


def server_cmd(args: argparse.Namespace) -> int:
    """Start, show or stop the managed server of this home; 1 from status when it is down."""
    settings = load()
    if args.server_command == "stop":
        stopped = local_server.stop(settings)
        if args.json:
            emit({"stopped": stopped})
        else:
            print(f"stopped {', '.join(map(str, stopped))}" if stopped else "nothing was running")
        return 0
    if args.server_command == "start":
        if local_server.configured_api():
            print("PREFECT_API_URL is set: the commands use that server, not a local one")
            return 0
        local_server.ensure(settings)
    state = local_server.status(settings)
    if args.json:
        emit(state)
    else:
        _print(state)
    return 0 if state["server"] else 1


def _print(state: dict[str, Any]) -> None:
    server = state["server"]
    if server is None:
        print(f"no local Prefect server runs for {state['home']}")
        return
    print(f"Prefect server  {server['api_url']}  pid {server['pid']}\n"
          f"UI              {server['ui_url']}")
    for runner in state["runners"]:
        print(f"runner          pid {runner['pid']}  {runner['deployment']}  gateway "
              f"{runner['gateway_url']}  in {runner['cwd']}")
