"""What a run leaves behind, read back safely: capped output, the error report, out/ files.

Shared by every backend that runs code on this host. Everything here treats the run's directory
as hostile: no symlink is followed, no file is read past its cap, and removal survives
directories the code locked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from billing_recon.sandbox.port import OUTPUT_DIR, ExecutionError, SandboxLimits, SandboxResult

_SIGNAL_HINTS = {
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "file size limit exceeded",
    signal.SIGKILL: "killed (SIGKILL), for example by the kernel when memory ran out",
    signal.SIGSEGV: "segmentation fault",
}
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDir:
    """Paths of one run: `work` is the code's cwd; `run` holds our files; `tmp` is TMPDIR."""

    root: Path

    @property
    def work(self) -> Path:
        """The code's working directory: the input files, and out/ for files to return."""
        return self.root / "work"

    @property
    def run(self) -> Path:
        """Our side of the run: the script and the error report."""
        return self.root / "run"

    @property
    def tmp(self) -> Path:
        """TMPDIR of the code (backends with a private /tmp leave it empty)."""
        return self.root / "tmp"

    @property
    def script(self) -> Path:
        """The user's code."""
        return self.run / "main.py"

    @property
    def error(self) -> Path:
        """Where the bootstrap reports an uncaught exception."""
        return self.run / "error.json"


def prepare(run_dir: RunDir, code: str, files: Mapping[str, bytes]) -> None:
    """Create the run's directories, the script and the input files (names already checked)."""
    for directory in (run_dir.work / OUTPUT_DIR, run_dir.run, run_dir.tmp):
        directory.mkdir(parents=True)
    run_dir.script.write_text(code, encoding="utf-8")
    for name, data in files.items():
        (run_dir.work / name).write_bytes(data)


class Capture:
    """Keeps the first `cap` bytes of a stream and counts (but drops) the rest."""

    def __init__(self, cap: int) -> None:
        self.cap, self.data, self.truncated = cap, bytearray(), False

    def feed(self, chunk: bytes) -> None:
        """Keep what still fits under the cap; note that something was dropped."""
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
        self.data += chunk[: max(room, 0)]

    def text(self) -> str:
        """The kept bytes as text."""
        # A cut may split a multi-byte character; replace it rather than fail.
        return self.data.decode("utf-8", errors="replace")


def read_bounded(path: Path, cap: int) -> bytes | None:
    """Up to cap+1 bytes of a regular file, never following a symlink the code planted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None  # a FIFO or device planted by the code would block or never end
        # read(n) allocates n bytes up front: never ask for more than the file holds.
        return fh.read(min(info.st_size, cap) + 1)


def read_error(path: Path, cap: int) -> ExecutionError | None:
    """The bootstrap's error report, if it wrote a readable one."""
    raw = read_bounded(path, cap)
    if raw is None or len(raw) > cap:
        return None
    try:
        return ExecutionError.model_validate(json.loads(raw))
    except ValueError:  # includes pydantic's ValidationError and JSONDecodeError
        _log.warning("sandbox error report at %s is unreadable", path)
        return None


def signal_error(exit_code: int) -> ExecutionError | None:
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


def collect_files(out: Path, budget: int) -> tuple[dict[str, bytes], bool]:
    """Files the code wrote to out/, in path order, up to `budget` bytes in total."""
    if out.is_symlink() or not out.is_dir():
        return {}, False
    files: dict[str, bytes] = {}
    truncated = False
    for path in sorted(_regular_files(out)):
        data = read_bounded(path, budget)
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


def remove_tree(root: Path) -> None:
    """Delete a run's directory; a leftover is logged, not raised (the result is still good)."""
    try:
        shutil.rmtree(root)
    except FileNotFoundError:
        return
    except OSError:
        with contextlib.suppress(OSError):
            _unlock_dirs(root)
        shutil.rmtree(root, ignore_errors=True)
    if root.exists():
        _log.warning("could not remove sandbox directory %s", root)


def build_result(
    run_dir: RunDir,
    limits: SandboxLimits,
    streams: tuple[Capture, Capture],
    exit_code: int | None,
    duration: float,
    isolation: str,
) -> SandboxResult:
    """The SandboxResult of a finished run; `exit_code` None means it was killed on timeout."""
    error = read_error(run_dir.error, limits.max_output_bytes)
    if error is None and exit_code is not None:
        error = signal_error(exit_code)
    files, files_truncated = collect_files(run_dir.work / OUTPUT_DIR, limits.max_files_bytes)
    out, err = streams
    return SandboxResult(
        stdout=out.text(),
        stderr=err.text(),
        error=error,
        timed_out=exit_code is None,
        exit_code=exit_code,
        duration_s=duration,
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        files=files,
        files_truncated=files_truncated,
        isolation=isolation,
    )
