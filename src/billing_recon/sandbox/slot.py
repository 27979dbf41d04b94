"""A warm worker's job directory, kept between jobs: the skeleton stays, what a job left goes.

The directory is bound read-write into the jail at SANDBOX_DIR. Its skeleton (work/, work/out/,
run/, tmp/) is built once and kept while no job changes it; after each job (when none of its
processes is left) everything else in the directory and inside the skeleton is deleted, and
the skeleton is checked: each directory must still be a real directory with the owner, mode
and (no) extended attributes it was built with. Anything else (a directory renamed, replaced
by a symlink, chmod-ed, setgid, given an ACL) and the whole directory is emptied and built
again, as for the first job. So nothing a job leaves (files it made unreadable or undeletable,
symlinks, hard links, FIFOs) is there for the next one; only the skeleton directories'
timestamps carry over.

Input files are created with O_EXCL | O_NOFOLLOW in the emptied skeleton, and only they (not a
walk of the tree) are handed to the jail's uid when the jail is staged.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from billing_recon.sandbox.collect import RunDir, remove_tree
from billing_recon.sandbox.port import OUTPUT_DIR

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _delete(path: str, is_dir: bool) -> None:
    if is_dir:
        remove_tree(Path(path))
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _empty(directory: Path, keep: frozenset[str] = frozenset()) -> None:
    """Remove everything inside `directory` but the entries named in `keep`."""
    for entry in os.scandir(directory):
        if entry.name not in keep:
            _delete(entry.path, entry.is_dir(follow_symlinks=False))


class Slot:
    """The job directory at `root`; `uid` owns what the job gets (None: leave it ours)."""

    def __init__(self, root: Path, uid: int | None) -> None:
        self.root, self.run_dir, self._uid = root, RunDir(root), uid
        self._skeleton = (self.run_dir.work, self.run_dir.work / OUTPUT_DIR, self.run_dir.run,
                          self.run_dir.tmp)
        self._built: dict[Path, tuple[int, int, int]] = {}
        self._ready = False  # the skeleton is intact and empty

    def prepare(self, code: str, files: Mapping[str, bytes]) -> None:
        """The script and the input files in an empty skeleton (names already checked)."""
        if not self._ready:
            self._rebuild()
        self._ready = False
        self._write(self.run_dir.script, code.encode("utf-8"))
        for name, data in files.items():
            self._write(self.run_dir.work / name, data)

    def clear(self) -> None:
        """Delete what the job left (call only when no process of it is left)."""
        self._ready = False
        try:
            if not self._intact():
                self._rebuild()
            else:
                work, out, run, tmp = self._skeleton
                _empty(self.root, keep=frozenset(path.name for path in (work, run, tmp)))
                _empty(work, keep=frozenset({OUTPUT_DIR}))
                for directory in (out, run, tmp):
                    _empty(directory)
            self._ready = self._intact()
        except OSError:
            pass  # prepare() builds it again, or reports why it cannot

    def _write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, _CREATE, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self._uid is not None:
                os.fchown(fd, self._uid, self._uid)
        finally:
            os.close(fd)

    def _state(self, path: Path) -> tuple[int, int, int] | None:
        """(mode, uid, gid) of a real directory without extended attributes, else None."""
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or os.listxattr(path, follow_symlinks=False):
            return None
        return info.st_mode, info.st_uid, info.st_gid

    def _intact(self) -> bool:
        try:
            return self._root_intact() and all(
                self._state(path) == self._built.get(path) for path in self._skeleton)
        except OSError:
            return False

    def _root_intact(self) -> bool:
        info = os.lstat(self.root)
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(self.root, 0o700)  # the job may have locked its own directory
        for name in os.listxattr(self.root, follow_symlinks=False):
            os.removexattr(self.root, name, follow_symlinks=False)
        return True

    def _rebuild(self) -> None:
        """Empty the whole directory (a bind mount point: it stays itself) and build anew."""
        os.chmod(self.root, 0o700)
        for name in os.listxattr(self.root, follow_symlinks=False):
            os.removexattr(self.root, name, follow_symlinks=False)
        _empty(self.root)
        for path in self._skeleton:
            path.mkdir()
            if self._uid is not None:
                os.lchown(path, self._uid, self._uid)
            state = self._state(path)
            assert state is not None
            self._built[path] = state
