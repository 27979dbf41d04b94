"""The production shape on loopback: a Prefect server on PostgreSQL, the deployments of
deployments/prefect.yaml, and process workers started elsewhere than the deploying checkout.

`prefect deploy` runs from a copy of the checkout that is deleted right after, and the workers
start in an empty folder of their own: they have only the installed package (this
virtualenv's), as a worker on another machine would.

Everything is started here as real processes and stopped by pid; the billing data, the
payment gateway and the Prefect server each get a fresh PostgreSQL database, dropped after.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from psycopg import sql
from sqlalchemy.orm import Session, sessionmaker

from billing_recon.store.db import make_engine, session_factory
from tests.prefect_server import wait_healthy

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "billing-recon"
PREFECT_FILE = "deployments/prefect.yaml"
BATCH = "scheduled-batch"
WORKERS = 2
# Flow runs one worker runs at once. Each run is a Python process whose start-up is CPU-bound
# (~2-3 s of imports): two per worker keep both cores of a CI machine busy without thrashing.
WORKER_LIMIT = 2

QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
         "PREFECT_LOGGING_LEVEL": "WARNING"}

# The worker settings of docs/operations.md ("Speed settings"), each on purpose:
WORKER_SETTINGS = {
    # Poll for scheduled runs every second (default 10 s): a fanned-out ticket or a resumed
    # approval starts within a second, not ten. One small query per worker per second.
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    # Take runs due in the next 2 s (default 10 s): nothing here is scheduled ahead, and a
    # short window keeps a busy worker from claiming runs another one could start sooner.
    "PREFECT_WORKER_PREFETCH_SECONDS": "2",
    # Flow-run heartbeats stay on (the server tells a dead run from a slow one by them); our
    # flows are async, so a heartbeat costs one event per 30 s and nothing at the end of a run.
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
    # Never `uv run` a flow (offline): the workers' virtualenv already has every dependency.
    "PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES": "false",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_base(pg_url: str) -> str:
    """``postgresql://user@host:port`` of the test PostgreSQL (without the database)."""
    return pg_url.rsplit("/", 1)[0]


@dataclass
class Databases:
    """Fresh databases on the local PostgreSQL, dropped (with their connections) at the end."""

    base: str
    names: list[str] = field(default_factory=list)

    def create(self, prefix: str) -> str:
        """A new empty database; returns its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(f"{self.base}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.names.append(name)
        return name

    def url(self, name: str, driver: str = "postgresql") -> str:
        """The URL of one of these databases for ``driver``."""
        return f"{driver}://{self.base.split('://', 1)[1]}/{name}"

    def drop_all(self) -> None:
        """Drop every database created here."""
        with psycopg.connect(f"{self.base}/postgres", autocommit=True) as conn:
            for name in self.names:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))


@dataclass
class Stack:
    """A running server plus the environment every deployment process shares."""

    api_url: str
    env: dict[str, str]
    billing_url: str
    gateway_url: str
    tmp: Path

    def run(self, *args: str, timeout: float = 120,
            cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
        """Run ``prefect ...`` or ``billing-recon ...`` (from the repo root), as an operator."""
        return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=self.env,
                              text=True, capture_output=True, timeout=timeout, check=False)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start ``prefect ...`` or ``billing-recon ...`` in the background, output piped."""
        return subprocess.Popen([str(BIN / args[0]), *args[1:]], cwd=REPO, env=self.env,
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def client(self) -> SyncPrefectClient:
        """A Prefect client of this server (explicit URL: no global settings involved)."""
        return SyncPrefectClient(self.api_url)

    def sessions(self) -> sessionmaker[Session]:
        """Sessions on the billing database the flows write to."""
        return session_factory(make_engine(self.billing_url))


def _stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group started for ``proc`` (its own session), then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BILLING_RECON_", "PREFECT_", "OPENAI_"))}
    # As after `. .venv/bin/activate`: the flow-run command `python -m prefect.engine` of
    # prefect.yaml must find this virtualenv's interpreter.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **QUIET, "PREFECT_HOME": str(tmp / "prefect-home")}


@pytest.fixture(scope="module")
def stack(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Prefect server on a fresh PostgreSQL database, the work pool, fresh billing and
    gateway databases, and the environment the workers and the CLI share."""
    tmp = tmp_path_factory.mktemp("deploy")
    dbs = Databases(_server_base(pg_url))
    port, env = _free_port(), _base_env(tmp)
    server_env = {**env, "PREFECT_SERVER_UI_ENABLED": "false",
                  "PREFECT_API_DATABASE_CONNECTION_URL":
                      dbs.url(dbs.create("deploy_prefect"), "postgresql+asyncpg")}
    log = (tmp / "server.log").open("wb")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=server_env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    api_url = f"http://127.0.0.1:{port}/api"
    env.update({"PREFECT_API_URL": api_url,
                "BILLING_RECON_DATABASE_URL": dbs.url(dbs.create("deploy_billing")),
                "BILLING_RECON_GATEWAY_DB": dbs.url(dbs.create("deploy_gateway"),
                                                    "postgresql+psycopg"),
                "BILLING_RECON_HOME": str(tmp / "billing-home"),
                # Relative inbox folders and email paths of deployed runs are taken here.
                "BILLING_RECON_INBOX_ROOT": str(tmp / "mail"),
                "BILLING_RECON_PAUSE_POLL_S": "1"})
    try:
        wait_healthy(api_url, server)
        yield Stack(api_url, env, env["BILLING_RECON_DATABASE_URL"],
                    env["BILLING_RECON_GATEWAY_DB"], tmp)
    finally:
        _stop(server)
        log.close()
        dbs.drop_all()


@pytest.fixture(scope="module")
def work_pool(stack: Stack) -> str:
    """The process work pool, created the way docs/operations.md says."""
    done = stack.run("prefect", "work-pool", "create", POOL, "--type", "process")
    assert done.returncode == 0, done.stdout + done.stderr
    return POOL


@dataclass(frozen=True)
class Deployed:
    """What `prefect deploy --all` did, and the batch runs the server's scheduler created."""

    process: subprocess.CompletedProcess[str]
    scheduled: list[FlowRun]


def _scheduled_batches(stack: Stack) -> list[FlowRun]:
    with stack.client() as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[BATCH])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))))


@pytest.fixture(scope="module")
def deployed(stack: Stack, work_pool: str) -> Deployed:
    """`prefect deploy --all`, non-interactive, from a deployer's checkout (a copy of the
    repo's tracked files) that is deleted right after: nothing may depend on where it was.
    Then up to 20 s for the scheduler (it looks at new deployments every 5 s) to create the
    cron's next batch runs."""
    checkout = stack.tmp / "deployer-checkout"
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, checkout / name)
    done = stack.run("prefect", "--no-prompt", "deploy", "--all", "--prefect-file",
                     PREFECT_FILE, cwd=checkout)
    shutil.rmtree(checkout)
    scheduled: list[FlowRun] = []
    deadline = time.monotonic() + 20
    while done.returncode == 0 and not scheduled and time.monotonic() < deadline:
        time.sleep(0.5)
        scheduled = _scheduled_batches(stack)
    return Deployed(done, scheduled)


def _pause_schedule(stack: Stack) -> None:
    """Cron batches must not start during the tests (they would read the default inbox):
    pause the schedule, which also deletes its future runs, as an operator would."""
    with stack.client() as client:
        batch = client.read_deployment_by_name(f"reconcile-inbox/{BATCH}")
        for schedule in batch.schedules:
            client.update_deployment_schedule(batch.id, schedule.id, active=False)


@pytest.fixture(scope="module")
def workers(stack: Stack, deployed: Deployed) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``WORKERS`` process workers started in an empty folder of their own (not a checkout),
    stopped by pid afterwards."""
    assert deployed.process.returncode == 0, deployed.process.stdout + deployed.process.stderr
    _pause_schedule(stack)
    env = {**stack.env, **WORKER_SETTINGS}
    home = stack.tmp / "worker-home"
    home.mkdir()
    procs = []
    for number in range(WORKERS):
        log = (stack.tmp / f"worker-{number}.log").open("wb")
        procs.append(subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name",
             f"worker-{number}", "--limit", str(WORKER_LIMIT)],
            cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        log.close()
    try:
        yield procs
    finally:
        for proc in procs:
            _stop(proc)


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.5,
             describe: Callable[[], str] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` (and what
    ``describe`` says about the situation then) after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every_s)
    detail = f": {describe()}" if describe else ""
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}")


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and every live process below it; children that exited and
    were reaped count through their parent's cutime/cstime."""
    total, tick, pending = 0.0, os.sysconf("SC_CLK_TCK"), [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            threads = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:  # ended meanwhile: its parent counts it once it reaps it
            continue
        total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
        for thread in threads:  # a child belongs to the thread that forked it
            try:
                pending.extend(int(c) for c in (thread / "children").read_text().split())
            except OSError:
                continue
    return total


def worker_cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds used so far by the workers and their flow-run processes (a batch process
    may still be running its exit when the batch is reported complete)."""
    return sum(_tree_cpu_seconds(proc.pid) for proc in procs)
