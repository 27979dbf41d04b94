"""Child-side runner: executes the user's script and reports an uncaught exception.

Run as `python -I -B -X utf8 _bootstrap.py SCRIPT ERROR_JSON`. The error goes to a side file,
not stdout, so the script's own output (often a JSON result line) is never mixed with ours.
This file must only use the standard library: it runs before, and beside, untrusted code.
"""

from __future__ import annotations

import json
import sys
import traceback
from types import CodeType, TracebackType


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Drop this file's frames so the traceback starts in the user's script."""
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


def _write_error(path: str, exc: BaseException) -> None:
    """Write {name, value, traceback} of `exc` to `path`."""
    try:
        value = str(exc)
    except Exception:  # a hostile __str__ must not hide the error itself
        value = "<unprintable exception>"
    lines = traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__))
    record = {"name": type(exc).__name__, "value": value, "traceback": "".join(lines)}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(record, fh)


def run(script: str, error_path: str, code: CodeType | None = None) -> int:
    """Execute `script` (or its already compiled `code`) as __main__; 1 and a report on error."""
    sys.argv = [script]
    namespace = {"__name__": "__main__", "__file__": script, "__builtins__": __builtins__}
    try:
        if code is None:
            with open(script, encoding="utf-8") as fh:
                source = fh.read()
            # dont_inherit: this file's own __future__ imports must not change the script.
            code = compile(source, script, "exec", dont_inherit=True)
        exec(code, namespace)
    except SystemExit:
        raise  # sys.exit(n) is the script's own exit code, not an error
    except BaseException as exc:
        _write_error(error_path, exc)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """Execute the script at argv[1] as __main__; on an exception write argv[2] and return 1."""
    return run(argv[1], argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
