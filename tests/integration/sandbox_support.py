"""Helpers shared by the sandbox tests: looking at host processes from the outside, and what
bubblewrap says where user namespaces are blocked (the ``blocked_bwrap`` fixture's message)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from billing_recon.sandbox.port import SandboxResult

NO_USERNS = ("bwrap: No permissions to creating new namespace, likely because the kernel does "
             "not allow non-privileged user namespaces.")


def alive(pid: int, comm: str) -> bool:
    """True if `pid` is a live (not zombie) process named `comm`."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
    return name == comm and state not in "ZX"


def dies_soon(pid: int, comm: str, within: float = 2.0) -> bool:
    """True once `pid` is gone; SIGKILL takes effect asynchronously, so allow a moment."""
    deadline = time.monotonic() + within
    while alive(pid, comm):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def first_int(result: SandboxResult) -> int:
    """The first whitespace-separated word of stdout, as an int."""
    return int(result.stdout.split()[0])


def processes_with_arg(marker: str) -> list[int]:
    """Host pids whose command line contains `marker` (escaped daemons, leaked workers)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    """Host pids of every live process below `pid`."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def any_alive(pids: set[int]) -> bool:
    """True while one of `pids` is a live (not zombie) process."""
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] not in "ZX":
            return True
    return False
