"""In-jail warm worker: imports pandas once, then runs every job in a fresh fork of itself.

Run by the pool as `python -I -B -X utf8 _warm_worker.py FD` inside bubblewrap with
`--as-pid-1`. FD is an AF_UNIX SOCK_SEQPACKET socket to the host:

    worker -> host  {"ready": true}
    host -> worker  {"script", "error", "cwd", "limits": [[resource, soft, hard], ...],
                     "timeout": seconds} with two file descriptors: the job's stdout and stderr
    worker -> host  {"exit_code": int | null (timed out), "recycle": bool}

Isolation between jobs: each job is a child forked from this clean parent (no variable or
module of an earlier job exists here), and after each job every other process of the pid
namespace is SIGKILLed and the shared writable places (/tmp, /dev/shm, /dev/mqueue) are
emptied; the host empties the job directory. The child is forked ahead of its job, right after
that clean-up (and after the answer to the host), and waits on a socket of its own for the job
message and its two descriptors: fork and the job-independent set-up are off the job's path.
While it waits it runs pandas once on a made-up table (trusted code, no job's data), so the
copy-on-write faults a typical script's first steps take are taken before the job arrives.
If System V IPC objects survive, the worker asks to be recycled. This process is
non-dumpable, so a job (same uid) can neither ptrace it nor read its memory, and as pid 1 it
ignores every signal a job can send it.

Only the standard library may be imported at module level: this file runs before, and beside,
untrusted code.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import importlib.util
import json
import os
import resource
import select
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

WARM_MODULES = ("csv", "datetime", "decimal", "json", "numpy", "pandas")
SCRUBBED_DIRS = ("/tmp", "/dev/shm", "/dev/mqueue")
_SYSVIPC = ("/proc/sysvipc/msg", "/proc/sysvipc/sem", "/proc/sysvipc/shm")
_PR_SET_DUMPABLE = 4
_PR_SET_THP_DISABLE = 41
_MAX_MESSAGE = 64 * 1024
_EXIT_INTERNAL = 70  # EX_SOFTWARE: the worker itself failed inside the child


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


def _harden() -> None:
    """Protect the warm parent from the jobs it forks (they run as the same uid)."""
    _prctl(_PR_SET_DUMPABLE, 0)  # no ptrace, no /proc/1/mem, no /proc/1/fd for jobs
    # numpy asks for huge pages; after fork() every write to one copies 2 MiB.
    _prctl(_PR_SET_THP_DISABLE, 1)
    # pid 1 only receives signals it handles; Python's SIGINT handler would let a job in.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _exercise(full: bool = True) -> None:
    """Run what reconciliation scripts typically run, on a tiny made-up table."""
    pandas: Any = sys.modules.get("pandas")
    if pandas is not None:
        import io
        from decimal import Decimal

        frame = pandas.read_csv(io.StringIO("a,b,c\nx,1.50,2026-03-01\n"), dtype=str,
                                keep_default_na=False)
        records = frame.to_dict("records")
        json.dumps([str(Decimal(row["b"]).quantize(Decimal("0.01"))) for row in records])
        if full:
            pandas.to_datetime(frame["c"])
            frame.groupby("a").size()
            frame.to_csv(io.StringIO())


def _warm_up() -> None:
    """Import what reconciliation scripts use, and run pandas once so lazy imports happen."""
    for name in WARM_MODULES:
        with contextlib.suppress(ImportError):
            __import__(name)
    _exercise()
    # Objects that exist now are never collected: the GC then does not touch (and copy) the
    # parent's pages in every child.
    gc.collect()
    gc.freeze()


def _load_bootstrap() -> ModuleType:
    path = Path(__file__).with_name("_bootstrap.py")
    spec = importlib.util.spec_from_file_location("_billing_recon_bootstrap", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=16)
def _compiled(source: str, filename: str) -> CodeType | None:
    """The script compiled once here, so children skip it; None lets the child report errors.

    Compiling runs none of the script's code. A hostile source can at worst make this worker
    slow or crash, and the host then kills and replaces the worker.
    """
    try:
        return compile(source, filename, "exec", dont_inherit=True)
    except Exception:
        return None


def _precompile(script: str) -> CodeType | None:
    """The script's code from the cache (compiled now if it is new), None if unreadable."""
    source = _source(script)
    return None if source is None else _compiled(source, script)


def _source(script: str) -> str | None:
    try:
        with open(script, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, ValueError):
        return None


def _exit_code(code: object) -> int:
    """The process exit status the interpreter would give for SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _join_threads() -> None:
    """Wait for the script's non-daemon threads, as interpreter shutdown would."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()


def _child(waiting: socket.socket, control: int, bootstrap: ModuleType, exercise: bool) -> None:
    """In the pre-forked child: set up, wait for the job, become it; never returns.

    Forked from the clean parent after the previous job's processes were killed and the shared
    places scrubbed; until its job arrives it runs none of the job's code and holds nothing but
    its end of `waiting` (the parent's socket to the host is closed first).
    """
    code = _EXIT_INTERNAL
    try:
        os.close(control)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if exercise:
            _exercise(full=False)  # a typical job's first copy-on-write faults, taken while idle
        message, fds, _flags, _addr = socket.recv_fds(waiting, _MAX_MESSAGE, 2)
        waiting.close()
        if not message:
            os._exit(0)  # the worker is going away; no job for this child
        job = json.loads(message)
        for target, fd in ((1, fds[0]), (2, fds[1])):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(job["cwd"])
        _prctl(_PR_SET_DUMPABLE, 1)  # the job's own /proc/self files must stay readable
        for res, soft, hard in job["limits"]:
            resource.setrlimit(res, (soft, hard))
        compiled = _precompile(job["script"])  # the parent's cache: scripts it saw before
        try:
            code = bootstrap.run(job["script"], job["error"], compiled)
        except SystemExit as exc:
            code = _exit_code(exc.code)
        _join_threads()
    except BaseException:
        traceback.print_exc()  # our own failure, not the script's: show it in its stderr
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


class _Waiting:
    """The next job's process, forked ahead of the job and blocked until it is handed over."""

    def __init__(self, control: socket.socket, bootstrap: ModuleType, exercise: bool) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing of ours may be written twice by the child
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            _child(theirs, control.fileno(), bootstrap, exercise)
        theirs.close()
        self.pid, self._socket = pid, ours

    def hand_over(self, message: bytes, fds: list[int]) -> None:
        """Give the child its job and the job's stdout and stderr (closed here)."""
        try:  # a child that died waiting (OOM) is reported by _wait as its exit status
            with contextlib.suppress(OSError):
                socket.send_fds(self._socket, [message], fds)
        finally:
            self._socket.close()
            for fd in fds:
                os.close(fd)


def _host_gone(control: socket.socket) -> bool:
    """True when the host's end of the socket is closed (the host exited or was killed)."""
    try:
        return control.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False


def _wait(pid: int, timeout: float, control: socket.socket) -> int | None:
    """The child's exit code (negative: killed by that signal), or None after `timeout`.

    If the host goes away meanwhile, the job and the worker end at once: bubblewrap's
    --die-with-parent cannot reach us through the root-run staging bwrap, whose monitor has
    no capability left to signal another uid.
    """
    deadline = time.monotonic() + timeout
    pidfd = os.pidfd_open(pid)
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([pidfd, control.fileno()], [], [], remaining)
            if pidfd in ready:
                _, status = os.waitpid(pid, 0)
                return os.waitstatus_to_exitcode(status)
            if control.fileno() in ready and _host_gone(control):
                _kill_all()
                os._exit(0)
    finally:
        os.close(pidfd)
    return None


def _kill_all() -> None:
    """SIGKILL and reap every other process of this pid namespace (we are its pid 1)."""
    while True:
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)  # everyone but ourselves, in our namespace only
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _tree(top: str) -> set[str]:
    """Every path below `top` on top's own filesystem (mount points and what leads to them)."""
    found: set[str] = set()
    for dirpath, dirs, names in os.walk(top):
        found.update(os.path.join(dirpath, name) for name in (*dirs, *names))
        dirs[:] = [d for d in dirs if not os.path.ismount(os.path.join(dirpath, d))]
    return found


def _empty(top: str) -> None:
    """Delete what jobs left below `top`; bind mounts and their parent directories stay."""
    for entry in os.scandir(top):
        if not entry.is_dir(follow_symlinks=False):
            os.unlink(entry.path)
        elif not os.path.ismount(entry.path):
            os.chmod(entry.path, 0o700)  # the job may have locked it
            _empty(entry.path)
            with contextlib.suppress(OSError):  # not empty: it leads to a mount point
                os.rmdir(entry.path)


class _Scrubber:
    """Returns the writable places jobs share to how the jail started them."""

    def __init__(self) -> None:
        self.baseline = {top: (os.stat(top).st_mode, _tree(top)) for top in SCRUBBED_DIRS}

    def scrub(self) -> bool:
        """Empty the shared places; False if anything is left that was not there at start."""
        clean = True
        for top, (mode, tree) in self.baseline.items():
            try:
                os.chmod(top, mode)
                _empty(top)
                clean = clean and _tree(top) == tree
            except OSError:
                clean = False
        for table in _SYSVIPC:
            with contextlib.suppress(OSError), open(table, encoding="ascii") as fh:
                clean = clean and len(fh.readlines()) <= 1  # a header line, then one per object
        return clean


def _run_job(job: dict[str, Any], message: bytes, fds: list[int], child: _Waiting,
             control: socket.socket, scrubber: _Scrubber) -> dict[str, Any]:
    child.hand_over(message, fds)
    exit_code = _wait(child.pid, float(job["timeout"]), control)
    _kill_all()
    return {"exit_code": exit_code, "recycle": not scrubber.scrub()}


def serve(control: socket.socket) -> None:
    """Answer jobs until the host closes the socket.

    The next job's child is forked as soon as the previous job's processes are gone and the
    shared places are scrubbed, after the answer: fork and the child's set-up happen while the
    host reads the results and prepares the next job, not while it waits.
    """
    bootstrap, scrubber = _load_bootstrap(), _Scrubber()
    # The first job often follows the start at once (a cold run): no exercise in its way.
    child = _Waiting(control, bootstrap, exercise=False)
    control.send(json.dumps({"ready": True}).encode())
    while True:
        message, fds, _flags, _addr = socket.recv_fds(control, _MAX_MESSAGE, 2)
        if not message:
            return
        job = json.loads(message)
        source = _source(job["script"])  # read before the job can change it
        reply = _run_job(job, message, fds, child, control, scrubber)
        control.send(json.dumps(reply).encode())
        if source is not None:
            _compiled(source, job["script"])  # the next children inherit the compiled script
        child = _Waiting(control, bootstrap, exercise=True)


def main(argv: list[str]) -> int:
    """Entry point; refuses to run unless it is pid 1 of its own namespace; exits on EOF."""
    if os.getpid() != 1:
        # _kill_all's kill(-1) outside a pid namespace would hit every process of the uid.
        print("_warm_worker.py must run as pid 1 of a private pid namespace", file=sys.stderr)
        return 2
    _harden()
    _warm_up()
    with socket.socket(fileno=int(argv[1])) as control:
        serve(control)
    os._exit(0)  # the host closed the socket: leave now, without tearing pandas down


if __name__ == "__main__":
    sys.exit(main(sys.argv))
