"""Escape corpus: each case is an attack a hostile script could try; it must fail, host unchanged.

Run on the strong mode (the warm bubblewrap pool) where every case must be contained, and on
the weak fallback (rlimit-subprocess), where the cases it cannot contain are reported as
xfail with the reason, not hidden. A case returns None when contained, else what escaped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from billing_recon.config.sandbox import SandboxSettings
from billing_recon.sandbox.factory import make_sandbox
from billing_recon.sandbox.port import MIB, Sandbox, SandboxLimits
from billing_recon.sandbox.subprocess_sandbox import SubprocessSandbox
from tests.integration.sandbox_support import processes_with_arg

SECRET_NAME, SECRET_VALUE = "BILLING_RECON_STRIPE_API_KEY", "sk_live_do_not_leak_4242"
Case = Callable[[Sandbox, Path], "str | None"]


@pytest.fixture(scope="module", params=["strong", "fallback"])
def mode(request: pytest.FixtureRequest) -> Iterator[tuple[str, Sandbox]]:
    """Each isolation mode, built while a secret sits in our environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET_NAME, SECRET_VALUE)
        box = (make_sandbox(SandboxSettings(backend="bwrap")) if request.param == "strong"
               else SubprocessSandbox())
        yield request.param, box
        box.close()


def _leaked(text: str) -> str | None:
    return "the secret was in the output" if SECRET_VALUE in text else None


def read_secret_from_environment(box: Sandbox, _tmp: Path) -> str | None:
    code = ("import os\nprint(dict(os.environ))\n"
            "for path in ('/proc/self/environ', '/proc/1/environ'):\n"
            "    try:\n        print(open(path, 'rb').read())\n"
            "    except OSError as exc:\n        print(exc)\n")
    return _leaked(box.run(code, {}).stdout)


def read_parent_proc_environ(box: Sandbox, _tmp: Path) -> str | None:
    # /proc/PID/environ shows a process's environment as it started, so the host here is a
    # fresh interpreter that has the secret from birth and runs the attack in the same mode.
    backend = "subprocess" if isinstance(box, SubprocessSandbox) else "bwrap"
    attack = ("import os\nfor pid in (HOST, os.getppid()):\n"
              "    try:\n        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
              "    except OSError as exc:\n        print('denied', exc)\n")
    host = ("import os, sys\nfrom billing_recon.config.sandbox import SandboxSettings\n"
            "from billing_recon.sandbox.factory import make_sandbox\n"
            f"box = make_sandbox(SandboxSettings(backend={backend!r}))\n"
            f"print(box.run({attack!r}.replace('HOST', str(os.getpid())), {{}}).stdout)\n"
            "box.close()\n")
    env = {**os.environ, SECRET_NAME: SECRET_VALUE}
    proc = subprocess.run([sys.executable, "-c", host], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    assert "environ" in proc.stdout or "denied" in proc.stdout, proc.stdout  # the attack ran
    return _leaked(proc.stdout)


def read_root_only_file(box: Sandbox, tmp: Path) -> str | None:
    secret = tmp / "root-only.txt"
    secret.write_text("root-only-token-9876")
    secret.chmod(0o600)
    paths = [str(secret), "/etc/shadow"]
    code = (f"for path in {paths!r}:\n    try:\n        print(open(path).read())\n"
            "    except OSError as exc:\n        print('denied', exc)\n")
    out = box.run(code, {}).stdout
    return "a root-only file was read" if "root-only-token" in out or "root:" in out else None


def connect_to_host_listener(box: Sandbox, _tmp: Path) -> str | None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = ("import socket\ntry:\n"
                f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).send(b'hi')\n"
                "    print('connected')\nexcept OSError as exc:\n    print('refused', exc)\n")
        result = box.run(code, {})
        try:
            listener.accept()[0].close()
        except BlockingIOError:
            return None
        return f"the code reached 127.0.0.1:{port} ({result.stdout.strip()})"


def write_outside_work_dir(box: Sandbox, tmp: Path) -> str | None:
    targets = [tmp / "outside.txt", Path(f"/tmp/escape-{os.getpid()}.txt")]
    code = (f"for path in {[str(t) for t in targets]!r} + ['../escape.txt']:\n"
            "    try:\n        open(path, 'w').write('pwned')\n        print('wrote', path)\n"
            "    except OSError as exc:\n        print('denied', exc)\n")
    box.run(code, {})
    written = [str(t) for t in targets if t.exists()]
    for path in written:
        os.unlink(path)
    return f"wrote {written}" if written else None


def bounded_fork_bomb(box: Sandbox, _tmp: Path) -> str | None:
    marker = "31.4159"
    code = ("import subprocess\nstarted = 0\ntry:\n    for _ in range(300):\n"
            f"        subprocess.Popen(['sleep', '{marker}'])\n        started += 1\n"
            "finally:\n    print(started)\n")
    result = box.run(code, {})
    time.sleep(0.2)
    left = processes_with_arg(marker)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    started = int(result.stdout.split()[0]) if result.stdout.strip() else 0
    if left:
        return f"{len(left)} processes outlived the run"
    return f"all {started} processes started (no process limit)" if started >= 300 else None


def allocate_4_gib(box: Sandbox, _tmp: Path) -> str | None:
    result = box.run("block = bytearray(4 * 1024 ** 3)\nprint('allocated')\n", {})
    return "4 GiB were allocated" if "allocated" in result.stdout else None


def infinite_loop(box: Sandbox, _tmp: Path) -> str | None:
    result = box.run("while True:\n    pass\n", {}, limits=SandboxLimits(wall_timeout_s=1))
    if not result.timed_out or result.duration_s > 5:
        return f"the loop was not stopped on time ({result.duration_s:.1f}s)"
    return None


def daemon_outlives_run(box: Sandbox, _tmp: Path) -> str | None:
    marker = "27.1828"
    code = ("import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        os.execvp('sleep', ['sleep', '{marker}'])\n    os._exit(0)\n"
            "os.wait()\nprint('daemon started')\n")
    box.run(code, {})
    time.sleep(0.5)
    left = processes_with_arg(marker)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return f"a setsid daemon outlived the run ({left})" if left else None


def stdout_flood_100_mb(box: Sandbox, _tmp: Path) -> str | None:
    code = ("import sys\nchunk = b'y' * (1024 * 1024)\nfor _ in range(100):\n"
            "    sys.stdout.buffer.write(chunk)\n")
    tracemalloc.start()
    try:
        result = box.run(code, {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if len(result.stdout.encode()) > MIB or not result.stdout_truncated:
        return f"{len(result.stdout)} bytes of stdout came back"
    return f"the host allocated {peak} bytes" if peak > 16 * MIB else None


def signal_the_parent(box: Sandbox, _tmp: Path) -> str | None:
    received: list[int] = []

    def record(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGUSR1, record)
    try:
        code = (f"import os, signal\nfor pid in ({os.getpid()}, os.getppid()):\n"
                "    try:\n        os.kill(pid, signal.SIGUSR1)\n        print('sent', pid)\n"
                "    except OSError as exc:\n        print('denied', exc)\n")
        box.run(code, {})
        time.sleep(0.1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    return "the host process received the signal" if received else None


CASES: list[Case] = [
    read_secret_from_environment, read_parent_proc_environ, read_root_only_file,
    connect_to_host_listener, write_outside_work_dir, bounded_fork_bomb, allocate_4_gib,
    infinite_loop, daemon_outlives_run, stdout_flood_100_mb, signal_the_parent,
]


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_attack_fails_and_host_is_unchanged(
    mode: tuple[str, Sandbox], case: Case, tmp_path: Path
) -> None:
    name, box = mode
    escaped = case(box, tmp_path)
    assert box.run("print('still serving')", {}).stdout == "still serving\n"
    if escaped is not None and name == "fallback":
        pytest.xfail(f"the rlimit-subprocess fallback cannot contain this: {escaped}")
    assert escaped is None, escaped
