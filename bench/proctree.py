"""A process and its descendants, read from /proc: their pids and resident memory."""

from __future__ import annotations

from pathlib import Path


def pids(root: int) -> list[int]:
    """``root`` and every live descendant (empty when ``root`` is gone)."""
    found: list[int] = []
    pending = [root]
    while pending:
        current = pending.pop()
        try:
            threads = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        found.append(current)
        for thread in threads:  # a child belongs to the thread that forked it
            try:
                pending.extend(int(c) for c in (thread / "children").read_text().split())
            except OSError:
                continue
    return found


def _status_kib(pid: int, field: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0  # ended meanwhile
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0  # a zombie or a kernel thread has no memory lines


def rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and its descendants, summed (VmRSS; pages shared between
    forked processes count in each of them)."""
    return sum(rss_bytes_of(pid) for pid in pids(root))


def rss_bytes_of(pid: int) -> int:
    """Resident memory of one process (VmRSS)."""
    return 1024 * _status_kib(pid, "VmRSS")


def high_water_bytes(pid: int) -> int:
    """The kernel's own peak resident memory of one process (VmHWM), not sampled."""
    return 1024 * _status_kib(pid, "VmHWM")
