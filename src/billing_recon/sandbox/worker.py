"""One warm worker as the host sees it: started in the jail, handed one job at a time, killed.

The worker (`_warm_worker.py`) enforces the wall clock and kills the job's processes itself;
the host keeps a backstop: no answer `_BACKSTOP_S` after the deadline and the whole jail is
killed. Output travels through two pipes made per job and handed over with SCM_RIGHTS, so the
host reads it directly, capped, while the job runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from billing_recon.errors import SandboxUnavailable
from billing_recon.sandbox.bwrap import HELPERS_DIR, ISOLATION, SANDBOX_DIR, Jail
from billing_recon.sandbox.collect import Capture, RunDir, build_result, remove_tree
from billing_recon.sandbox.port import SandboxLimits, SandboxResult
from billing_recon.sandbox.slot import Slot
from billing_recon.sandbox.subprocess_sandbox import rlimits

_READ_CHUNK = 64 * 1024
_MAX_MESSAGE = 64 * 1024
_BACKSTOP_S = 5.0  # the worker answers right after its own deadline; this is for a stuck one
_DRAIN_GRACE_S = 0.5
_LOG_TAIL = 2000
_STOP_GRACE_S = 2.0
_INSIDE = RunDir(Path(SANDBOX_DIR))


class _JobPump:
    """Reads the job's stdout and stderr (capped) and the worker's answer, all at once."""

    def __init__(self, stdout: int, stderr: int, control: socket.socket, cap: int) -> None:
        self.out, self.err = Capture(cap), Capture(cap)
        self.reply: dict[str, Any] | None = None
        self.lost = False
        self._sel = selectors.DefaultSelector()
        self._pipes = (stdout, stderr)
        self._sel.register(stdout, selectors.EVENT_READ, self.out)
        self._sel.register(stderr, selectors.EVENT_READ, self.err)
        self._sel.register(control, selectors.EVENT_READ, None)

    def until_answer(self, deadline: float) -> None:
        """Pump until the worker answers, goes away, or `deadline` (monotonic) passes."""
        while self.reply is None and not self.lost:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._step(remaining)

    def drain(self, grace: float) -> None:
        """Read the pipes until they close (every writer is dead) or `grace` seconds pass."""
        deadline = time.monotonic() + grace
        while len(self._sel.get_map()) > 1 and (remaining := deadline - time.monotonic()) > 0:
            self._step(remaining)

    def _step(self, timeout: float) -> None:
        for key, _ in self._sel.select(timeout):
            if isinstance(key.fileobj, socket.socket):
                self._answer(key.fileobj)
                continue
            chunk = os.read(key.fd, _READ_CHUNK)
            if chunk:
                key.data.feed(chunk)
            else:
                self._sel.unregister(key.fd)

    def _answer(self, control: socket.socket) -> None:
        message = control.recv(_MAX_MESSAGE)
        self._sel.unregister(control)
        if message:
            self.reply = json.loads(message)
        else:
            self.lost = True

    def __enter__(self) -> _JobPump:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sel.close()
        for fd in self._pipes:
            os.close(fd)


class WarmWorker:
    """A warm worker process in its own jail, with `slot` as its read-write directory."""

    def __init__(self, jail: Jail, slot: Path, startup_timeout_s: float = 60.0) -> None:
        self.jail, self.slot, self.jobs = jail, slot, 0
        # The job's files go to the jail's uid, so the code may write next to its inputs.
        self._dir = Slot(slot, jail.uid if jail.staged else None)
        self.recycle = False
        self._startup_timeout_s = startup_timeout_s
        self._log = slot.with_suffix(".log")
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None

    @property
    def alive(self) -> bool:
        """True while the jail runs."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the jail and wait until pandas is imported; SandboxUnavailable if it fails."""
        host, inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = [self.jail.python, "-I", "-B", "-X", "utf8",
                   f"{HELPERS_DIR}/_warm_worker.py", str(inside.fileno())]
        with inside, open(self._log, "wb") as log:
            try:
                self._proc = subprocess.Popen(
                    self.jail.argv(self.slot, command), pass_fds=(inside.fileno(),),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                    start_new_session=True)  # its own process group, killed as a whole
            except OSError as exc:
                host.close()
                raise SandboxUnavailable(f"cannot start {self.jail.bwrap}: {exc}") from exc
        self._control = host
        self._await_ready()

    def _await_ready(self) -> None:
        assert self._control is not None
        ready, _, _ = select.select([self._control], [], [], self._startup_timeout_s)
        message = self._control.recv(_MAX_MESSAGE) if ready else b""
        if message and json.loads(message).get("ready"):
            return
        self.kill()
        tail = self._log.read_bytes()[-_LOG_TAIL:].decode(errors="replace").strip()
        raise SandboxUnavailable(f"sandbox worker did not start: {tail or 'no message'}")

    def run(self, code: str, files: Mapping[str, bytes], limits: SandboxLimits) -> SandboxResult:
        """Run one job (file names already checked); the code's failures are in the result."""
        try:
            self._dir.prepare(code, files)
        except OSError as exc:
            raise SandboxUnavailable(f"cannot prepare sandbox directory: {exc}") from exc
        try:
            return self._execute(self._dir.run_dir, limits)
        finally:
            self.jobs += 1
            if self.alive:  # every process of the job is gone: the worker answered
                self._dir.clear()

    def _execute(self, run_dir: RunDir, limits: SandboxLimits) -> SandboxResult:
        assert self._control is not None
        start = time.monotonic()
        job = {"script": str(_INSIDE.script), "error": str(_INSIDE.error),
               "cwd": str(_INSIDE.work), "timeout": limits.wall_timeout_s,
               "limits": [[res, *pair] for res, pair in rlimits(limits)]}
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        with _JobPump(out_r, err_r, self._control, limits.max_output_bytes) as pump:
            try:
                socket.send_fds(self._control, [json.dumps(job).encode()], [out_w, err_w])
            except OSError:
                pump.lost = True  # the worker is gone; the pool replaces it
            finally:
                os.close(out_w)
                os.close(err_w)
            pump.until_answer(start + limits.wall_timeout_s + _BACKSTOP_S)
            if pump.reply is None:
                self.kill()  # stuck or gone: the whole jail goes, and its writers with it
            pump.drain(_DRAIN_GRACE_S)
        exit_code = self._exit_code(pump)
        return build_result(run_dir, limits, (pump.out, pump.err), exit_code,
                            time.monotonic() - start, ISOLATION)

    def _exit_code(self, pump: _JobPump) -> int | None:
        if pump.reply is not None:
            self.recycle = bool(pump.reply.get("recycle"))
            code = pump.reply.get("exit_code")
            return None if code is None else int(code)
        # The worker died under the job (the kernel's OOM killer, say): report it as a kill.
        return -signal.SIGKILL if pump.lost else None

    def kill(self) -> None:
        """SIGKILL the jail (bwrap's --die-with-parent takes everything inside with it)."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()

    def dispose(self) -> None:
        """Stop the jail and remove its directory and socket; the worker cannot be used again.

        Closing the socket makes the worker exit, so every process of the jail is reaped by
        its own parent; SIGKILL is for a worker that does not go within `_STOP_GRACE_S`.
        """
        if self._control is not None:
            self._control.close()
        if self._proc is not None:
            try:
                self._proc.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.kill()
        remove_tree(self.slot)
        with contextlib.suppress(FileNotFoundError):
            self._log.unlink()
