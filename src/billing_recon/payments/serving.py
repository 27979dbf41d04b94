"""What the local gateway and the webhook receiver share to serve in a thread: a socket bound
before the server starts, and a readiness probe."""

from __future__ import annotations

import socket

import httpx


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``(host, port)``. Binding ourselves (rather than letting uvicorn) is
    what makes port 0 usable: the kernel's choice is known before the server starts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 within a second."""
    try:
        # trust_env=False: a proxy from the environment must not intercept loopback traffic.
        return httpx.get(url, timeout=1.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False
