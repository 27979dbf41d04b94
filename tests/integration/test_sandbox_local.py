"""The Sandbox port's contract, run against every backend, then checks only the local one allows.

A later backend (bubblewrap, E2B) joins by adding its name to BACKENDS; the contract tests must
pass unchanged. The local-only tests look at host processes and directories directly.
"""

from __future__ import annotations

import json
import os
import signal
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from billing_recon.errors import SandboxUnavailable
from billing_recon.sandbox import (
    LocalSandbox,
    Sandbox,
    SandboxLimits,
    SandboxResult,
    make_sandbox,
)
from billing_recon.sandbox.port import MIB

BACKENDS = ["local"]

INVOICES_CSV = b"invoice_id,total\nINV-000001,10.50\nINV-000002,4.25\n"

PANDAS_SCRIPT = """
import json
import pandas as pd

df = pd.read_csv("invoices.csv", dtype={"total": str})
print("loaded", len(df), "rows")
print(json.dumps({"invoices": df["invoice_id"].tolist(), "rows": len(df)}))
"""


@pytest.fixture(params=BACKENDS)
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """Each backend in turn, built the way production builds it."""
    box = make_sandbox(request.param)
    yield box
    box.close()


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """Where the local sandbox makes its per-run directories, so a test can inspect them."""
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def local(runs_dir: Path) -> LocalSandbox:
    """The local backend with its run directories under `runs_dir`."""
    return LocalSandbox(tmp_root=runs_dir)


def _alive(pid: int, comm: str) -> bool:
    """True if `pid` is a live (not zombie) process named `comm`."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
    return name == comm and state not in "ZX"


def _dies_soon(pid: int, comm: str, within: float = 2.0) -> bool:
    """True once `pid` is gone; SIGKILL takes effect asynchronously, so allow a moment."""
    deadline = time.monotonic() + within
    while _alive(pid, comm):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _first_int(result: SandboxResult) -> int:
    return int(result.stdout.split()[0])


# --- contract: every backend ----------------------------------------------------------------


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


def test_parent_environment_is_not_visible(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_RECON_SIGNING_KEY", "s3cret-signing-value")
    code = (
        "import json, os\n"
        "raw = open('/proc/self/environ', 'rb').read().decode(errors='replace')\n"
        "print(raw)\n"
        "print(json.dumps(dict(os.environ)))\n"
    )

    result = sandbox.run(code, {})

    assert result.ok, result.error
    assert "BILLING_RECON_SIGNING_KEY" not in result.parse_json_stdout()
    assert "s3cret-signing-value" not in result.stdout


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


# --- local backend only: host processes and directories ------------------------------------


def test_timeout_kills_the_whole_process_group(local: LocalSandbox) -> None:
    code = (
        "import subprocess\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "print(child.pid, flush=True)\n"
        "while True:\n    pass\n"
    )
    result = local.run(code, {}, limits=SandboxLimits(wall_timeout_s=1))
    pid = _first_int(result)
    try:
        assert result.timed_out
        assert _dies_soon(pid, "sleep"), "the script's child survived the timeout"
    finally:
        if _alive(pid, "sleep"):
            os.kill(pid, signal.SIGKILL)


def test_children_left_running_are_killed_when_the_script_ends(local: LocalSandbox) -> None:
    code = "import subprocess\nprint(subprocess.Popen(['sleep', '300']).pid, flush=True)\n"
    result = local.run(code, {})
    pid = _first_int(result)
    try:
        assert result.ok, result.error
        assert result.duration_s < 5.0
        assert _dies_soon(pid, "sleep"), "a background child outlived the run"
    finally:
        if _alive(pid, "sleep"):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("code", "wall"),
    [
        ("import os\nprint(os.getcwd())\n", 30.0),
        ("import os\nprint(os.getcwd(), flush=True)\n1 / 0\n", 30.0),
        ("import os\nprint(os.getcwd(), flush=True)\nwhile True:\n    pass\n", 1.0),
    ],
    ids=["success", "exception", "timeout"],
)
def test_run_directory_is_removed_afterwards(
    local: LocalSandbox, runs_dir: Path, code: str, wall: float
) -> None:
    result = local.run(code, {"in.csv": b"a\n1\n"}, limits=SandboxLimits(wall_timeout_s=wall))

    cwd = Path(result.stdout.strip())
    assert cwd.is_relative_to(runs_dir)
    assert not cwd.exists()
    assert list(runs_dir.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_run_directory_is_removed_even_if_the_script_locks_it(
    local: LocalSandbox, runs_dir: Path
) -> None:
    code = "import os\nos.mkdir('locked')\nopen('locked/f', 'w').close()\nos.chmod('locked', 0)\n"

    result = local.run(code, {})

    assert result.ok, result.error
    assert list(runs_dir.iterdir()) == []


def test_cpu_limit_kills_a_busy_script(local: LocalSandbox) -> None:
    limits = SandboxLimits(cpu_seconds=1, wall_timeout_s=20)

    result = local.run("while True:\n    pass\n", {}, limits=limits)

    assert not result.timed_out
    assert result.exit_code == -signal.SIGXCPU
    assert result.error is not None
    assert result.error.name == "SIGXCPU"


@pytest.mark.skipif(os.geteuid() == 0, reason="RLIMIT_NPROC is not enforced for root")
def test_process_limit_stops_a_spawn_flood(local: LocalSandbox) -> None:
    code = "import subprocess\nfor _ in range(50):\n    subprocess.Popen(['sleep', '30'])\n"

    result = local.run(code, {}, limits=SandboxLimits(max_processes=8))

    assert result.error is not None
    assert result.error.name == "BlockingIOError"  # fork() failed with EAGAIN


def test_child_environment_is_built_from_nothing(local: LocalSandbox) -> None:
    result = local.run("import json, os\nprint(json.dumps(dict(os.environ)))\n", {})

    env = result.parse_json_stdout()
    assert env["PATH"] == "/usr/bin:/bin"
    assert env["LANG"] == "C.UTF-8"
    assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == "1"
    assert set(env) <= {
        "PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE",
        "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    }  # fmt: skip


def test_symlinks_in_out_dir_are_not_followed(local: LocalSandbox, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host data")
    code = f"import os\nos.symlink({str(secret)!r}, 'out/leak.txt')\nopen('out/ok.txt', 'w')\n"

    result = local.run(code, {})

    assert result.ok, result.error
    assert set(result.files) == {"ok.txt"}


def test_output_files_are_bounded(local: LocalSandbox) -> None:
    code = "open('out/a.bin', 'wb').write(b'a' * 600)\nopen('out/b.bin', 'wb').write(b'b' * 600)\n"

    result = local.run(code, {}, limits=SandboxLimits(max_files_bytes=1000))

    assert result.files == {"a.bin": b"a" * 600}
    assert result.files_truncated


def test_local_isolation_level_is_named(local: LocalSandbox) -> None:
    assert local.run("pass", {}).isolation == "rlimit-subprocess"


def test_missing_interpreter_is_sandbox_unavailable() -> None:
    with pytest.raises(SandboxUnavailable, match="no executable Python"):
        LocalSandbox(python="/nonexistent/python3")


def test_unknown_backend_is_sandbox_unavailable() -> None:
    with pytest.raises(SandboxUnavailable, match="unknown sandbox backend 'nope'"):
        make_sandbox("nope")


# --- the port's models ------------------------------------------------------------------------


def test_memory_limit_below_1_gib_is_refused() -> None:
    with pytest.raises(ValidationError, match="pandas hangs"):
        SandboxLimits(memory_bytes=512 * MIB)


def test_default_limits() -> None:
    limits = SandboxLimits()
    assert (limits.cpu_seconds, limits.memory_bytes, limits.wall_timeout_s) == (20, 2048 * MIB, 30)
    assert (limits.file_size_bytes, limits.max_processes, limits.open_files) == (64 * MIB, 64, 256)
    assert limits.max_output_bytes == 1 * MIB


def _result(stdout: str, **extra: object) -> SandboxResult:
    fields: dict[str, object] = {
        "stdout": stdout, "stderr": "", "exit_code": 0, "duration_s": 0.1, "isolation": "test",
    }  # fmt: skip
    return SandboxResult.model_validate(fields | extra)


def test_parse_json_stdout_takes_the_last_non_empty_line() -> None:
    assert _result('progress...\n{"a": 1}\n\n  \n').parse_json_stdout() == {"a": 1}


@pytest.mark.parametrize(
    ("stdout", "message"),
    [("", "stdout is empty"), ("{not json\n", "last stdout line is not JSON")],
)
def test_parse_json_stdout_explains_what_is_wrong(stdout: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _result(stdout).parse_json_stdout()


def test_parse_json_stdout_mentions_truncation() -> None:
    with pytest.raises(ValueError, match="truncated"):
        _result('{"a": ', stdout_truncated=True).parse_json_stdout()


def test_ok_requires_exit_zero_no_error_no_timeout() -> None:
    assert _result("").ok
    assert not _result("", exit_code=1).ok
    assert not _result("", exit_code=None, timed_out=True).ok
    assert not _result("", error={"name": "E", "value": "", "traceback": ""}).ok
