"""The weak rlimit-subprocess backend (SubprocessSandbox) from the host, and the port's models.

The contract every backend meets is in test_sandbox_contract.py; these tests look at host
processes and directories directly, which only this backend leaves on the host.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
from pathlib import Path

import pytest
from pydantic import ValidationError

from billing_recon.config import from_variables
from billing_recon.errors import SandboxUnavailable, UserInputError
from billing_recon.sandbox.port import MIB, SandboxLimits, SandboxResult
from billing_recon.sandbox.subprocess_sandbox import SubprocessSandbox
from tests.integration.sandbox_support import alive, dies_soon, first_int


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """Where the local sandbox makes its per-run directories, so a test can inspect them."""
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def local(runs_dir: Path) -> SubprocessSandbox:
    """The local backend with its run directories under `runs_dir`."""
    return SubprocessSandbox(tmp_root=runs_dir)


# --- local backend only: host processes and directories ------------------------------------


def test_timeout_kills_the_whole_process_group(local: SubprocessSandbox) -> None:
    code = (
        "import subprocess\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "print(child.pid, flush=True)\n"
        "while True:\n    pass\n"
    )
    result = local.run(code, {}, limits=SandboxLimits(wall_timeout_s=1))
    pid = first_int(result)
    try:
        assert result.timed_out
        assert dies_soon(pid, "sleep"), "the script's child survived the timeout"
    finally:
        if alive(pid, "sleep"):
            os.kill(pid, signal.SIGKILL)


def test_children_left_running_are_killed_when_the_script_ends(local: SubprocessSandbox) -> None:
    code = "import subprocess\nprint(subprocess.Popen(['sleep', '300']).pid, flush=True)\n"
    result = local.run(code, {})
    pid = first_int(result)
    try:
        assert result.ok, result.error
        assert result.duration_s < 5.0
        assert dies_soon(pid, "sleep"), "a background child outlived the run"
    finally:
        if alive(pid, "sleep"):
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
    local: SubprocessSandbox, runs_dir: Path, code: str, wall: float
) -> None:
    result = local.run(code, {"in.csv": b"a\n1\n"}, limits=SandboxLimits(wall_timeout_s=wall))

    cwd = Path(result.stdout.strip())
    assert cwd.is_relative_to(runs_dir)
    assert not cwd.exists()
    assert list(runs_dir.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_run_directory_is_removed_even_if_the_script_locks_it(
    local: SubprocessSandbox, runs_dir: Path
) -> None:
    code = "import os\nos.mkdir('locked')\nopen('locked/f', 'w').close()\nos.chmod('locked', 0)\n"

    result = local.run(code, {})

    assert result.ok, result.error
    assert list(runs_dir.iterdir()) == []


def test_cpu_limit_kills_a_busy_script(local: SubprocessSandbox) -> None:
    limits = SandboxLimits(cpu_seconds=1, wall_timeout_s=20)

    result = local.run("while True:\n    pass\n", {}, limits=limits)

    assert not result.timed_out
    assert result.exit_code == -signal.SIGXCPU
    assert result.error is not None
    assert result.error.name == "SIGXCPU"


@pytest.mark.skipif(os.geteuid() == 0, reason="RLIMIT_NPROC is not enforced for root")
def test_process_limit_stops_a_spawn_flood(local: SubprocessSandbox) -> None:
    code = "import subprocess\nfor _ in range(50):\n    subprocess.Popen(['sleep', '30'])\n"

    result = local.run(code, {}, limits=SandboxLimits(max_processes=8))

    assert result.error is not None
    assert result.error.name == "BlockingIOError"  # fork() failed with EAGAIN


def test_child_environment_is_built_from_nothing(local: SubprocessSandbox) -> None:
    result = local.run("import json, os\nprint(json.dumps(dict(os.environ)))\n", {})

    env = result.parse_json_stdout()
    assert env["PATH"] == "/usr/bin:/bin"
    assert env["LANG"] == "C.UTF-8"
    assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == "1"
    assert set(env) <= {
        "PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE",
        "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    }  # fmt: skip


def test_symlinks_in_out_dir_are_not_followed(local: SubprocessSandbox, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host data")
    code = f"import os\nos.symlink({str(secret)!r}, 'out/leak.txt')\nopen('out/ok.txt', 'w')\n"

    result = local.run(code, {})

    assert result.ok, result.error
    assert set(result.files) == {"ok.txt"}


def test_output_files_are_bounded(local: SubprocessSandbox) -> None:
    code = "open('out/a.bin', 'wb').write(b'a' * 600)\nopen('out/b.bin', 'wb').write(b'b' * 600)\n"

    result = local.run(code, {}, limits=SandboxLimits(max_files_bytes=1000))

    assert result.files == {"a.bin": b"a" * 600}
    assert result.files_truncated


def test_small_output_files_are_read_without_reserving_the_budget(local: SubprocessSandbox) -> None:
    tracemalloc.start()
    try:
        result = local.run("open('out/small.txt', 'w').write('tiny')", {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert result.files == {"small.txt": b"tiny"}
    assert peak < 8 * MIB, f"reading a 4-byte file allocated {peak} bytes"


def test_subprocess_isolation_level_is_named(local: SubprocessSandbox) -> None:
    assert local.run("pass", {}).isolation == "rlimit-subprocess"


def test_missing_interpreter_is_sandbox_unavailable() -> None:
    with pytest.raises(SandboxUnavailable, match="no executable Python"):
        SubprocessSandbox(python="/nonexistent/python3")


def test_unknown_backend_is_a_setting_error_naming_the_variable() -> None:
    with pytest.raises(UserInputError, match="BILLING_RECON_SANDBOX='nope': Input should be "
                       "'local', 'bwrap', 'subprocess' or 'e2b'"):
        from_variables({"BILLING_RECON_SANDBOX": "nope"})


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
