"""The default local backend: a small pool of warm bubblewrap workers, safe to share by threads.

Workers start lazily (the first run pays for one pandas import, later runs only for a fork) and
at most `workers` run at once; more concurrent callers wait for a free one. A worker is retired
(and a fresh one started on demand) when its jail died, it asked to be recycled, or it served
`jobs_per_worker` jobs. `close()`, garbage collection and interpreter exit kill every worker.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from billing_recon.errors import SandboxUnavailable
from billing_recon.sandbox.bwrap import ISOLATION, Jail
from billing_recon.sandbox.collect import remove_tree
from billing_recon.sandbox.port import SandboxLimits, SandboxResult, check_file_name
from billing_recon.sandbox.worker import WarmWorker

_ROOT_PREFIX = "billing-recon-pool-"


@dataclass
class _State:
    """Everything the finalizer needs, kept apart from the pool so the pool can be collected."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    idle: list[WarmWorker] = field(default_factory=list)
    workers: set[WarmWorker] = field(default_factory=set)
    starting: int = 0
    closed: bool = False
    root: Path | None = None
    pid: int = field(default_factory=os.getpid)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True


def _sweep_stale_roots(parent: Path) -> None:
    """Remove pool directories whose process died without cleaning up (SIGKILL, a crash)."""
    for entry in parent.glob(f"{_ROOT_PREFIX}*-*"):
        pid = entry.name.removeprefix(_ROOT_PREFIX).split("-", 1)[0]
        with contextlib.suppress(OSError):
            mine = entry.is_dir() and entry.stat().st_uid == os.geteuid()
            if mine and pid.isdigit() and not _process_exists(int(pid)):
                remove_tree(entry)


def _shutdown(state: _State) -> None:
    """Kill every worker and remove the pool's directory (idempotent)."""
    if state.pid != os.getpid():
        return  # a forked child: the workers belong to the parent, which keeps using them
    with state.cond:
        state.closed = True
        idle, busy = list(state.idle), state.workers - set(state.idle)
        state.idle.clear()
        state.workers -= set(idle)
        state.cond.notify_all()
    for worker in idle:
        worker.dispose()
    for worker in busy:
        worker.kill()  # its run() returns a failed result and disposes of it
    if state.root is not None and not busy:
        remove_tree(state.root)


class WarmPool:
    """Sandbox backend running each job in a fork of a warm worker inside bubblewrap."""

    name = "bwrap"
    isolation = ISOLATION

    def __init__(
        self,
        jail: Jail,
        *,
        workers: int = 2,
        limits: SandboxLimits | None = None,
        jobs_per_worker: int = 0,
        tmp_root: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 60.0,
    ) -> None:
        """`jobs_per_worker` 0 means a worker is never retired for age alone."""
        if workers < 1:
            raise ValueError("a sandbox pool needs at least one worker")
        self.jail, self.size, self.limits = jail, workers, limits or SandboxLimits()
        self.jobs_per_worker = jobs_per_worker
        self._tmp_root, self._startup_timeout_s = tmp_root, startup_timeout_s
        self._state = _State()
        self._finalizer = weakref.finalize(self, _shutdown, self._state)

    def run(
        self, code: str, files: Mapping[str, bytes], *, limits: SandboxLimits | None = None
    ) -> SandboxResult:
        """Run `code` with `files` in its cwd; failures of the code are data in the result."""
        inputs = {check_file_name(name): data for name, data in files.items()}
        if self._state.pid != os.getpid():  # forked: start workers of our own
            self._state = _State()
            self._finalizer = weakref.finalize(self, _shutdown, self._state)
        worker = self._acquire()
        reusable = False
        try:
            result = worker.run(code, inputs, limits or self.limits)
            reusable = self._reusable(worker)
            return result
        finally:
            self._release(worker, reusable)

    def close(self) -> None:
        """Kill every worker; idempotent. Runs also at garbage collection and interpreter exit."""
        self._finalizer()

    def worker_count(self) -> int:
        """Workers currently alive (idle or busy)."""
        with self._state.cond:
            return len(self._state.workers)

    def _reusable(self, worker: WarmWorker) -> bool:
        worn = self.jobs_per_worker > 0 and worker.jobs >= self.jobs_per_worker
        return worker.alive and not worker.recycle and not worn

    def _acquire(self) -> WarmWorker:
        """An idle live worker, else a new one once fewer than `size` exist; waits if needed."""
        state, dead = self._state, list[WarmWorker]()
        try:
            with state.cond:
                while True:
                    if state.closed:
                        raise SandboxUnavailable("the sandbox pool is closed")
                    if (worker := self._live_idle_worker(dead)) is not None:
                        return worker
                    if len(state.workers) + state.starting < self.size:
                        state.starting += 1
                        break
                    state.cond.wait()
        finally:
            for worker in dead:  # its jail died while idle (killed from outside, say)
                worker.dispose()
        return self._start_worker()

    def _live_idle_worker(self, dead: list[WarmWorker]) -> WarmWorker | None:
        """Pop idle workers until a live one; dead ones go to `dead`. Call with the lock held."""
        state = self._state
        while state.idle:
            worker = state.idle.pop()
            if worker.alive:
                return worker
            state.workers.discard(worker)
            dead.append(worker)
        return None

    def _start_worker(self) -> WarmWorker:
        """Start one worker outside the lock (it takes a pandas import); count it in or out."""
        state = self._state
        worker: WarmWorker | None = None
        try:
            worker = WarmWorker(self.jail, self._new_slot(), self._startup_timeout_s)
            worker.start()
        except BaseException:
            if worker is not None:
                worker.dispose()
            with state.cond:
                state.starting -= 1
                state.cond.notify()
            raise
        with state.cond:
            state.starting -= 1
            state.workers.add(worker)
        return worker

    def _new_slot(self) -> Path:
        state = self._state
        with state.cond:
            if state.root is None:
                parent = Path(self._tmp_root or tempfile.gettempdir())
                _sweep_stale_roots(parent)
                state.root = Path(tempfile.mkdtemp(prefix=f"{_ROOT_PREFIX}{os.getpid()}-",
                                                   dir=parent))
            root = state.root
        slot = Path(tempfile.mkdtemp(prefix="worker-", dir=root))
        if self.jail.staged:
            os.chown(slot, self.jail.uid, self.jail.uid)
        return slot

    def _release(self, worker: WarmWorker, reusable: bool) -> None:
        state = self._state
        with state.cond:
            keep = reusable and not state.closed
            if keep:
                state.idle.append(worker)
            else:
                state.workers.discard(worker)
            remove_root = state.closed and not state.workers and state.root is not None
            state.cond.notify()
        if not keep:
            worker.dispose()
        if remove_root and state.root is not None:
            remove_tree(state.root)
