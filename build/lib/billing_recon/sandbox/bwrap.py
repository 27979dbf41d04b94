"""The bubblewrap jail: the command line that isolates a sandbox process, and its start-up probe.

Inside the jail the code has its own user, pid, network, ipc, uts and cgroup namespaces, no
capabilities, an environment built from nothing, read-only binds of /usr and of the Python
installation only, a private size-capped /tmp and /dev/shm, and one read-write directory
(`SANDBOX_DIR`, the job's files). It runs as an unprivileged uid: when we are root, bwrap itself
is started as `uid` (default 65534, "nobody"), because bwrap run by root maps the sandbox onto
host root, for whom RLIMIT_NPROC is not enforced and every root-owned file is the owner's.

The Python installation may live where that uid cannot go (pyenv under /root, mode 0700), and
bwrap resolves bind sources with the caller's permissions. So as root we stage: a first bwrap,
run as root, only builds a private mount namespace where each needed path is bound at a neutral
place (`/stage/N`); `setpriv` then drops to the unprivileged uid and the real jail binds the
staged paths back at their original locations. One consequence: the root-run stage keeps no
capability, so its --die-with-parent signal cannot reach the jail (another uid); the warm
worker therefore also watches its socket and ends everything when the host goes away.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import site
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ISOLATION = "bwrap"
SANDBOX_DIR = "/sandbox"
"""Where the job's read-write directory appears inside the jail."""
HELPERS_DIR = "/opt/billing-recon"
"""Where our own in-jail scripts (`_warm_worker.py`, `_bootstrap.py`) appear, read-only."""
HELPERS = ("_warm_worker.py", "_bootstrap.py")
NOBODY = 65534
_STAGE = "/stage"
_HERE = Path(__file__).parent
_PROBE_TIMEOUT_S = 30.0
_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_log = logging.getLogger(__name__)


def _top_level_links() -> list[tuple[str, str | None]]:
    """(/bin, /lib, ...): a symlink target to recreate, or None to bind the directory itself."""
    out: list[tuple[str, str | None]] = []
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(name):
            out.append((name, os.readlink(name)))
        elif os.path.isdir(name):
            out.append((name, None))
    return out


def _module_root(name: str) -> str | None:
    """The sys.path entry that provides top-level module `name` (without importing it)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return str(Path(spec.origin).parent.parent)


def _covered(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def python_paths(extra_modules: Sequence[str] = ("numpy", "pandas")) -> list[str]:
    """Host directories the running interpreter needs: prefixes, site-packages, `extra_modules`.

    Derived from this interpreter (a venv and its base), never hard-coded; /usr is always bound
    and not repeated. Symlinked paths appear both as given and resolved.
    """
    wanted = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    wanted += site.getsitepackages()
    wanted += [root for name in extra_modules if (root := _module_root(name))]
    found = {p for path in wanted if os.path.isdir(path) for p in (path, os.path.realpath(path))}
    kept: list[str] = []
    for path in sorted(found, key=len):  # parents first, so children are dropped as covered
        if not _covered(path, ["/usr", *kept]):
            kept.append(path)
    return sorted(kept)


@dataclass(frozen=True)
class Jail:
    """How to start a command inside bubblewrap (see module doc)."""

    bwrap: str
    python: str
    readonly: tuple[str, ...]
    uid: int
    tmpfs_bytes: int = 64 * 1024 * 1024

    @classmethod
    def for_this_python(cls, bwrap: str = "bwrap", uid: int = NOBODY,
                        tmpfs_bytes: int = 64 * 1024 * 1024) -> Jail:
        """A jail running this interpreter; `uid` is used only when we are root."""
        found = shutil.which(bwrap) or bwrap
        run_as = uid if os.geteuid() == 0 else os.geteuid()
        return cls(bwrap=found, python=sys.executable, readonly=tuple(python_paths()),
                   uid=run_as, tmpfs_bytes=tmpfs_bytes)

    @property
    def staged(self) -> bool:
        """True when a root-run bwrap must first stage the binds for the unprivileged one."""
        return os.geteuid() == 0

    def argv(self, work_dir: Path | None, command: Sequence[str]) -> list[str]:
        """The full command line: `command` in the jail, `work_dir` read-write at SANDBOX_DIR."""
        readonly = [*self.readonly, *(str(_HERE / name) for name in HELPERS)]
        if not self.staged:
            work = [] if work_dir is None else ["--bind", str(work_dir), SANDBOX_DIR]
            return self._inner(readonly, work, command)
        staged = [f"{_STAGE}/{i}" for i in range(len(readonly))]
        stage_work = [] if work_dir is None else ["--bind", str(work_dir), f"{_STAGE}/w"]
        outer = self._outer([*zip(readonly, staged, strict=True)], stage_work)
        work = [] if work_dir is None else ["--bind", f"{_STAGE}/w", SANDBOX_DIR]
        return outer + self._inner(staged, work, command)

    def _inner(self, readonly: Sequence[str], work: Sequence[str], command: Sequence[str]
               ) -> list[str]:
        """The jail proper; `readonly` holds the sources of python paths, then of HELPERS."""
        argv = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session",
                "--cap-drop", "ALL", "--clearenv", "--as-pid-1"]
        for name, value in _env().items():
            argv += ["--setenv", name, value]
        argv += _system_binds()
        # /dev is remounted read-only below; only its size-capped /dev/shm stays writable.
        argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(self.tmpfs_bytes),
                 "--tmpfs", "/dev/shm", "--mqueue", "/dev/mqueue", "--remount-ro", "/dev",
                 "--size", str(self.tmpfs_bytes), "--tmpfs", "/tmp"]
        dests = [*self.readonly, *(f"{HELPERS_DIR}/{name}" for name in HELPERS)]
        for source, dest in zip(readonly, dests, strict=True):
            argv += ["--ro-bind", source, dest]
        argv += [*work, "--remount-ro", "/", "--chdir", "/", "--"]
        return argv + list(command)

    def _outer(self, readonly: Sequence[tuple[str, str]], work: Sequence[str]) -> list[str]:
        """The root-run stage: a private mount namespace with each (source, staged) bound."""
        argv = [self.bwrap, "--die-with-parent", *_system_binds(),
                # The jail mounts its own /proc; the kernel allows that only where a fully
                # visible procfs exists, so bind the host's (a fresh one gets read-only masks).
                "--bind", "/proc", "/proc", "--dev", "/dev",
                "--perms", "1777", "--tmpfs", "/tmp", "--perms", "0755", "--dir", _STAGE]
        if not _covered(self.bwrap, ["/usr"]):
            argv += ["--ro-bind", self.bwrap, self.bwrap]
        for source, staged in readonly:
            argv += ["--ro-bind", source, staged]
        argv += [*work, "--", "setpriv", f"--reuid={self.uid}", f"--regid={self.uid}",
                 "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--"]
        return argv


def _env() -> dict[str, str]:
    """The jail's whole environment: nothing of ours (secrets!) is inherited."""
    env = {"PATH": "/usr/bin:/bin", "HOME": f"{SANDBOX_DIR}/work", "TMPDIR": "/tmp",
           "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    # One BLAS/OpenMP thread: threads multiply address space and would trip RLIMIT_AS.
    return env | dict.fromkeys(_THREAD_VARS, "1")


def _system_binds() -> list[str]:
    argv = ["--ro-bind", "/usr", "/usr"]
    for name, target in _top_level_links():
        argv += ["--symlink", target, name] if target else ["--ro-bind", name, name]
    return argv


def probe(jail: Jail) -> str | None:
    """None when the jail starts a Python here, else why not (user namespaces blocked, ...)."""
    return _probe_cached(jail)


@functools.cache
def _probe_cached(jail: Jail) -> str | None:
    check = "import os, sys; sys.exit(0 if os.getpid() == 1 and os.getuid() != 0 else 3)"
    try:
        proc = subprocess.run(
            jail.argv(None, [jail.python, "-I", "-c", check]), stdin=subprocess.DEVNULL,
            capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run {jail.bwrap}: {exc}"
    if proc.returncode == 0:
        return None
    detail = proc.stderr.decode(errors="replace").strip()[-500:]
    return f"{jail.bwrap} exited with {proc.returncode}: {detail or 'no message'}"
