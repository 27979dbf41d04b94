"""The weak "subprocess" backend: a scrubbed, rlimited subprocess in a throw-away directory.

Isolation level "rlimit-subprocess". It contains honest mistakes (infinite loops, memory
blow-ups, output floods, stray child processes) but NOT a hostile script: the code runs as the
caller's uid, can read whatever that uid can read, reach the network, and escape the process
group with setsid(). RLIMIT_NPROC counts every process of the uid and is not enforced at all for
root. The hardened bubblewrap backend (separate namespaces, non-root uid) is the strong level;
use this one for development and tests.
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from billing_recon.errors import SandboxUnavailable
from billing_recon.sandbox.collect import Capture, RunDir, build_result, prepare, remove_tree
from billing_recon.sandbox.port import (
    SandboxLimits,
    SandboxResult,
    check_file_name,
)

ISOLATION = "rlimit-subprocess"
_BOOTSTRAP = Path(__file__).with_name("_bootstrap.py")
_READ_CHUNK = 64 * 1024
_POLL_S = 0.05  # how often we look for an exited leader while something still holds its pipes
_DRAIN_GRACE_S = 0.5  # a process that escaped the group may hold the pipes open forever
_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class _Pump:
    """Reads stdout and stderr concurrently (one selector) so the child never blocks on a pipe."""

    def __init__(self, stdout: IO[bytes], stderr: IO[bytes], cap: int) -> None:
        self.out, self.err = Capture(cap), Capture(cap)
        self._sel = selectors.DefaultSelector()
        self._sel.register(stdout.fileno(), selectors.EVENT_READ, self.out)
        self._sel.register(stderr.fileno(), selectors.EVENT_READ, self.err)

    def step(self, timeout: float) -> None:
        """Read whatever is ready within `timeout` seconds."""
        if not self._sel.get_map():
            time.sleep(min(timeout, 0.001))  # both pipes closed; the leader is about to exit
            return
        for key, _ in self._sel.select(timeout):
            chunk = os.read(key.fd, _READ_CHUNK)
            if chunk:
                key.data.feed(chunk)
            else:
                self._sel.unregister(key.fd)

    def drain(self, grace: float) -> None:
        """Read until both pipes close or `grace` seconds pass."""
        deadline = time.monotonic() + grace
        while self._sel.get_map() and (remaining := deadline - time.monotonic()) > 0:
            self.step(remaining)

    def __enter__(self) -> _Pump:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sel.close()  # the pipes themselves belong to the Popen object


def _clamped(res: int, soft: int, hard: int) -> tuple[int, int]:
    """(soft, hard) lowered to the parent's own hard limit, which a child cannot exceed."""
    current = resource.getrlimit(res)[1]
    if current != resource.RLIM_INFINITY:
        hard = min(hard, current)
    return min(soft, hard), hard


def rlimits(limits: SandboxLimits) -> list[tuple[int, tuple[int, int]]]:
    """The rlimits of a run, clamped here in the parent so the child only calls setrlimit."""
    wanted = [
        # soft CPU limit sends SIGXCPU; the hard one, a second later, SIGKILLs a script ignoring it
        (resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1),
        (resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
        (resource.RLIMIT_NPROC, limits.max_processes, limits.max_processes),
        (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    return [(res, _clamped(res, soft, hard)) for res, soft, hard in wanted]


def _limit_child(limits: SandboxLimits) -> Callable[[], None]:
    """A preexec_fn that only calls setrlimit: after fork, before exec, nothing else is safe."""
    pairs = rlimits(limits)

    def apply() -> None:
        for res, value in pairs:
            resource.setrlimit(res, value)

    return apply


def _child_env(layout: RunDir) -> dict[str, str]:
    """A minimal environment built from nothing: no variable of ours (secrets!) reaches the code."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(layout.work),
        "TMPDIR": str(layout.tmp),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    # One BLAS/OpenMP thread: threads multiply address space and would trip RLIMIT_AS.
    return env | dict.fromkeys(_THREAD_VARS, "1")


def _leader_exited(pid: int) -> bool:
    """True once `pid` has exited; WNOWAIT leaves it unreaped so its group id stays ours."""
    try:
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, pid, flags) is not None
    except ChildProcessError:
        return True


def _kill_group(pgid: int) -> None:
    """SIGKILL every process left in the run's process group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pgid, signal.SIGKILL)


def _supervise(pid: int, pump: _Pump, deadline: float) -> bool:
    """Pump output until the leader exits; True if the wall-clock deadline came first."""
    while not _leader_exited(pid):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        pump.step(min(remaining, _POLL_S))
    return False


class SubprocessSandbox:
    """Sandbox backend running each script in a fresh rlimited subprocess (see module doc)."""

    name = "subprocess"
    isolation = ISOLATION

    def __init__(
        self,
        python: str | None = None,
        limits: SandboxLimits | None = None,
        tmp_root: str | os.PathLike[str] | None = None,
    ) -> None:
        """`python` defaults to this interpreter (its site-packages give the code pandas)."""
        wanted = python or sys.executable
        found = shutil.which(wanted) if wanted else None
        if found is None:
            raise SandboxUnavailable(f"no executable Python interpreter at {wanted!r}")
        self.python = found
        self.limits = limits or SandboxLimits()
        self.tmp_root = tmp_root

    def run(
        self, code: str, files: Mapping[str, bytes], *, limits: SandboxLimits | None = None
    ) -> SandboxResult:
        """Run `code` with `files` in its cwd; failures of the code are data in the result."""
        inputs = {check_file_name(name): data for name, data in files.items()}
        layout = RunDir(self._make_root())
        try:
            try:
                prepare(layout, code, inputs)
            except OSError as exc:
                raise SandboxUnavailable(f"cannot prepare sandbox directory: {exc}") from exc
            return self._execute(layout, limits or self.limits)
        finally:
            remove_tree(layout.root)

    def close(self) -> None:
        """Nothing to release: every run cleans up after itself."""

    def _make_root(self) -> Path:
        try:
            return Path(tempfile.mkdtemp(prefix="billing-recon-sbx-", dir=self.tmp_root))
        except OSError as exc:
            raise SandboxUnavailable(f"cannot create a sandbox directory: {exc}") from exc

    def _spawn(self, layout: RunDir, limits: SandboxLimits) -> subprocess.Popen[bytes]:
        # -I: no env vars, user site or script dir on sys.path (the venv's site-packages stay);
        # -B: -I ignores PYTHONDONTWRITEBYTECODE, so say it again as a flag.
        argv = [self.python, "-I", "-B", "-X", "utf8", str(_BOOTSTRAP)]
        argv += [str(layout.script), str(layout.error)]
        try:
            return subprocess.Popen(
                argv,
                cwd=layout.work,
                env=_child_env(layout),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, killed as a whole
                preexec_fn=_limit_child(limits),  # only setrlimit runs there; see _limit_child
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise SandboxUnavailable(f"cannot start {self.python}: {exc}") from exc

    def _execute(self, layout: RunDir, limits: SandboxLimits) -> SandboxResult:
        start = time.monotonic()
        with self._spawn(layout, limits) as proc:
            assert proc.stdout is not None and proc.stderr is not None  # PIPE was asked for
            with _Pump(proc.stdout, proc.stderr, limits.max_output_bytes) as pump:
                try:
                    timed_out = _supervise(proc.pid, pump, start + limits.wall_timeout_s)
                finally:
                    _kill_group(proc.pid)  # stray children too, and on any parent-side error
                pump.drain(_DRAIN_GRACE_S)
            exit_code = proc.wait()
        duration = time.monotonic() - start
        return self._result(layout, limits, pump, None if timed_out else exit_code, duration)

    def _result(
        self,
        layout: RunDir,
        limits: SandboxLimits,
        pump: _Pump,
        exit_code: int | None,
        duration: float,
    ) -> SandboxResult:
        return build_result(layout, limits, (pump.out, pump.err), exit_code, duration, ISOLATION)
