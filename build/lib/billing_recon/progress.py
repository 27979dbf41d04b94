"""A one-line progress bar for long local batches (drawn only on a terminal)."""

from __future__ import annotations

import sys
from typing import TextIO

WIDTH = 30


class ProgressBar:
    """``[#####.....] 9/18 tickets settled`` redrawn in place on ``stream``.

    Off when the stream is not a terminal (pipes, CI logs), unless ``enabled`` forces it:
    the per-ticket lines already show progress there.
    """

    def __init__(self, total: int, what: str, stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.total, self.what, self.done = total, what, 0
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled

    def line(self) -> str:
        """The bar as text."""
        filled = WIDTH * self.done // self.total if self.total else WIDTH
        return f"[{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total} {self.what}"

    def update(self, done: int) -> None:
        """Redraw with ``done`` items finished (never moves backwards)."""
        self.done = min(max(done, self.done), self.total)
        if self.enabled:
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def clear(self) -> None:
        """Erase the bar so another line can be printed in its place (redrawn on update)."""
        if self.enabled and self.done:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
