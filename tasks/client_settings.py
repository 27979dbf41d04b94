"""Prefect client settings our own entry points apply in-process, when it is safe (issue 7).

Prefect builds a new SSL context for every API client it creates (at least two per flow run)
and loads a whole CA bundle into it each time: ``PREFECT_API_SSL_CERT_FILE``, which defaults
to ``SSL_CERT_FILE`` (the system bundle on many machines, this one included), else certifi's.
That is ~140 certificates and about 28 ms of CPU per client here, even for a plain
``http://`` API where TLS is never used. For such an API on this machine (loopback) we name a
one-certificate CA file instead. The setting only tells Prefect's API clients which CA to
trust for ``https://`` and ``wss://`` connections to the Prefect API, so over plain http it
cannot matter; for an https or remote API nothing is changed.

Each new API client also asks the server for a CSRF token before its first write (one more
request per flow run, ~10 ms on a busy machine); a server without CSRF protection (Prefect's
default) answers 422 and the client stops asking. When the loopback server says so to one probe
at start-up, our clients skip that request (``PREFECT_CLIENT_CSRF_SUPPORT_ENABLED=false``). The
trade: if that server is restarted with CSRF protection on while this process runs, our writes
fail with 403 (loudly) until the process restarts.

The settings apply only inside the returned context manager (``temporary_settings``): in this
process, never in the environment, so no subprocess, worker or deployment inherits them.
"""

from __future__ import annotations

import ipaddress
import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import certifi
import httpx
from prefect.settings import (
    PREFECT_API_SSL_CERT_FILE,
    PREFECT_CLIENT_CSRF_SUPPORT_ENABLED,
    get_current_settings,
    temporary_settings,
)

CA_FILE_NAME = "billing-recon-loopback-ca.pem"
_BEGIN, _END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
#: What Prefect's server answers a token request with when it has CSRF protection off (the
#: same text Prefect's client looks for).
CSRF_OFF = "CSRF protection is disabled."


def loopback_http(url: str | None) -> bool:
    """Whether a Prefect API URL is plain http on this machine's loopback interface.

    ``None`` counts: without an API URL Prefect runs its ephemeral server on 127.0.0.1.
    """
    if url is None:
        return True
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:  # another host name: it may resolve anywhere
        return False


def one_certificate() -> str:
    """The first certificate of certifi's bundle, in PEM form (any valid one will do)."""
    bundle = Path(certifi.where()).read_text(encoding="ascii")
    return bundle[bundle.index(_BEGIN):bundle.index(_END) + len(_END)] + "\n"


def loopback_ca_file(directory: Path) -> Path | None:
    """A one-certificate CA file in ``directory`` (written once, atomically); None if it can't."""
    path, pem = directory / CA_FILE_NAME, one_certificate()
    try:
        if path.is_file() and path.read_text(encoding="ascii") == pem:
            return path
        directory.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{CA_FILE_NAME}.{os.getpid()}")
        scratch.write_text(pem, encoding="ascii")
        os.replace(scratch, path)
    except OSError:  # a read-only home: run with Prefect's default, slower but correct
        return None
    return path


def local_client_settings() -> AbstractContextManager[Any]:
    """A context manager with the faster client settings, or a no-op where they don't apply.

    Call it in the entry point, around the whole run (``with local_client_settings():
    asyncio.run(...)``), before Prefect creates a client.
    """
    settings = get_current_settings()
    if not loopback_http(settings.api.url):
        return nullcontext()  # the CA file could matter; the CSRF probe would go off-machine
    updates: dict[Any, Any] = {}
    ca_file = None if settings.api.tls_insecure_skip_verify else loopback_ca_file(
        Path(settings.home))
    if ca_file is not None:
        updates[PREFECT_API_SSL_CERT_FILE] = str(ca_file)
    if settings.api.url and settings.client.csrf_support_enabled and csrf_off(settings.api.url):
        updates[PREFECT_CLIENT_CSRF_SUPPORT_ENABLED] = False
    return temporary_settings(updates=updates) if updates else nullcontext()


def csrf_off(api_url: str, transport: httpx.BaseTransport | None = None) -> bool:
    """Whether the Prefect server at ``api_url`` says it has CSRF protection off (one GET of at
    most 2 s); False when it cannot tell (not running yet, auth required, any error)."""
    try:
        with httpx.Client(transport=transport, timeout=2) as client:
            answer = client.get(f"{api_url.rstrip('/')}/csrf-token",
                                params={"client": str(uuid4())})
    except httpx.HTTPError:
        return False
    return answer.status_code == 422 and CSRF_OFF in answer.text
