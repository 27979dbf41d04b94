"""IPython tracebacks, as E2B's code interpreter returns them, made plain for a repair prompt.

E2B's server joins the kernel's traceback list with "" into `Execution.error.traceback`. IPython 9
writes a 75-dash rule and a "Name   Traceback (most recent call last)" header (glued to the
first frame, since nothing separates the list items), then one block per frame: "Cell In[n],
line L[, in f(args)]" for a code cell (our driver) or "File path:L[, in f(args)]" for a file,
each with numbered context lines and an arrow at the current one; "Name: message" comes last.
A SyntaxError comes in IPython's plain form instead ("  File path:L in f", the code indented
below). A template with colours on adds ANSI escapes to all of it.

`plain_traceback` keeps what the script's author needs: a Python-style traceback of the
script's own frames and the exception lines; the driver's cell, library internals, context
lines and colours go.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_HEADER = re.compile(r"Traceback \(most recent call last\):?")
_FRAME = re.compile(
    r"^(?P<indent>\s*)(?:Cell In\[\d+\], line (?P<cell_line>\d+)|File (?P<path>.+?):(?P<line>\d+))"
    r"(?:,? in (?P<func>[^\s(]+)(?:\(.*\))?)?\s*$")
_ARROW = re.compile(r"^-*> ?\s*\d+ ?(?P<code>.*)$")


@dataclass
class _Frame:
    path: str | None
    line: int
    func: str | None
    body: list[str] = field(default_factory=list)


def _frames(lines: list[str]) -> list[_Frame]:
    """Each frame block with the code lines a plain traceback shows for it."""
    frames: list[_Frame] = []
    verbose = True
    for line in lines:
        head = _FRAME.match(line)
        if head is not None:
            verbose = not head["indent"]  # in the plain form no name means no function
            func = head["func"] or ("<module>" if verbose else None)
            frames.append(_Frame(head["path"], int(head["line"] or head["cell_line"]), func))
        elif frames and verbose and (arrow := _ARROW.match(line)):
            frames[-1].body.append("    " + arrow["code"].strip())
        elif frames and not verbose and line.startswith("    "):
            frames[-1].body.append(line.rstrip())  # the code, and a SyntaxError's caret
    return frames


def _exception_lines(lines: list[str], name: str, value: str) -> list[str]:
    """From the last line that starts with the exception's name to the end."""
    start = re.compile(rf"^(?:[\w.]+\.)?{re.escape(name)}(?::|$)")
    for index in range(len(lines) - 1, -1, -1):
        if start.match(lines[index]):
            return [line.rstrip() for line in lines[index:] if line.strip()]
    return [f"{name}: {value}" if value else name]


def plain_traceback(raw: str, *, script: str, name: str, value: str) -> str:
    """`raw` (an IPython traceback from E2B) as a plain one of `script`'s frames only.

    "" stays "" (errors the server makes itself carry no traceback).
    """
    if not raw.strip():
        return ""
    lines = _HEADER.sub("\n", _ANSI.sub("", raw)).splitlines()
    tail = _exception_lines(lines, name, value)
    ours = [f for f in _frames(lines) if f.path and posixpath.basename(f.path) == script]
    out = ["Traceback (most recent call last):"] if ours else []
    for frame in ours:
        where = f", in {frame.func}" if frame.func else ""
        out += [f'  File "{script}", line {frame.line}{where}', *frame.body]
    return "\n".join(out + tail) + "\n"
