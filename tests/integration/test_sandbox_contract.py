"""The Sandbox port's contract, one suite run against every backend.

`local` is what production builds by default (the warm bubblewrap pool here), `subprocess` the
weak fallback, `e2b` the real E2B SDK talking to a loopback stand-in of E2B (127.0.0.1 only,
started here), and `e2b-live` the real service, run only when E2B_API_KEY is set.
A backend joins by adding a builder to `_BUILDERS`; the tests must pass unchanged.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from billing_recon.config import load
from billing_recon.config.sandbox import SandboxSettings
from billing_recon.sandbox.factory import make_sandbox
from billing_recon.sandbox.port import MIB, Sandbox, SandboxLimits
from tests.integration.e2b_loopback import FakeE2B

INVOICES_CSV = b"invoice_id,total\nINV-000001,10.50\nINV-000002,4.25\n"
SECRET_NAME, SECRET_VALUE = "BILLING_RECON_SIGNING_KEY", "s3cret-signing-value"

PANDAS_SCRIPT = """
import json
import pandas as pd

df = pd.read_csv("invoices.csv", dtype={"total": str})
print("loaded", len(df), "rows")
print(json.dumps({"invoices": df["invoice_id"].tolist(), "rows": len(df)}))
"""


def _e2b_loopback(fake: FakeE2B) -> Sandbox:
    from billing_recon.sandbox.e2b_backend import E2BSandbox

    return E2BSandbox(api_key=fake.api_key, api_url=fake.url, sandbox_url=fake.url)


_BUILDERS: dict[str, Callable[[FakeE2B], Sandbox]] = {
    "local": lambda _fake: make_sandbox(SandboxSettings(backend="local")),
    "subprocess": lambda _fake: make_sandbox(SandboxSettings(backend="subprocess")),
    "e2b": _e2b_loopback,
    "e2b-live": lambda _fake: make_sandbox(load().sandbox.model_copy(update={"backend": "e2b"})),
}
ISOLATION = {"local": "bwrap", "subprocess": "rlimit-subprocess", "e2b": "e2b", "e2b-live": "e2b"}
LIVE = pytest.mark.skipif(not os.environ.get("E2B_API_KEY"), reason="E2B_API_KEY is not set")


@pytest.fixture(scope="module")
def e2b_fake() -> Iterator[FakeE2B]:
    """The loopback E2B, for the whole module; stopped (and checked clean) at the end."""
    fake = FakeE2B().start()
    yield fake
    fake.stop()
    assert fake.live_sandboxes() == [], "a run did not kill its E2B sandbox"


@pytest.fixture(
    scope="module",
    params=["local", "subprocess", "e2b", pytest.param("e2b-live", marks=LIVE)],
)
def backend(request: pytest.FixtureRequest, e2b_fake: FakeE2B) -> Iterator[tuple[str, Sandbox]]:
    """Each backend in turn, built with a secret in our environment (it must not get in)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET_NAME, SECRET_VALUE)
        box = _BUILDERS[request.param](e2b_fake)
        yield request.param, box
        box.close()


@pytest.fixture
def sandbox(backend: tuple[str, Sandbox]) -> Sandbox:
    """The backend under test."""
    return backend[1]


# --- contract: every backend ----------------------------------------------------------------


def test_isolation_level_is_named(backend: tuple[str, Sandbox]) -> None:
    name, box = backend
    assert box.run("pass", {}).isolation == ISOLATION[name]


def test_pandas_script_result_comes_back_as_json(sandbox: Sandbox) -> None:
    result = sandbox.run(PANDAS_SCRIPT, {"invoices.csv": INVOICES_CSV})

    assert result.ok, result.stderr
    assert result.parse_json_stdout() == {"invoices": ["INV-000001", "INV-000002"], "rows": 2}
    assert result.isolation


def test_code_exception_is_data_with_name_value_traceback(sandbox: Sandbox) -> None:
    code = "print('before')\ndef share(total, people):\n    return total / people\nshare(10, 0)\n"

    result = sandbox.run(code, {})

    assert result.error is not None
    assert result.error.name == "ZeroDivisionError"
    assert result.error.value == "division by zero"
    assert "in share" in result.error.traceback
    assert "return total / people" in result.error.traceback
    assert "_bootstrap" not in result.error.traceback  # user frames only
    assert result.stdout == "before\n"  # the report goes to a side channel, not stdout
    assert not result.ok
    assert result.exit_code != 0


def test_script_is_compiled_as_written_without_our_future_imports(sandbox: Sandbox) -> None:
    code = "def f(x: int) -> None:\n    pass\nprint(f.__annotations__['x'] is int)\n"

    assert sandbox.run(code, {}).stdout == "True\n"  # not the string 'int' of PEP 563


def test_syntax_error_is_data(sandbox: Sandbox) -> None:
    result = sandbox.run("def broken(:\n    pass\n", {})

    assert result.error is not None
    assert result.error.name == "SyntaxError"
    assert not result.ok


def test_nonzero_exit_is_reported_without_error(sandbox: Sandbox) -> None:
    result = sandbox.run("import sys\nprint('bye')\nsys.exit(3)\n", {})

    assert result.exit_code == 3
    assert result.error is None
    assert result.stdout == "bye\n"
    assert not result.ok


def test_infinite_loop_times_out(sandbox: Sandbox) -> None:
    result = sandbox.run("while True:\n    pass\n", {}, limits=SandboxLimits(wall_timeout_s=1))

    assert result.timed_out
    assert result.exit_code is None
    assert not result.ok
    assert 1.0 <= result.duration_s < 5.0


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_flood_is_truncated_and_parent_memory_stays_bounded(
    sandbox: Sandbox, stream: str
) -> None:
    # ~50 MB on one stream, then a marker on the other: the child must never block on a pipe.
    other = "stderr" if stream == "stdout" else "stdout"
    code = (
        "import sys\n"
        f"for i in range(50_000):\n    print(f'{{i:08d}} ' + 'x' * 990, file=sys.{stream})\n"
        f"print('done', file=sys.{other})\n"
    )
    tracemalloc.start()
    try:
        result = sandbox.run(code, {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    flooded, marker = getattr(result, stream), getattr(result, other)
    assert result.ok, result.error
    assert getattr(result, f"{stream}_truncated")
    assert not getattr(result, f"{other}_truncated")
    assert len(flooded.encode()) == 1 * MIB
    assert flooded.startswith("00000000 xxx")  # the first bytes are the ones kept
    assert marker == "done\n"
    assert peak < 16 * MIB, f"parent allocated {peak} bytes for a 50 MB flood"


def test_input_and_output_files_round_trip(sandbox: Sandbox) -> None:
    blob = bytes(range(256)) * 4
    code = """
import json, os, shutil
import pandas as pd

df = pd.read_csv("invoices.csv", dtype={"total": str})
with open("out/summary.json", "w") as fh:
    json.dump({"ids": df["invoice_id"].tolist()}, fh)
shutil.copyfile("blob.bin", "out/blob.bin")
os.mkdir("out/nested")
with open("out/nested/note.txt", "w") as fh:
    fh.write("hi")
"""
    result = sandbox.run(code, {"invoices.csv": INVOICES_CSV, "blob.bin": blob})

    assert result.ok, result.error
    assert json.loads(result.files["summary.json"]) == {"ids": ["INV-000001", "INV-000002"]}
    assert result.files["blob.bin"] == blob
    assert result.files["nested/note.txt"] == b"hi"
    assert set(result.files) == {"summary.json", "blob.bin", "nested/note.txt"}


def test_parent_environment_is_not_visible(sandbox: Sandbox) -> None:
    code = (
        "import json, os\n"
        "raw = open('/proc/self/environ', 'rb').read().decode(errors='replace')\n"
        "print(raw)\n"
        "print(json.dumps(dict(os.environ)))\n"
    )

    result = sandbox.run(code, {})

    assert result.ok, result.error
    assert SECRET_NAME not in result.parse_json_stdout()
    assert SECRET_VALUE not in result.stdout


@pytest.mark.parametrize(
    "name", ["../escape.txt", "/etc/passwd", "sub/file.csv", "..", ".", "", "out", "a\\b", "a\0b"]
)
def test_path_traversal_in_file_names_is_rejected(sandbox: Sandbox, name: str) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        sandbox.run("print('never runs')", {name: b"x"})


def test_allocating_4_gib_fails_as_memory_error(sandbox: Sandbox) -> None:
    code = "block = bytearray(4 * 1024 ** 3)\nprint('allocated', len(block))\n"

    result = sandbox.run(code, {})

    assert result.error is not None
    assert result.error.name == "MemoryError"
    assert "allocated" not in result.stdout
