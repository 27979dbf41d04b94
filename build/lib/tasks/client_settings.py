"""Prefect client settings our own entry points apply in-process, when it is safe (issue 7).

Prefect builds a new SSL context for every API client it creates (at least two per flow run)
and loads a whole CA bundle into it each time: ``PREFECT_API_SSL_CERT_FILE``, which defaults
to ``SSL_CERT_FILE`` (the system bundle on many machines, this one included), else certifi's.
That is ~140 certificates and about 28 ms of CPU per client here, even for a plain
``http://`` API where TLS is never used. For such an API on this machine (loopback) we name a
one-certificate CA file instead. The setting only tells Prefect's API clients which CA to
trust for ``https://`` and ``wss://`` connections to the Prefect API, so over plain http it
cannot matter; for an https or remote API nothing is changed.

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

import certifi
from prefect.settings import PREFECT_API_SSL_CERT_FILE, get_current_settings, temporary_settings

CA_FILE_NAME = "billing-recon-loopback-ca.pem"
_BEGIN, _END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"


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
    if settings.api.tls_insecure_skip_verify or not loopback_http(settings.api.url):
        return nullcontext()  # the CA file would not be used, or it could matter
    ca_file = loopback_ca_file(Path(settings.home))
    if ca_file is None:
        return nullcontext()
    return temporary_settings(updates={PREFECT_API_SSL_CERT_FILE: str(ca_file)})
