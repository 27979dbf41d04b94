"""The managed local Prefect server (with its UI) and its local runners, one server per home.

Without ``PREFECT_API_URL`` the commands (``BILLING_RECON_PREFECT_SERVER=managed``, the default)
start one Prefect server for the project's home, or reuse the one already running, and leave it
running for the next commands. Everything it owns lives in ``BILLING_RECON_HOME/prefect/``:

    home/              its PREFECT_HOME (the server's SQLite database, result storage)
    server.json        pid, port and API URL of the server; server.log its output
    runners/KEY.json   pid, gateway URL and deployment of a local runner; KEY.log its output
    lock               taken while a command checks or starts them (two commands, one server)

Beside the server runs a local **runner** per data location (working directory, billing and
gateway databases), ``python -m billing_recon_flows.local_runner``: it serves the process-ticket
deployment ``process-ticket/local-KEY`` (as a worker does when deployed), so a suspended run
resumed from the UI or by ``approve`` is executed even after the command that processed the
email ended; and it runs the local payment gateway and its webhook receiver, which the runs
reach by URL, so a refund that settles after its run ended still meets a live receiver.

Both are started in a new session (they outlive the command) and stopped by pid (their process
group) with ``billing-recon server stop``. A dead one is noticed (pid, /api/health) and started
again. This module imports no Prefect: a command pays for Prefect only when it runs a flow.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from dotenv import dotenv_values

from billing_recon.config import Settings
from billing_recon.errors import BillingReconError, UserInputError

SERVER_ENV_FILE = Path(__file__).resolve().parent.parent / "deployments" / "server.env"
RUNNER_MODULE = "billing_recon_flows.local_runner"
#: The runner's deployment name is this prefix and the key of its data location.
DEPLOYMENT_PREFIX = "process-ticket/local-"
START_TIMEOUT_S = 180.0  # a fresh server's first start (migrations) on a loaded 2-core machine
HEALTH_PATIENCE_S = 30.0  # how long a live server may take to answer before it counts as dead
OFFLINE = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


@dataclass(frozen=True)
class Server:
    """A running managed server."""

    pid: int
    port: int

    @property
    def api_url(self) -> str:
        """Its API, as PREFECT_API_URL takes it."""
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        """Its UI."""
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Runner:
    """A running local runner: the deployment it serves and the gateway it hosts."""

    pid: int
    key: str
    api_url: str
    deployment: str
    gateway_url: str
    cwd: str


@dataclass(frozen=True)
class Managed:
    """What a command uses: the server and the runner of its data location."""

    server: Server
    runner: Runner


def root(settings: Settings) -> Path:
    """The folder of everything the managed server owns, under the project's home."""
    return settings.home.expanduser() / "prefect"


def location_key(settings: Settings, cwd: Path | None = None) -> str:
    """Names the data a runner works on: relative SQLite paths depend on the working folder."""
    where = [str((cwd or Path.cwd()).resolve()), settings.database.sqlalchemy_url,
             settings.gateway.db_url, settings.gateway.url or "", str(settings.home)]
    return hashlib.sha256(json.dumps(where).encode()).hexdigest()[:10]


def configured_api() -> str | None:
    """The Prefect API the user configured (it always wins): PREFECT_API_URL in the environment,
    else in the active Prefect profile (read here as Prefect reads it, without importing it)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    url = profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")
    return str(url) if url else None


def wanted(settings: Settings) -> bool:
    """Whether commands use the managed server: no PREFECT_API_URL and the setting says so."""
    return configured_api() is None and settings.orchestration.prefect_server == "managed"


# ---- processes and files -------------------------------------------------------------------

def _alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` runs and is ours (its command line names ``marker``: no reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return marker in cmdline and not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Write a state file atomically (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(json.dumps(data), encoding="utf-8")
    os.replace(scratch, path)


def terminate(pid: int, timeout_s: float = 20.0) -> None:
    """Stop a process we started in its own session, with everything it started (its group)."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our child (tests)
            if _zombie(pid):
                return
            time.sleep(0.1)


def _detached(argv: list[str], env: dict[str, str], log: Path,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (it outlives this command)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=5, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _port(preferred: int) -> int:
    """``preferred`` when nobody listens there, else a free port."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])


# ---- the server ----------------------------------------------------------------------------

def running_server(settings: Settings, patience_s: float = 0.0) -> Server | None:
    """The managed server of this home, if it runs and answers (a live one that does not
    answer at once is asked again for up to ``patience_s``: a busy machine is not a dead
    server)."""
    data = _read(root(settings) / "server.json")
    if not data:
        return None
    server = Server(int(data["pid"]), int(data["port"]))
    deadline = time.monotonic() + patience_s
    while _alive(server.pid, "prefect"):
        if _healthy(server.api_url):
            return server
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
    return None


def server_env(folder: Path, api_url: str) -> dict[str, str]:
    """The server's environment: ours without client settings, deployments/server.env, its
    own PREFECT_HOME, and the UI pointed at its real API (not the default port)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    if SERVER_ENV_FILE.is_file():
        env.update({k: v for k, v in dotenv_values(SERVER_ENV_FILE).items() if v is not None})
    return {**env, **OFFLINE, "PREFECT_HOME": str(folder / "home"),
            "PREFECT_UI_API_URL": api_url, "PREFECT_LOGGING_LEVEL": "WARNING"}


def _start_server(settings: Settings) -> Server:
    folder = root(settings)
    stale = _read(folder / "server.json")
    if stale:  # it does not answer: stop what is left of it before starting another
        terminate(int(stale["pid"]), timeout_s=5)
    port = _port(settings.orchestration.prefect_port)
    api_url = f"http://127.0.0.1:{port}/api"
    proc = _detached([sys.executable, "-m", "prefect", "server", "start", "--host",
                      "127.0.0.1", "--port", str(port)], server_env(folder, api_url),
                     folder / "server.log")
    pid = proc.pid
    write_state(folder / "server.json", {"pid": pid, "port": port})
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BillingReconError(f"the local Prefect server exited during start-up; see "
                                    f"{folder / 'server.log'}")
        if _healthy(api_url):
            return Server(pid, port)
        time.sleep(0.25)
    terminate(pid)
    raise BillingReconError(f"the local Prefect server did not answer within "
                            f"{START_TIMEOUT_S:.0f} s; see {folder / 'server.log'}")


# ---- the runners ---------------------------------------------------------------------------

def runners(settings: Settings) -> list[Runner]:
    """Every runner recorded for this home that still runs."""
    found = []
    for path in sorted((root(settings) / "runners").glob("*.json")):
        data = _read(path)
        if data and _alive(int(data["pid"]), RUNNER_MODULE):
            found.append(Runner(**data))
    return found


def _runner(settings: Settings, key: str, api_url: str) -> Runner | None:
    data = _read(root(settings) / "runners" / f"{key}.json")
    if not data or not _alive(int(data["pid"]), RUNNER_MODULE):
        return None
    runner = Runner(**data)
    if runner.api_url != api_url:  # a server started since: the runner talks to a dead one
        terminate(runner.pid)
        return None
    return runner


def client_env(folder: Path, api_url: str) -> dict[str, str]:
    """What a command and its runner share: the API, the Prefect home and result storage."""
    return {"PREFECT_API_URL": api_url, "PREFECT_HOME": str(folder / "home"), **OFFLINE}


def _start_runner(settings: Settings, key: str, api_url: str) -> Runner:
    folder = root(settings)
    state = folder / "runners" / f"{key}.json"
    state.unlink(missing_ok=True)
    env = {**os.environ, **client_env(folder, api_url)}
    proc = _detached([sys.executable, "-m", RUNNER_MODULE, "--key", key, "--state",
                      str(state)], env, folder / "runners" / f"{key}.log", cwd=Path.cwd())
    pid = proc.pid
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        data = _read(state)
        if data and data.get("pid") == pid:
            if "error" in data:  # a setting to fix: the runner's own words, not a log to read
                state.unlink(missing_ok=True)
                raise UserInputError(str(data["error"]))
            return Runner(**data)
        if proc.poll() is not None:
            raise BillingReconError(f"the local runner exited during start-up; see "
                                    f"{state.with_suffix('.log')}")
        time.sleep(0.2)
    terminate(pid)
    raise BillingReconError(f"the local runner did not start within {START_TIMEOUT_S:.0f} s; "
                            f"see {state.with_suffix('.log')}")


# ---- what the commands call ----------------------------------------------------------------

def ensure(settings: Settings) -> Managed:
    """The managed server and this data location's runner, started when not running."""
    folder, key = root(settings), location_key(settings)
    with _locked(folder):
        server = running_server(settings, HEALTH_PATIENCE_S) or _start_server(settings)
        runner = _runner(settings, key, server.api_url) or _start_runner(settings, key,
                                                                         server.api_url)
    return Managed(server, runner)


def use(settings: Settings) -> Managed | None:
    """Point this command at the managed server, its runner and the runner's gateway.

    None (nothing changed) when PREFECT_API_URL is set or the setting asks for the temporary
    server. Call before Prefect is imported and before the core's dependencies are built.
    """
    if not wanted(settings):
        return None
    managed = ensure(settings)
    os.environ.update(client_env(root(settings), managed.server.api_url))
    os.environ["BILLING_RECON_TICKET_DEPLOYMENT"] = managed.runner.deployment
    if not settings.gateway.url:  # the runner's gateway: its webhooks meet a live receiver
        os.environ["BILLING_RECON_GATEWAY_URL"] = managed.runner.gateway_url
    global _in_use
    _in_use = managed
    return managed


_in_use: Managed | None = None


def hand_gateway_to_runs(url: str) -> None:
    """The runner's runs (its child processes) refund through the gateway at ``url``."""
    os.environ["BILLING_RECON_GATEWAY_URL"] = url


def in_use() -> Managed | None:
    """The managed server this command uses, if ``use`` chose it."""
    return _in_use


def run_link(ui_url: str, flow_run_id: str) -> str:
    """The run's page in the Prefect UI."""
    return f"{ui_url}/runs/flow-run/{flow_run_id}"


def status(settings: Settings) -> dict[str, Any]:
    """What runs for this home: the server (URL, pid, UI) and each runner."""
    server = running_server(settings)
    return {"home": str(root(settings)),
            "server": {**asdict(server), "api_url": server.api_url, "ui_url": server.ui_url}
            if server else None,
            "runners": [asdict(r) for r in runners(settings)]}


def stop(settings: Settings) -> list[int]:
    """Stop the runners and the server of this home (by pid); the pids stopped."""
    folder, stopped = root(settings), []
    with _locked(folder):
        for path in sorted((folder / "runners").glob("*.json")):
            data = _read(path)
            if data and _alive(int(data["pid"]), RUNNER_MODULE):
                terminate(int(data["pid"]))
                stopped.append(int(data["pid"]))
            path.unlink(missing_ok=True)
        data = _read(folder / "server.json")
        if data and _alive(int(data["pid"]), "prefect"):
            terminate(int(data["pid"]))
            stopped.append(int(data["pid"]))
        (folder / "server.json").unlink(missing_ok=True)
    return stopped
