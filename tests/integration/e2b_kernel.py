"""One context of the loopback E2B: a long-lived kernel process and the events of its cells.

What E2B's server (template/server, messaging.py) makes of a kernel's messages, as it streams
them: `number_of_executions` when the cell is accepted (the count grows per kernel), stdout and
stderr chunks while the cell runs (a chunk holds what was written within 0.2 s, as ipykernel
batches its output: often several lines),
`result` and `error` events, `{"type": "keepalive"}` after `keepalive_s` of silence (5 s on the
real server), and for a kernel that dies under a cell an error named `ContextRestarting` with
an empty traceback, after which the kernel is restarted and its count starts again. Timestamps
are ISO-8601 strings. The HTTP layer (e2b_loopback.py) adds `end_of_execution` last.

The kernel runs with an environment built from nothing (a sandbox has none of ours) and no
limits of its own: like E2B's, it has only those the code sets on itself.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CHILD = Path(__file__).with_name("e2b_kernel_child.py")
FLUSH_S = 0.2
RESTARTING = {"type": "error", "name": "ContextRestarting", "value": "Context was restarted",
              "traceback": ""}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _env(home: Path) -> dict[str, str]:
    threads = dict.fromkeys(("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"), "1")
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", **threads}


class Kernel:
    """A kernel process in `home`; one cell at a time, as the server's per-context lock does."""

    def __init__(self, home: Path, keepalive_s: float) -> None:
        self.home, self.keepalive_s = home, keepalive_s
        self.closed = False
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-u", str(CHILD), str(write)], cwd=self.home,
            env=_env(self.home), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, pass_fds=(write,), start_new_session=True)
        os.close(write)
        self.control, self.count = read, 0

    def kill(self) -> None:
        """The sandbox is gone: kill the kernel and anything it started."""
        self.closed = True
        self._kill()
        if self._lock.acquire(timeout=10):  # a running cell sees the kernel die, and ends
            self._close()
            self._lock.release()

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def _close(self) -> None:
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()
        os.close(self.control)

    def execute(self, code: str, *, die: bool = False) -> Iterator[dict[str, Any]]:
        """The cell's events as the server streams them; `die` kills the kernel under it."""
        with self._lock:
            self.count += 1
            yield {"type": "number_of_executions", "execution_count": self.count}
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"code": code, "count": self.count}).encode() + b"\n")
            self.proc.stdin.flush()
            if die:
                self._kill()
            try:
                yield from self._events()
            except GeneratorExit:  # the client went away: the server interrupts the kernel
                self._interrupt()
                raise

    def _events(self) -> Iterator[dict[str, Any]]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        with selectors.DefaultSelector() as selector:
            output = _Output({self.proc.stdout.fileno(): "stdout",
                              self.proc.stderr.fileno(): "stderr"}, selector)
            os.set_blocking(self.control, False)
            selector.register(self.control, selectors.EVENT_READ)
            pending, quiet_since = b"", time.monotonic()
            while True:
                wake = output.flush_at or quiet_since + self.keepalive_s
                ready = selector.select(max(0.0, wake - time.monotonic()))
                if any(key.fd == self.control for key, _ in ready):
                    data = _read(self.control)
                    if data == b"":  # the kernel died under the cell
                        yield from output.flush(drain=True)
                        yield from self._died()
                        return
                    pending += data or b""
                    *lines, pending = pending.split(b"\n")
                    for line in lines:  # written after what the cell printed before it
                        yield from output.flush(drain=True)
                        event = json.loads(line)
                        if event["type"] == "done":
                            return
                        yield _shaped(event)
                for key, _ in ready:
                    if key.fd != self.control:
                        output.read(key.fd)
                if output.due() or (not ready and output.flush_at is None):
                    yield from (output.flush() if output.due() else [{"type": "keepalive"}])
                    quiet_since = time.monotonic()

    def _died(self) -> Iterator[dict[str, Any]]:
        self.proc.wait()
        if self.closed:
            return  # the sandbox was killed: nothing restarts, the stream just ends
        self._close()
        self._start()
        yield RESTARTING

    def _interrupt(self) -> None:
        """SIGINT, as Jupyter's interrupt; a kernel that does not finish within 2 s restarts."""
        if self.closed or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 2
        for _event in self._events():
            if time.monotonic() > deadline:
                self._kill()
                self._close()
                self._start()
                return


def _read(fd: int) -> bytes | None:
    """What the pipe holds now; b"" at its end, None when it is empty."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None


def _shaped(event: dict[str, Any]) -> dict[str, Any]:
    if event["type"] == "error":  # the server joins IPython's list with ""
        return {**event, "traceback": "".join(event["traceback"])}
    return event


class _Output:
    """The kernel's stdout and stderr. What is written within FLUSH_S of a first write goes out
    as one chunk per stream, as ipykernel's OutStream sends it (its flush_interval)."""

    def __init__(self, names: dict[int, str], selector: selectors.BaseSelector) -> None:
        self.names, self.selector = names, selector
        self.decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace") for fd in names}
        self.text = dict.fromkeys(names, "")
        self.flush_at: float | None = None
        for fd in names:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)

    def read(self, fd: int) -> bool:
        """Take what `fd` holds now; False when it held nothing."""
        data = _read(fd)
        if data is None:
            return False
        if not data:
            self.selector.unregister(fd)
        self.text[fd] += self.decoders[fd].decode(data, final=not data)
        if self.flush_at is None and self.text[fd]:
            self.flush_at = time.monotonic() + FLUSH_S
        return bool(data)

    def due(self) -> bool:
        """Whether the oldest unsent write has waited FLUSH_S."""
        return self.flush_at is not None and time.monotonic() >= self.flush_at

    def flush(self, drain: bool = False) -> Iterator[dict[str, Any]]:
        """The chunks to send now; `drain` first takes everything the pipes hold."""
        for fd in self.names if drain else ():
            while fd in self.selector.get_map() and self.read(fd):
                pass
        for fd, name in self.names.items():
            if self.text[fd]:
                yield {"type": name, "text": self.text[fd], "timestamp": _now()}
                self.text[fd] = ""
        self.flush_at = None
