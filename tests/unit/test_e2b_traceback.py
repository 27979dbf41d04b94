"""IPython tracebacks from E2B's code interpreter, made plain before a repair prompt sees them.

The inputs in e2b_ipython_tracebacks.json are real: recorded from an ipykernel 6.31.0 /
IPython 9.15.0 kernel (E2B's template pins these) running our E2B driver cell over a script,
each error's traceback list joined with "" exactly as E2B's server does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from billing_recon.sandbox.ipython_traceback import plain_traceback

RECORDED: dict[str, Any] = json.loads(
    Path(__file__).with_name("e2b_ipython_tracebacks.json").read_text(encoding="utf-8"))

ZERO = """\
Traceback (most recent call last):
  File ".billing-recon-zero.py", line 4, in <module>
    share(10, 0)
  File ".billing-recon-zero.py", line 3, in share
    return total / people
ZeroDivisionError: division by zero
"""

SYNTAX = """\
Traceback (most recent call last):
  File ".billing-recon-syntax.py", line 1
    def broken(:
               ^
SyntaxError: invalid syntax
"""


def _plain(key: str) -> str:
    record = RECORDED[key]
    return plain_traceback(record["traceback"], script=record["script"], name=record["name"],
                           value=record["value"])


def test_e2b_ipython_traceback_keeps_only_the_scripts_frames() -> None:
    raw = RECORDED["zero_nocolor"]["traceback"]
    assert "_billing_recon_run" in raw and "Cell In[1]" in raw  # the driver's frames are there

    assert _plain("zero_nocolor") == ZERO


@pytest.mark.parametrize(("key", "plain"), [("zero_linux", ZERO), ("syntax_linux", SYNTAX)])
def test_e2b_ipython_traceback_in_colour_comes_out_without_escapes(key: str, plain: str) -> None:
    assert "\x1b[" in RECORDED[key]["traceback"]

    assert _plain(key) == plain


def test_e2b_ipython_traceback_drops_library_frames_and_context_lines() -> None:
    plain = _plain("pandas_nocolor")

    assert plain == (
        "Traceback (most recent call last):\n"
        '  File ".billing-recon-pandas.py", line 3, in <module>\n'
        "    df = pd.read_csv('invoices.csv')\n"
        "FileNotFoundError: [Errno 2] No such file or directory: 'invoices.csv'\n")


def test_e2b_syntax_error_keeps_the_offending_line_and_caret() -> None:
    assert _plain("syntax_nocolor") == SYNTAX


def test_e2b_server_made_error_without_traceback_stays_empty() -> None:
    assert plain_traceback("", script="x.py", name="ContextRestarting",
                           value="Context was restarted") == ""
