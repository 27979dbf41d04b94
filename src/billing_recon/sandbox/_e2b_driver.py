"""Runs the user's script inside an E2B code-interpreter kernel as our bootstrap does locally.

The E2B backend sends this file's source as one code cell, followed by a call of
`_billing_recon_run(...)`. Only the standard library: it runs in the remote kernel beside
untrusted code. The script runs from its own file (so tracebacks show its lines) with
`__name__ == "__main__"`; SystemExit becomes an exit code instead of a kernel error; stdout and
stderr are capped inside the sandbox, so a flood never crosses the network; a wall-clock alarm
stops a runaway script before the client's own deadline; any other exception propagates and
comes back as `Execution.error`. A status file in out/ tells the host what happened and which
files the script left in out/.

E2B bounds only the VM (memory, vCPUs, lifetime); the limits of the run are the ones set here
on the kernel process: address space (when the kernel leaves room for it), file size, and CPU
time (a SIGXCPU at the soft limit stops the script; the hard limit is left alone, so the
kernel itself is never killed by it). The kernel runs as root, so a process-count limit would
not hold and none is set; a script that wants to can raise any of these again: E2B's VM is the
isolation, these limits only stop the runaway script.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sys
from typing import Any

_HEADROOM = 256 * 1024 * 1024


class _Deadline(BaseException):
    """Raised by the wall-clock alarm; BaseException so `except Exception` cannot eat it."""


class _CpuLimit(BaseException):
    """Raised at the CPU-time soft limit (SIGXCPU)."""


class _Capped(io.TextIOBase):
    """Forwards the first `cap` UTF-8 bytes to the real stream and drops the rest."""

    def __init__(self, inner: Any, cap: int) -> None:
        self.inner, self.room, self.truncated = inner, cap, False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "surrogateescape")
        if len(data) > self.room:
            self.truncated, data = True, data[: self.room]
        if data:
            self.room -= len(data)
            self.inner.write(data.decode("utf-8", "ignore"))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()


def _exit_code(code: object) -> int:
    """The exit status the interpreter would give for SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF  # as a process's status: never negative, so never read as a signal
    print(code, file=sys.stderr)
    return 1


def _limit(res: int, value: int) -> None:
    with contextlib.suppress(ValueError, OSError):  # a lower hard limit is already in force
        resource.setrlimit(res, (value, value))


def _address_space() -> int:
    """Bytes of address space this (kernel) process already uses."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _out_files(status_path: str) -> list[list[Any]]:
    """[relative path, size] of the regular files below out/, symlinks ignored."""
    found = []
    for dirpath, _dirs, names in os.walk("out"):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path) and path != status_path:
                found.append([os.path.relpath(path, "out"), os.path.getsize(path)])
    return sorted(found)


def _alarm(_signum: int, _frame: object) -> None:
    raise _Deadline


def _xcpu(_signum: int, _frame: object) -> None:
    raise _CpuLimit


def _limit_cpu_back(limits: tuple[int, int]) -> None:
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CPU, limits)


def _cpu_limit(seconds: int) -> tuple[int, int]:
    """Let the kernel use `seconds` more CPU time; return the limits to restore."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wanted = int(usage.ru_utime + usage.ru_stime) + 1 + seconds
    infinite = resource.RLIM_INFINITY
    if (soft == infinite or wanted < soft) and (hard == infinite or wanted <= hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CPU, (wanted, hard))
    return soft, hard


def _execute(script: str, status: dict[str, Any]) -> None:
    """Run the script as __main__; record its exit code, or the limit that stopped it."""
    try:
        with open(script, encoding="utf-8") as fh:
            source = fh.read()
        namespace = {"__name__": "__main__", "__file__": script, "__builtins__": __builtins__}
        exec(compile(source, script, "exec", dont_inherit=True), namespace)
        status["exit_code"] = 0
    except SystemExit as exc:
        status["exit_code"] = _exit_code(exc.code)
    except _Deadline:
        status.update(exit_code=None, timed_out=True)
    except _CpuLimit:
        status["exit_code"] = -signal.SIGXCPU


def _billing_recon_run(
    script: str, status_path: str, cap: int, wall: float, memory: int, file_size: int,
    cpu: int,
) -> None:
    """Run `script` under the caps; write the status file even when the script raises."""
    status: dict[str, Any] = {"exit_code": 1, "timed_out": False}
    os.makedirs("out", exist_ok=True)
    if _address_space() + _HEADROOM < memory:  # else the kernel itself could not go on
        _limit(resource.RLIMIT_AS, memory)
    _limit(resource.RLIMIT_FSIZE, file_size)
    saved = sys.stdout, sys.stderr
    capped = _Capped(saved[0], cap), _Capped(saved[1], cap)
    sys.stdout, sys.stderr = capped
    previous = signal.signal(signal.SIGALRM, _alarm), signal.signal(signal.SIGXCPU, _xcpu)
    cpu_before = _cpu_limit(cpu)
    signal.setitimer(signal.ITIMER_REAL, wall)
    try:
        _execute(script, status)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)  # SIGXCPU recurs each second past the limit
        _limit_cpu_back(cpu_before)
        signal.signal(signal.SIGALRM, previous[0])
        signal.signal(signal.SIGXCPU, previous[1])
        for stream in capped:
            stream.flush()
        sys.stdout, sys.stderr = saved
        status["stdout_truncated"], status["stderr_truncated"] = (c.truncated for c in capped)
        status["files"] = _out_files(status_path)
        with open(status_path, "w", encoding="utf-8") as fh:
            json.dump(status, fh)
