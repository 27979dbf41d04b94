"""The managed local Prefect server (BILLING_RECON_PREFECT_SERVER=managed): the UI out of the box.

One module-wide home and working folder: ``process`` starts the server (on a free port, never
4200) with its local runner and exits; one ticket is then approved in the Prefect UI (headless
Chromium), another with ``billing-recon approve`` from another process. The runner executes both
resumed runs, and its gateway's webhooks settle their pending refunds after the runs ended.
Everything started is stopped by pid at the end (``server stop``, then any pid left).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext

from billing_recon.config import load
from billing_recon.store.sample_data import SampleSet, generate
from billing_recon_tasks import local_server
from tests.e2e.browser import Answer, fill_form, module_browser, open_resume_dialog, submit
from tests.e2e.conftest import Cli
from tests.e2e.paused import BillingDb, run_state
from tests.e2e.test_ui_approval import gateway_calls

pytestmark = pytest.mark.e2e

IN_UI, IN_CLI, LEFT = "05-tax-error.eml", "03-duplicate-payment.eml", "08-prior-refund.eml"
ORPHAN = "01-price-overcharge.eml"
SETTLE_S = 8.0  # the gateway settles each refund this long after it: after its run has ended
WAIT_S = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Desk:
    """The working folder, its data, the ``process`` lines by email and the billing database."""

    cli: Cli
    sample: SampleSet
    billing: BillingDb
    lines: dict[str, dict[str, Any]]

    @property
    def prefect(self) -> Path:
        """The managed server's folder under the project's home."""
        return Path(self.cli.env["BILLING_RECON_HOME"]) / "prefect"

    def status(self) -> dict[str, Any]:
        """``billing-recon server status --json``."""
        done = self.cli.run("server", "status", "--json")
        return dict(json.loads(done.stdout))

    def wait_state(self, ticket: str, wanted: str) -> str:
        """The ticket's state once it is ``wanted`` (or the last seen, after WAIT_S)."""
        deadline = time.monotonic() + WAIT_S
        while (state := self.billing.ticket(ticket).state) != wanted:
            if time.monotonic() > deadline:
                break
            time.sleep(0.3)
        return state


def _pids(folder: Path) -> list[int]:
    found = []
    for path in [folder / "server.json", *sorted((folder / "runners").glob("*.json"))]:
        if path.is_file():
            found.append(int(json.loads(path.read_text())["pid"]))
    return found


def _kill_left(pids: list[int]) -> None:
    for pid in pids:  # only ours, by pid: `server stop` should have stopped them already
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _managed_cli(root: Path) -> Cli:
    cli = Cli(root)
    cli.env.update({"BILLING_RECON_PREFECT_SERVER": "managed",
                    "BILLING_RECON_PREFECT_PORT": str(_free_port()),
                    "BILLING_RECON_DATABASE_URL": f"sqlite:///{root / 'billing.db'}",
                    "BILLING_RECON_GATEWAY_DB": f"sqlite:///{root / 'gateway.db'}",
                    "BILLING_RECON_GATEWAY_PENDING_SHARE": "1",
                    "BILLING_RECON_GATEWAY_SETTLE_S": str(SETTLE_S)})
    return cli


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    """Three tickets suspended for a decision by a ``process`` that has exited."""
    root = tmp_path_factory.mktemp("local-server")
    cli = _managed_cli(root)
    sample = generate(root / "sample", seed=7)
    assert cli.run("load", str(sample.data_dir)).returncode == 0
    billing = BillingDb(cli.env["BILLING_RECON_DATABASE_URL"])
    folder = Path(cli.env["BILLING_RECON_HOME"]) / "prefect"
    try:
        done = cli.run("process", *(str(sample.inbox_dir / e) for e in (IN_UI, IN_CLI, LEFT)),
                       "--json", "--wait", "0", timeout=600)
        assert done.returncode == 0, done.stderr
        lines = [json.loads(x) for x in done.stdout.splitlines()]
        linked = {Path(x["email"]).name: x for x in lines if "ui_url" in x}
        yield Desk(cli, sample, billing, linked)
    finally:
        started = _pids(folder)
        cli.run("server", "stop")
        _kill_left(started)
        billing.close()


@pytest.fixture(scope="module")
def context() -> Iterator[BrowserContext]:
    """One headless Chromium for the module."""
    with module_browser() as shared:
        yield shared


def _run_id(link: str) -> str:
    return link.rsplit("/", 1)[1]


def _ended(api_url: str, run_id: str) -> str:
    """The run's state type once it has ended, or the last seen after WAIT_S (a resumed run is
    SCHEDULED until the runner takes it)."""
    deadline = time.monotonic() + WAIT_S
    while (state := run_state(api_url, run_id)) in ("SCHEDULED", "PENDING", "RUNNING",
                                                      "PAUSED"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.3)
    return state


def test_process_ends_leaving_each_waiting_ticket_suspended_with_its_ui_link(desk: Desk) -> None:
    status = desk.status()
    assert status["server"] is not None and len(status["runners"]) == 1
    assert set(desk.lines) == {IN_UI, IN_CLI, LEFT}
    for line in desk.lines.values():
        assert line["state"] == "APPROVAL_PENDING"
        assert line["ui_url"].startswith(f"{status['server']['ui_url']}/runs/flow-run/")
        assert run_state(status["server"]["api_url"], _run_id(line["ui_url"])) == "PAUSED"
        assert desk.billing.waits(line["ticket_id"])[-1]["waiter"] == "suspended"


def _refunded_once_after_the_run(desk: Desk, ticket: str, run_id: str, api_url: str) -> None:
    """CLOSED by the runner's webhook receiver after the run ended; one refund per payment."""
    assert desk.wait_state(ticket, "CLOSED") == "CLOSED"
    assert _ended(api_url, run_id) == "COMPLETED"
    run = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10).json()
    events = desk.cli.json("tickets", "show", ticket)
    closing = [e for e in events["events"] if e["to"] == "CLOSED"]
    assert [e["actor"] for e in closing] == ["webhook"]  # not the run: it had ended
    assert closing[0]["at"] > run["end_time"].replace("Z", "+00:00")
    refunds = desk.billing.refunds(ticket)
    assert len(refunds) == 1 and refunds[0].status == "succeeded"
    sent, keys = gateway_calls(desk, events["ticket_key"])  # type: ignore[arg-type]
    assert len(sent) == 1 and keys == [f"{events['ticket_key']}:{refunds[0].payment_id}"]


def test_approving_in_the_ui_after_the_command_ended_refunds_once(
        desk: Desk, context: BrowserContext) -> None:
    api_url = desk.status()["server"]["api_url"]
    line = desk.lines[IN_UI]
    run_id = _run_id(line["ui_url"])
    page = context.new_page()
    try:
        dialog = open_resume_dialog(page, api_url, run_id)
        fill_form(dialog, Answer(approve=True, approver="alice", note="in the UI"))
        submit(dialog)
    finally:
        page.close()
    _refunded_once_after_the_run(desk, line["ticket_id"], run_id, api_url)


def test_approving_from_a_second_terminal_is_http_only_and_refunds_once(desk: Desk) -> None:
    api_url = desk.status()["server"]["api_url"]
    line = desk.lines[IN_CLI]
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "billing_recon_cli",
                           "approve", line["ticket_id"], "--by", "bob"], cwd=desk.cli.cwd,
                          env=desk.cli.env, capture_output=True, text=True, timeout=180,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "its suspended run was resumed; the local runner carries it on" in done.stdout
    imported = {row.rpartition("|")[2].strip() for row in done.stderr.splitlines()
                if row.startswith("import time:")}
    assert "httpx" in imported and not {"prefect", "billing_recon_flows"} & imported
    _refunded_once_after_the_run(desk, line["ticket_id"], _run_id(line["ui_url"]), api_url)


def test_a_ticket_nobody_waits_on_is_handed_to_the_runner(desk: Desk) -> None:
    """Paused by a command that has ended (temporary server): approve hands the runner a run."""
    before = desk.cli.env["BILLING_RECON_PREFECT_SERVER"]
    desk.cli.env["BILLING_RECON_PREFECT_SERVER"] = "temporary"
    try:
        done = desk.cli.run("process", str(desk.sample.inbox_dir / ORPHAN), "--json", "--wait",
                            "0")
    finally:
        desk.cli.env["BILLING_RECON_PREFECT_SERVER"] = before
    assert done.returncode == 0, done.stderr
    ticket = json.loads(done.stdout.splitlines()[0])["ticket_id"]
    assert all(w["waiter"] != "suspended" for w in desk.billing.waits(ticket))  # no run waits
    approved = desk.cli.run("approve", ticket, "--by", "alice")
    assert approved.returncode == 0, approved.stderr
    assert f"{ticket}: the local runner carries it on: " in approved.stdout
    assert desk.wait_state(ticket, "CLOSED") == "CLOSED"
    assert len(desk.billing.refunds(ticket)) == 1


def test_the_next_command_reuses_the_server_and_restarts_a_dead_runner(desk: Desk) -> None:
    before = desk.status()
    again = desk.cli.run("server", "start", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == before  # the same server and runner, nothing started
    runner = before["runners"][0]["pid"]
    os.kill(runner, signal.SIGKILL)
    restarted = json.loads(desk.cli.run("server", "start", "--json").stdout)
    assert restarted["server"] == before["server"]
    assert [r["pid"] for r in restarted["runners"]] not in ([], [runner])
    line = desk.lines[LEFT]  # the new runner executes what the old one would have
    done = desk.cli.run("reject", line["ticket_id"], "--by", "alice", "--note", "not owed")
    assert done.returncode == 0, done.stderr
    assert desk.wait_state(line["ticket_id"], "REJECTED_BY_APPROVER") == "REJECTED_BY_APPROVER"
    assert _ended(before["server"]["api_url"], _run_id(line["ui_url"])) == "COMPLETED"


def test_a_dead_server_is_started_again(desk: Desk) -> None:
    before = desk.status()["server"]
    os.killpg(before["pid"], signal.SIGKILL)
    done = desk.cli.run("server", "start", "--json")
    assert done.returncode == 0, done.stderr
    after = json.loads(done.stdout)
    assert after["server"]["pid"] != before["pid"] and len(after["runners"]) == 1
    assert httpx.get(f"{after['server']['api_url']}/health", timeout=10).status_code == 200


def test_prefect_api_url_wins(tmp_path: Path, prefect_api: str, desk: Desk) -> None:
    cli = _managed_cli(tmp_path)
    cli.env["PREFECT_API_URL"] = prefect_api
    cli.run("load", str(desk.sample.data_dir))
    try:
        done = cli.run("process", str(desk.sample.inbox_dir / IN_UI), "--json", "--wait", "0")
    finally:  # nothing must start; if something did, it goes
        _kill_left(_pids(tmp_path / "home" / "prefect"))
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "home" / "prefect" / "server.json").exists()
    assert not any("ui_url" in json.loads(x) for x in done.stdout.splitlines())


def test_server_stop_stops_what_it_started(desk: Desk) -> None:
    pids = _pids(desk.prefect)
    assert len(pids) == 2
    stopped = json.loads(desk.cli.run("server", "stop", "--json").stdout)["stopped"]
    assert sorted(stopped) == sorted(pids)
    assert desk.status()["server"] is None
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_a_prefect_api_url_in_the_active_profile_wins(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "profiles.toml").write_text('active = "team"\n[profiles.team]\n'
                                            'PREFECT_API_URL = "http://127.0.0.1:9/api"\n')
    for name in ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.setenv("BILLING_RECON_PREFECT_SERVER", "managed")
    assert local_server.configured_api() == "http://127.0.0.1:9/api"
    assert not local_server.wanted(load())
    monkeypatch.setenv("PREFECT_PROFILE", "ephemeral")  # a profile without one: ours
    assert local_server.configured_api() is None and local_server.wanted(load())
