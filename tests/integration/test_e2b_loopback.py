"""The loopback E2B answers as E2B's real code-interpreter server does (FACTS.md, measured).

Read on the wire with http.client where the SDK would hide the detail (keepalives, the end
marker, headers, arrival times), and through the official SDK where it shows it.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from e2b import NotFoundException
from e2b_code_interpreter import Context
from e2b_code_interpreter import Sandbox as E2BSdkSandbox

from tests.integration.e2b_loopback import DEBUG_ID, INTERPRETER_PORT, FakeE2B


@pytest.fixture
def fake() -> Iterator[FakeE2B]:
    """A loopback E2B with a short keepalive interval (the real one's is 5 s)."""
    server = FakeE2B(keepalive_s=0.3).start()
    yield server
    server.stop()


def _post_execute(fake: FakeE2B, code: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", int(fake.url.rsplit(":", 1)[1]), timeout=30)
    conn.request("POST", "/execute", json.dumps({"code": code}),
                 {"E2b-Sandbox-Id": DEBUG_ID, "E2b-Sandbox-Port": INTERPRETER_PORT})
    return conn.getresponse()


def _lines(response: http.client.HTTPResponse) -> list[tuple[float, dict[str, Any]]]:
    """Each JSON line with the time it arrived."""
    start, out = time.monotonic(), []
    while line := response.readline():
        out.append((time.monotonic() - start, json.loads(line)))
    return out


def test_e2b_stream_is_live_json_lines_from_execution_count_to_end_marker(fake: FakeE2B) -> None:
    response = _post_execute(fake, "import time\nprint('first')\ntime.sleep(1)\nprint('last')")

    assert response.status == 200 and response.getheader("Content-Type") is None
    lines = _lines(response)
    events = [event for _, event in lines if event["type"] != "keepalive"]
    assert events[0] == {"type": "number_of_executions", "execution_count": 1}
    assert events[-1] == {"type": "end_of_execution"}
    first = next((at, e["text"]) for at, e in lines if e["type"] == "stdout")
    assert first[0] < 0.8 and first[1] == "first\n", "stdout must arrive while the cell runs"
    stdout = [e for e in events if e["type"] == "stdout"]
    assert "".join(e["text"] for e in stdout) == "first\nlast\n"
    assert all(datetime.fromisoformat(e["timestamp"]).tzinfo is not None for e in stdout)


def test_e2b_stream_sends_keepalive_after_silence(fake: FakeE2B) -> None:
    lines = _lines(_post_execute(fake, "import time\ntime.sleep(1.1)\nprint('done')"))

    kinds = [event["type"] for _, event in lines]
    assert kinds.count("keepalive") >= 2
    assert kinds[-2:] == ["stdout", "end_of_execution"]


def test_e2b_stdout_chunk_holds_several_lines(fake: FakeE2B) -> None:
    code = "import time\nfor line in 'abc':\n    print(line)\n    time.sleep(0.02)\n"

    lines = _lines(_post_execute(fake, code))

    assert [e["text"] for _, e in lines if e["type"] == "stdout"] == ["a\nb\nc\n"]


def test_e2b_display_and_last_expression_are_result_events(fake: FakeE2B) -> None:
    lines = _lines(_post_execute(fake, "display('shown')\n41 + 1"))

    results = [e for _, e in lines if e["type"] == "result"]
    assert results == [
        {"type": "result", "text": "shown", "extra": {}, "is_main_result": False},
        {"type": "result", "text": "42", "extra": {}, "is_main_result": True}]


def test_e2b_error_carries_an_ipython_traceback(fake: FakeE2B) -> None:
    lines = _lines(_post_execute(fake, "def f():\n    return 1 / 0\nf()"))

    [error] = [e for _, e in lines if e["type"] == "error"]
    assert (error["name"], error["value"]) == ("ZeroDivisionError", "division by zero")
    assert error["traceback"].startswith("-" * 75 + "ZeroDivisionError" + " " * 25
                                         + "Traceback (most recent call last)Cell In[1], line 3\n")
    assert "----> 2     return 1 / 0\n" in error["traceback"]
    assert error["traceback"].endswith("ZeroDivisionError: division by zero")


def test_e2b_dead_kernel_is_context_restarting_and_its_count_starts_again(
        fake: FakeE2B) -> None:
    counts = [_lines(_post_execute(fake, "x = 1"))[0][1]["execution_count"] for _ in range(2)]
    died = [e for _, e in _lines(_post_execute(fake, "import os\nos._exit(1)"))]

    assert counts == [1, 2]
    assert {"type": "error", "name": "ContextRestarting", "value": "Context was restarted",
            "traceback": ""} in died
    assert died[-1] == {"type": "end_of_execution"}
    assert _lines(_post_execute(fake, "x = 1"))[0][1]["execution_count"] == 1


def test_e2b_health_is_ok_and_an_unknown_context_is_404(fake: FakeE2B) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", int(fake.url.rsplit(":", 1)[1]), timeout=10)
    conn.request("GET", "/health", headers={"E2b-Sandbox-Port": INTERPRETER_PORT})
    health = conn.getresponse()
    assert (health.status, health.read()) == (200, b'"OK"')

    sandbox = E2BSdkSandbox.connect(DEBUG_ID, debug=True, sandbox_url=fake.url)
    with pytest.raises(NotFoundException, match="Context nope not found"):
        sandbox.run_code("1", context=Context("nope", "python", "/home/user"))
