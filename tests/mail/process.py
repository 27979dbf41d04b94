"""Stopping a test server the mail tests started: by its pid, SIGTERM then SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop it by its pid and wait for it; SIGKILL when SIGTERM is not enough within 10 s."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
