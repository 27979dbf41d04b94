"""No orphans: a command killed with SIGKILL takes its temporary Prefect server with it.

Before, the server Prefect starts for a command without ``PREFECT_API_URL`` lived on with
parent 1 for minutes (its ``atexit`` stop never runs on SIGKILL).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _server_of(pid: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in _children(pid):
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"prefect.server.api.server:create_app" in cmdline:
                return child
        time.sleep(0.2)
    raise AssertionError(f"no Prefect server child of {pid} within {timeout_s} s")


def _wait_until_answering(server: int, timeout_s: float) -> None:
    argv = Path(f"/proc/{server}/cmdline").read_bytes().split(b"\0")
    port = int(argv[argv.index(b"--port") + 1])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2,
                         trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the Prefect server {server} never answered on port {port}")


def test_orphan_a_killed_command_leaves_no_prefect_server(ephemeral_cli: Cli) -> None:
    command = ephemeral_cli.start("demo", "--wait", "600")
    try:
        server = _server_of(command.pid, timeout_s=120)
        _wait_until_answering(server, timeout_s=120)  # up and serving, as while waiting
        os.kill(command.pid, signal.SIGKILL)
        command.wait(timeout=10)
        deadline = time.monotonic() + 30  # a liveness bound, not a speed test: SIGTERM, exit
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(server), f"the Prefect server {server} outlived its command"
    finally:
        command.kill()
        for pid in _children(command.pid):
            os.kill(pid, signal.SIGKILL)
