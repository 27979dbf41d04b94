"""A temporary Prefect server that dies with the process that started it (no orphans).

Without ``PREFECT_API_URL`` (in the environment or the Prefect profile) Prefect starts a
temporary server of its own as a child process and stops it from an ``atexit`` hook. A command
killed with SIGKILL never runs that hook: its server lived on for minutes with parent 1,
holding a port and the Prefect database. Our entry points start the same server themselves,
through a guard that asks the kernel to send it SIGTERM when its parent dies
(``PR_SET_PDEATHSIG``, which survives the exec into the server), and point Prefect at it.

Call :func:`ensure_api` in an entry point before it creates any Prefect client, from the main
thread: the kernel signals the child when the *thread* that started it ends.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import prefect
from prefect.context import refresh_global_settings_context
from prefect.settings import get_current_settings

from billing_recon.errors import BillingReconError

#: Runs in the child before the server: die with the parent (Linux), then become the server.
GUARD = """\
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
if hasattr(libc, "prctl"):
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != int(sys.argv[1]):
        sys.exit(0)  # the parent died before the request took effect
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""
#: The same mode as Prefect's own temporary server: no UI, the services of an ephemeral one.
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
              "PREFECT__SERVER_FINAL": "1"}

_process: subprocess.Popen[bytes] | None = None


def owned() -> bool:
    """Whether this process runs the Prefect API it uses (a temporary server, no UI)."""
    return _process is not None


def ensure_api() -> str | None:
    """Start a guarded temporary server unless a Prefect API is configured; its URL, else None.

    Idempotent. Waits until the server answers (``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_
    SECONDS``) and stops it at exit; if this process is killed, the kernel stops it.
    """
    global _process
    settings = get_current_settings()
    if _process is not None or settings.api.url:
        return None
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    argv = [sys.executable, "-c", GUARD, str(os.getpid()), "-m", "uvicorn",
            "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on"]
    _process = subprocess.Popen(argv, env={**os.environ, **SERVER_ENV})
    atexit.register(stop)
    _wait_until_healthy(_process, url, settings.server.ephemeral.startup_timeout_seconds)
    os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()  # Prefect read its settings at import
    return url


def stop() -> None:
    """Stop the temporary server (the end of the command)."""
    global _process
    process, _process = _process, None
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_healthy(process: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BillingReconError(f"the temporary Prefect server exited with {process.returncode}"
                                    " during start-up")
        try:
            if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop()
    raise BillingReconError(f"the temporary Prefect server did not answer within {timeout_s:.0f} s"
                            " (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")
