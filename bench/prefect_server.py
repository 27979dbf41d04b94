"""A Prefect server on PostgreSQL for the benchmarks, started here and stopped by its pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pg
import proctree

QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
         "PREFECT_SERVER_UI_ENABLED": "false"}


@dataclass(frozen=True)
class Server:
    """A running server: its API URL, its PREFECT_HOME and its process."""

    api_url: str
    home: Path
    process: subprocess.Popen[bytes]
    database: str

    def client_env(self) -> dict[str, str]:
        """Environment for a client process of this server."""
        return {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home), **QUIET}

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the server process and its children so far."""
        return process_tree_cpu(self.process.pid)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and all its descendants.

    Live processes are read from /proc; children that already exited and were reaped count
    through their parent's cutime/cstime, so short-lived workers are not lost.
    """
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for current in proctree.pids(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def postgres_cpu() -> float:
    """CPU seconds of the local PostgreSQL server (postmaster and every backend, also ended
    ones). It includes whatever else uses that server meanwhile."""
    for line in Path("/proc").glob("[0-9]*/comm"):
        try:
            if line.read_text().strip() != "postgres":
                continue
            pid = int(line.parent.name)
            parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
            if Path(f"/proc/{parent}/comm").read_text().strip() != "postgres":
                return process_tree_cpu(pid)  # the postmaster
        except (OSError, ValueError):
            continue
    return 0.0


def machine_busy() -> float:
    """CPU seconds all cores have spent not idle since boot (/proc/stat), whoever used them."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"prefect server at {url} not healthy after {timeout_s:.0f}s")


@contextmanager
def running(settings: dict[str, str] | None = None, timeout_s: float = 120.0) -> Iterator[Server]:
    """Start ``prefect server start`` on a fresh PostgreSQL database; stop and drop it after.

    ``settings`` are extra PREFECT_* variables for the server process.
    """
    database = pg.create("bench_prefect")
    home = Path(tempfile.mkdtemp(prefix="bench-prefect-home-"))
    port = free_port()
    env = {**os.environ, **QUIET, "PREFECT_HOME": str(home),
           "PREFECT_API_DATABASE_CONNECTION_URL": pg.url(database, "postgresql+asyncpg"),
           "PREFECT_SERVER_LOGGING_LEVEL": "WARNING", **(settings or {})}
    env.pop("PREFECT_API_URL", None)
    prefect = str(Path(sys.executable).with_name("prefect"))
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(url, process, timeout_s)
        yield Server(url, home, process, database)
    finally:
        _stop(process)
        log.close()
        pg.drop(database)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's own process group (it was started in a new session), then KILL."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
