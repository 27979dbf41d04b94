"""What an E2B run streams back (stdout, stderr, results), kept within the run's caps.

The driver caps stdout and stderr inside the sandbox; a script can undo that, and `display()`
output (`result` events) is not capped there at all. So the client counts every byte and
every result the SDK hands over: past `FLOOD_FACTOR` times the cap, or past `MAX_RESULTS`
results, it stops reading (the SDK's callbacks raise, which closes the stream) instead of
buffering a flood. Results are never kept: the analysis reads stdout and out/ files only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from e2b_code_interpreter import OutputMessage, Result

from billing_recon.sandbox.collect import Capture

FLOOD_FACTOR = 4  # output beyond this many caps means the in-sandbox cap was undone
MAX_RESULTS = 100  # display() output is never used: a script making more is flooding


class OutputFlood(Exception):
    """The sandbox sent far more output than the cap: stop reading (and the run)."""


@dataclass
class StreamOutput:
    """stdout/stderr as the SDK streams them, capped; a flood aborts the stream."""

    cap: int
    out: Capture = field(init=False)
    err: Capture = field(init=False)
    received: int = 0
    results: int = 0

    def __post_init__(self) -> None:
        self.out, self.err = Capture(self.cap), Capture(self.cap)

    def on_stdout(self, message: OutputMessage) -> None:
        """A stdout chunk (it may hold several lines)."""
        self._feed(self.out, message.line)

    def on_stderr(self, message: OutputMessage) -> None:
        """A stderr chunk."""
        self._feed(self.err, message.line)

    def on_result(self, result: Result) -> None:
        """A display() or last-expression result: counted against the caps, then dropped."""
        self.results += 1
        self._count(sum(len(str(value)) for value in vars(result).values() if value))
        if self.results > MAX_RESULTS:
            raise OutputFlood

    def _feed(self, capture: Capture, text: str) -> None:
        data = text.encode("utf-8", "surrogateescape")
        capture.feed(data)
        self._count(len(data))

    def _count(self, size: int) -> None:
        self.received += size
        if self.received > FLOOD_FACTOR * self.cap + 64 * 1024:
            raise OutputFlood
