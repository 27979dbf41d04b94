"""The weak local backend: a scrubbed, rlimited subprocess in a throw-away directory.

Isolation level "rlimit-subprocess". It contains honest mistakes (infinite loops, memory
blow-ups, output floods, stray child processes) but NOT a hostile script: the code runs as the
caller's uid, can read whatever that uid can read, reach the network, and escape the process
group with setsid(). RLIMIT_NPROC counts every process of the uid and is not enforced at all for
root. The hardened bubblewrap backend (separate namespaces, non-root uid) is the strong level;
use this one for development and tests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from billing_recon.errors import SandboxUnavailable
from billing_recon.sandbox.port import (
    OUTPUT_DIR,
    ExecutionError,
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
_SIGNAL_HINTS = {
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "file size limit exceeded",
    signal.SIGKILL: "killed (SIGKILL), for example by the kernel when memory ran out",
    signal.SIGSEGV: "segmentation fault",
}
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Layout:
    """Paths of one run: `work` is the code's cwd; `run` holds our files; `tmp` is TMPDIR."""

    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def script(self) -> Path:
        return self.run / "main.py"

    @property
    def error(self) -> Path:
        return self.run / "error.json"


class _Capture:
    """Keeps the first `cap` bytes of a stream and counts (but drops) the rest."""

    def __init__(self, cap: int) -> None:
        self.cap, self.data, self.truncated = cap, bytearray(), False

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
        self.data += chunk[: max(room, 0)]

    def text(self) -> str:
        # A cut may split a multi-byte character; replace it rather than fail.
        return self.data.decode("utf-8", errors="replace")


class _Pump:
    """Reads stdout and stderr concurrently (one selector) so the child never blocks on a pipe."""

    def __init__(self, stdout: IO[bytes], stderr: IO[bytes], cap: int) -> None:
        self.out, self.err = _Capture(cap), _Capture(cap)
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


def _rlimits(limits: SandboxLimits) -> list[tuple[int, tuple[int, int]]]:
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
    pairs = _rlimits(limits)

    def apply() -> None:
        for res, value in pairs:
            resource.setrlimit(res, value)

    return apply


def _child_env(layout: _Layout) -> dict[str, str]:
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


def _read_bounded(path: Path, cap: int) -> bytes | None:
    """Up to cap+1 bytes of a regular file, never following a symlink the code planted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read(cap + 1)


def _read_error(path: Path, cap: int) -> ExecutionError | None:
    """The bootstrap's error report, if it wrote a readable one."""
    raw = _read_bounded(path, cap)
    if raw is None or len(raw) > cap:
        return None
    try:
        return ExecutionError.model_validate(json.loads(raw))
    except ValueError:  # includes pydantic's ValidationError and JSONDecodeError
        _log.warning("sandbox error report at %s is unreadable", path)
        return None


def _signal_error(exit_code: int) -> ExecutionError | None:
    """An ExecutionError describing death by signal (a negative exit code), else None."""
    if exit_code >= 0:
        return None
    try:
        sig = signal.Signals(-exit_code)
    except ValueError:
        return ExecutionError(name=f"signal {-exit_code}", value="killed by a signal", traceback="")
    return ExecutionError(name=sig.name, value=_SIGNAL_HINTS.get(sig, "killed"), traceback="")


def _regular_files(top: Path) -> Iterator[Path]:
    """Regular files below `top`, not following symlinks (they could point anywhere)."""
    for dirpath, _dirs, names in os.walk(top, followlinks=False):
        for name in names:
            path = Path(dirpath, name)
            if not path.is_symlink() and path.is_file():
                yield path


def _collect_files(out: Path, budget: int) -> tuple[dict[str, bytes], bool]:
    """Files the code wrote to out/, in path order, up to `budget` bytes in total."""
    if out.is_symlink() or not out.is_dir():
        return {}, False
    files: dict[str, bytes] = {}
    truncated = False
    for path in sorted(_regular_files(out)):
        data = _read_bounded(path, budget)
        if data is None or len(data) > budget:
            truncated = truncated or data is not None
            continue
        files[path.relative_to(out).as_posix()] = data
        budget -= len(data)
    return files, truncated


def _unlock_dirs(root: Path) -> None:
    """Make every real directory under `root` writable again (the code may have chmod-ed them)."""
    root.chmod(0o700)
    for dirpath, dirs, _names in os.walk(root):
        for name in dirs:
            path = Path(dirpath, name)
            if not path.is_symlink():  # chmod follows links; never touch a target outside
                path.chmod(0o700)


def _remove_tree(root: Path) -> None:
    """Delete the run's directory; a leftover is logged, not raised (the result is still good)."""
    try:
        shutil.rmtree(root)
    except OSError:
        with contextlib.suppress(OSError):
            _unlock_dirs(root)
        shutil.rmtree(root, ignore_errors=True)
    if root.exists():
        _log.warning("could not remove sandbox directory %s", root)


def _prepare(layout: _Layout, code: str, files: Mapping[str, bytes]) -> None:
    """Create the run's directories, the script and the input files."""
    for directory in (layout.work / OUTPUT_DIR, layout.run, layout.tmp):
        directory.mkdir(parents=True)
    layout.script.write_text(code, encoding="utf-8")
    for name, data in files.items():
        (layout.work / name).write_bytes(data)


class LocalSandbox:
    """Sandbox backend running each script in a fresh rlimited subprocess (see module doc)."""

    name = "local"

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
        layout = _Layout(self._make_root())
        try:
            try:
                _prepare(layout, code, inputs)
            except OSError as exc:
                raise SandboxUnavailable(f"cannot prepare sandbox directory: {exc}") from exc
            return self._execute(layout, limits or self.limits)
        finally:
            _remove_tree(layout.root)

    def close(self) -> None:
        """Nothing to release: every run cleans up after itself."""

    def _make_root(self) -> Path:
        try:
            return Path(tempfile.mkdtemp(prefix="billing-recon-sbx-", dir=self.tmp_root))
        except OSError as exc:
            raise SandboxUnavailable(f"cannot create a sandbox directory: {exc}") from exc

    def _spawn(self, layout: _Layout, limits: SandboxLimits) -> subprocess.Popen[bytes]:
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

    def _execute(self, layout: _Layout, limits: SandboxLimits) -> SandboxResult:
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
        layout: _Layout,
        limits: SandboxLimits,
        pump: _Pump,
        exit_code: int | None,
        duration: float,
    ) -> SandboxResult:
        error = _read_error(layout.error, limits.max_output_bytes)
        if error is None and exit_code is not None:
            error = _signal_error(exit_code)
        files, files_truncated = _collect_files(layout.work / OUTPUT_DIR, limits.max_files_bytes)
        return SandboxResult(
            stdout=pump.out.text(),
            stderr=pump.err.text(),
            error=error,
            timed_out=exit_code is None,
            exit_code=exit_code,
            duration_s=duration,
            stdout_truncated=pump.out.truncated,
            stderr_truncated=pump.err.truncated,
            files=files,
            files_truncated=files_truncated,
            isolation=ISOLATION,
        )
