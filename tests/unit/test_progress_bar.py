"""The local batch progress bar."""

from __future__ import annotations

import io

from billing_recon.progress import ProgressBar


def test_progress_bar_counts_settled_items_and_fills_up() -> None:
    out = io.StringIO()
    bar = ProgressBar(4, "tickets settled", stream=out, enabled=True)
    bar.update(1)
    bar.update(4)
    bar.close()
    frames = out.getvalue().split("\r")
    assert frames[1] == "[#######.......................] 1/4 tickets settled"
    assert frames[2] == "[##############################] 4/4 tickets settled\n"


def test_progress_bar_never_moves_backwards_or_past_the_total() -> None:
    bar = ProgressBar(3, "x", stream=io.StringIO(), enabled=True)
    bar.update(2)
    bar.update(1)
    assert bar.done == 2
    bar.update(9)
    assert bar.done == 3


def test_progress_bar_stays_silent_when_not_on_a_terminal() -> None:
    out = io.StringIO()  # isatty() is False, like a pipe or a CI log
    bar = ProgressBar(2, "x", stream=out)
    bar.update(1)
    bar.close()
    assert out.getvalue() == ""


def test_progress_bar_clears_its_line_before_other_output() -> None:
    out = io.StringIO()
    bar = ProgressBar(2, "x", stream=out, enabled=True)
    bar.update(1)
    bar.clear()
    assert out.getvalue().endswith("\r\x1b[2K")
