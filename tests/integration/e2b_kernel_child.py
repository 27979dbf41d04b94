"""The loopback E2B's kernel: a long-lived Python process that runs code cells, like IPython's.

Started by e2b_kernel.Kernel as `python -I -u e2b_kernel_child.py CONTROL_FD` in the sandbox's
home directory. Cells arrive as JSON lines on stdin. A cell's stdout and stderr are this
process's own fds 1 and 2, which the parent streams live (ipykernel captures them the same way,
so even `sys.__stdout__` and child processes reach the client). Results (`display(...)`, which
IPython makes a builtin, and a last expression's value), the error and the cell's end go to the
parent as JSON lines on CONTROL_FD. Only the standard library: this runs beside the code.

Errors are formatted the way IPython 9 does with colors="NoColor" (what E2B's template sets),
as a list the server joins with "": a 75-dash rule, "Name<pad>Traceback (most recent call
last)", one block per frame ("Cell In[n], line L[, in f(args)]" or "File path:L[, in f(args)]",
numbered context lines, an arrow at the current line), "Name: message". A SyntaxError gets
IPython's plain form. The recorded real ones are in tests/unit/e2b_ipython_tracebacks.json.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import json
import linecache
import os
import sys
import traceback
from types import FrameType, TracebackType
from typing import Any

CONTROL = os.fdopen(int(sys.argv[1]), "w", encoding="utf-8")
NAMESPACE: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
CELLS: dict[str, int] = {}  # code cell file name -> execution count
RULE = "-" * 75
HEADER = "Traceback (most recent call last)"


def _send(event: dict[str, Any]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()  # what the cell printed reaches the parent first
    CONTROL.write(json.dumps(event) + "\n")
    CONTROL.flush()


def _result(value: object, main: bool) -> None:
    text = repr(value)
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]  # E2B's server strips the quotes of a str's repr
    _send({"type": "result", "text": text, "extra": {}, "is_main_result": main})


def display(*objs: object, **_options: object) -> None:
    """IPython's display(): each object becomes a result event that is not the main result."""
    for obj in objs:
        _result(obj, main=False)


def _where(frame: FrameType, path: str, line: int) -> str:
    place = f"Cell In[{CELLS[path]}], line {line}" if path in CELLS else f"File {path}:{line}"
    if frame.f_code.co_name == "<module>":
        return place
    args = inspect.formatargvalues(*inspect.getargvalues(frame), formatvalue=lambda _v: "")
    return f"{place}, in {frame.f_code.co_name}{args}"


def _context(path: str, line: int) -> str:
    lines = []
    for number in range(max(1, line - 4), line + 2):
        code = linecache.getline(path, number)
        if not code and number > line:
            break
        label = f"{'-' * max(1, 5 - len(str(number)))}> {number}" if number == line else (
            f"{number:>7}")
        lines.append(f"{label} {code.rstrip()}\n")
    return "".join(lines)


def _user_frames(tb: TracebackType | None) -> list[tuple[FrameType, int]]:
    frames = []
    while tb is not None:
        if tb.tb_frame.f_code.co_filename != __file__:  # IPython hides its own frames too
            frames.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return frames


def _verbose(exc: BaseException) -> list[str]:
    name = type(exc).__name__
    parts = [RULE, f"{name:<42}{HEADER}"]
    for frame, line in _user_frames(exc.__traceback__):
        path = frame.f_code.co_filename
        parts.append(f"{_where(frame, path, line)}\n{_context(path, line)}")
    return [*parts, f"{name}: {exc}"]


def _plain(exc: SyntaxError) -> list[str]:
    parts = [f"{HEADER}:\n"]
    for summary in traceback.extract_tb(exc.__traceback__):
        place = (f"Cell In[{CELLS[summary.filename]}], line {summary.lineno}"
                 if summary.filename in CELLS else f"File {summary.filename}:{summary.lineno}")
        where = "" if summary.name == "<module>" else f" in {summary.name}"
        parts.append(f"  {place}{where}\n    {(summary.line or '').strip()}\n")
    text = (exc.text or "").rstrip("\n")
    indent = len(text) - len(text.lstrip())
    caret = " " * (4 + max(0, (exc.offset or 1) - 1 - indent)) + "^"
    parts.append(f"  File {exc.filename}:{exc.lineno}\n    {text.strip()}\n{caret}\n")
    return [*parts, f"SyntaxError: {exc.msg}\n"]


def _error(exc: BaseException) -> None:
    tb = _plain(exc) if type(exc) is SyntaxError else _verbose(exc)
    _send({"type": "error", "name": type(exc).__name__, "value": str(exc), "traceback": tb})


def run_cell(code: str, count: int) -> None:
    """Run `code` as cell number `count`; the value of a last expression is the main result."""
    path = f"/tmp/ipykernel_{os.getpid()}/{count}.py"
    CELLS[path] = count
    linecache.cache[path] = (len(code), None, code.splitlines(True), path)
    try:
        tree = ast.parse(code, path)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, path, "exec"), NAMESPACE)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), path, "eval"), NAMESPACE)
            if value is not None:
                _result(value, main=True)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too, as in IPython
        _error(exc)
    _send({"type": "done"})


def main() -> None:
    """Serve cells until stdin closes."""
    builtins.display = display  # type: ignore[attr-defined]
    for line in sys.stdin:
        cell = json.loads(line)
        run_cell(cell["code"], cell["count"])


if __name__ == "__main__":
    main()
