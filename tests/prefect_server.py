"""One real Prefect server on loopback, shared by every test that runs the CLI or workers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(home: Path, extra_env: Mapping[str, str] | None = None) -> Iterator[str]:
    """A real Prefect server on a free loopback port with its own home; yields its API URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    # `--port` alone leaves the UI calling the default port 4200: give it the real API URL.
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_UI_API_URL": url,
           **(extra_env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                             "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Prefect server on loopback for the CLI tests (saves a start-up per command)."""
    with running_server(tmp_path_factory.mktemp("prefect-server")) as url:
        yield url


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    """Wait until the server started as ``proc`` answers /health (fail fast if it exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the Prefect server did not become healthy")


