"""The E2B backend through the official SDK, against the loopback E2B (127.0.0.1 only).

The contract suite runs this backend too (test_sandbox_contract.py); these tests check what is
E2B's own: sandbox life cycle, what is sent to the API, and its failures.
"""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Iterator

import pytest

from billing_recon.config import from_variables
from billing_recon.errors import SandboxUnavailable
from billing_recon.sandbox.e2b_backend import E2BSandbox
from billing_recon.sandbox.factory import make_sandbox
from billing_recon.sandbox.port import SandboxLimits
from tests.integration.e2b_loopback import FakeE2B, Fault


@pytest.fixture
def fake() -> Iterator[FakeE2B]:
    """A loopback E2B for one test."""
    server = FakeE2B().start()
    yield server
    server.stop()


def e2b(fake: FakeE2B, **options: object) -> E2BSandbox:
    """The E2B backend pointed at `fake`."""
    return E2BSandbox(api_key=fake.api_key, api_url=fake.url, sandbox_url=fake.url,
                      **options)  # type: ignore[arg-type]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("code", "wall"),
    [("print('ok')", 30.0), ("1 / 0", 30.0), ("while True:\n    pass\n", 1.0)],
    ids=["success", "error", "timeout"],
)
def test_every_run_kills_its_sandbox(fake: FakeE2B, code: str, wall: float) -> None:
    e2b(fake).run(code, {}, limits=SandboxLimits(wall_timeout_s=wall))

    assert [c["id"] for c in fake.created] == fake.killed
    assert fake.live_sandboxes() == []


def test_sandbox_is_asked_for_template_lifetime_and_no_internet(
    fake: FakeE2B, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_RECON_SIGNING_KEY", "not-for-the-sandbox")

    e2b(fake, template="billing-tmpl", sandbox_timeout_s=123).run("pass", {})

    created = fake.created[0]
    assert (created["templateID"], created["timeout"]) == ("billing-tmpl", 123)
    assert created["allow_internet_access"] is False
    assert created["envVars"] == {}


def test_inputs_are_uploaded_and_outputs_read_back(fake: FakeE2B) -> None:
    code = "open('out/copy.csv', 'w').write(open('in.csv').read().upper())"

    result = e2b(fake).run(code, {"in.csv": b"a,b\n1,2\n"})

    assert result.ok, result.error
    assert result.files == {"copy.csv": b"A,B\n1,2\n"}  # the status file is ours, not a result


def test_missing_api_key_is_sandbox_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    monkeypatch.delenv("E2B_DEBUG", raising=False)

    with pytest.raises(SandboxUnavailable, match="E2B_API_KEY"):
        make_sandbox(from_variables({"BILLING_RECON_SANDBOX": "e2b"}).sandbox)


def test_unreachable_api_is_sandbox_unavailable() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    box = E2BSandbox(api_key="e2b_key", api_url=url, sandbox_url=url)

    with pytest.raises(SandboxUnavailable, match="could not create a sandbox"):
        box.run("pass", {})


def test_rejected_api_key_is_sandbox_unavailable(fake: FakeE2B) -> None:
    box = E2BSandbox(api_key="e2b_wrong", api_url=fake.url, sandbox_url=fake.url)

    with pytest.raises(SandboxUnavailable, match="could not create a sandbox"):
        box.run("pass", {})
    assert fake.created == []


def test_debug_mode_needs_no_key_and_no_control_plane(
    fake: FakeE2B, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("E2B_API_KEY", raising=False)

    result = E2BSandbox(debug=True, sandbox_url=fake.url).run("print('debug')", {})

    assert result.stdout == "debug\n"
    assert fake.created == [] and fake.executions == 1


def test_output_beyond_the_in_sandbox_cap_stops_the_run(fake: FakeE2B) -> None:
    # The script undoes the driver's cap; the client stops reading instead of buffering it.
    code = "import sys\nsys.stdout = sys.__stdout__\nprint('z' * 200_000)\n"

    result = e2b(fake).run(code, {}, limits=SandboxLimits(max_output_bytes=1000))

    assert result.error is not None and result.error.name == "OutputFlood"
    assert len(result.stdout) == 1000 and result.stdout_truncated
    assert fake.live_sandboxes() == []


def test_script_that_defeats_the_alarm_times_out_on_the_client(fake: FakeE2B) -> None:
    code = ("import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
            "for _ in range(60):\n    time.sleep(0.05)\nprint('finished')\n")

    result = e2b(fake, client_grace_s=0.5).run(code, {}, limits=SandboxLimits(wall_timeout_s=1))

    assert result.timed_out and result.exit_code is None
    assert "finished" not in result.stdout
    assert 1.5 <= result.duration_s < 3.0
    assert fake.live_sandboxes() == []


def test_e2b_script_error_reaches_the_result_as_a_plain_traceback(fake: FakeE2B) -> None:
    code = "def share(total, people):\n    return total / people\n\nshare(10, 0)\n"

    result = e2b(fake).run(code, {})

    assert result.error is not None
    lines = result.error.traceback.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert re.fullmatch(r'  File "\.billing-recon-[0-9a-f]{16}\.py", line 4, in <module>', lines[1])
    assert lines[2:4] == ["    share(10, 0)", lines[1].replace("4, in <module>", "2, in share")]
    assert lines[4:] == ["    return total / people", "ZeroDivisionError: division by zero"]


@pytest.mark.parametrize("fault", ["kernel_dies", "websocket_lost", "aborted", "dropped",
                                   "http_404", "http_500", "http_502"])
def test_e2b_server_made_failure_is_sandbox_unavailable_not_the_scripts(
        fake: FakeE2B, fault: Fault) -> None:
    fake.fault = fault

    with pytest.raises(SandboxUnavailable, match="E2B"):
        e2b(fake).run("print('fine')", {})
    assert fake.live_sandboxes() == []


def test_e2b_script_exception_named_like_a_server_error_stays_the_scripts(fake: FakeE2B) -> None:
    code = "class ContextRestarting(Exception):\n    pass\n\nraise ContextRestarting('mine')\n"

    result = e2b(fake).run(code, {})

    assert result.error is not None
    assert (result.error.name, result.error.value) == ("ContextRestarting", "mine")
    assert "raise ContextRestarting('mine')" in result.error.traceback


@pytest.mark.parametrize("code", ["for i in range(1000):\n    display(i)\n",
                                  "display('x' * 8_000_000)\n"], ids=["many", "large"])
def test_e2b_display_results_beyond_the_caps_stop_the_run(fake: FakeE2B, code: str) -> None:
    # display() output is result events: the in-sandbox cap of stdout never sees it. The
    # script goes on a second later: the client has stopped reading by then (under load the
    # kernel's 0.2 s output batching could otherwise send 'finished' in the flood's chunk).
    result = e2b(fake).run(code + "import time\ntime.sleep(1)\nprint('finished')\n", {})

    assert result.error is not None and result.error.name == "OutputFlood"
    assert "finished" not in result.stdout
    assert fake.live_sandboxes() == []


def test_e2b_cpu_time_limit_stops_a_busy_script_and_spares_the_kernel(
        fake: FakeE2B, monkeypatch: pytest.MonkeyPatch) -> None:
    # E2B sets no CPU-time limit: the driver does, on the kernel. Debug mode keeps one kernel
    # across runs, so the second run shows the limit was lifted again and the kernel lives.
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    box = E2BSandbox(debug=True, sandbox_url=fake.url)
    limits = SandboxLimits(cpu_seconds=1, wall_timeout_s=20)  # CPU time is the limit hit

    busy = box.run("while True:\n    pass\n", {}, limits=limits)
    after = box.run("import time\nstart = time.process_time()\nwhile time.process_time() - start"
                    " < 2.5:\n    pass\nprint('alive')\n", {}, limits=SandboxLimits())

    assert (busy.exit_code, busy.timed_out) == (-signal.SIGXCPU, False)
    assert busy.error is not None and busy.error.name == "SIGXCPU"
    assert after.ok and after.stdout == "alive\n"


def test_e2b_negative_exit_code_is_an_exit_status_not_a_signal(fake: FakeE2B) -> None:
    result = e2b(fake).run("import sys\nsys.exit(-24)\n", {})

    assert (result.exit_code, result.error) == (232, None)  # as a process exits: -24 & 0xFF
