"""``billing-recon blocks register`` against the shared Prefect server.

The block set gets a name of its own (never the default one, which deployments load) and is
deleted afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e
SLUGS = ["billing-recon-database", "billing-recon-llm-endpoint", "billing-recon-sandbox",
         "billing-recon-payment-gateway", "billing-recon-approval-policy",
         "billing-recon-mail-servers"]
SECRETS = {"BILLING_RECON_DATABASE_URL": "postgresql://recon:db-pw-e2e@127.0.0.1:5432/billing",
           "BILLING_RECON_STRIPE_API_KEY": "sk_test_e2e_secret",
           "BILLING_RECON_SIGNING_KEY": "signing-e2e-secret"}
#: The keys that make approvals: never saved in a block (anyone with the Prefect credential
#: can read block secrets).
KEYS = {"BILLING_RECON_SIGNING_KEY": "signing-e2e-secret",
        "BILLING_RECON_APPROVER_KEY": "approver-e2e-secret"}


def _document(api: str, slug: str, name: str) -> dict[str, Any] | None:
    response = httpx.get(f"{api}/block_types/slug/{slug}/block_documents/name/{name}",
                         params={"include_secrets": "true"}, timeout=10)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return dict(response.json())


@pytest.fixture
def block_set(prefect_api: str) -> Iterator[str]:
    """A fresh block-set name; its documents are deleted from the shared server afterwards."""
    name = f"e2e-{uuid4().hex[:10]}"
    yield name
    for slug in SLUGS:
        document = _document(prefect_api, slug, name)
        if document is not None:
            httpx.delete(f"{prefect_api}/block_documents/{document['id']}", timeout=10)


def test_blocks_register_saves_the_environment_but_no_secret_key_that_makes_approvals(
        cli: Cli, prefect_api: str, block_set: str) -> None:
    cli.env.update(SECRETS, **KEYS, BILLING_RECON_APPROVERS="carol,dan",
                   BILLING_RECON_SANDBOX="bwrap")
    done = cli.run("blocks", "register", "--name", block_set)
    assert done.returncode == 0, done.stderr
    assert all(secret not in done.stdout + done.stderr for secret in SECRETS.values())
    types = httpx.post(f"{prefect_api}/block_types/filter", json={}, timeout=10).json()
    assert set(SLUGS) <= {t["slug"] for t in types}
    docs = {slug: _document(prefect_api, slug, block_set) for slug in SLUGS}
    assert all(docs.values()), docs
    database = docs["billing-recon-database"]["data"]["database"]
    assert database["url"] == SECRETS["BILLING_RECON_DATABASE_URL"]
    gateway = docs["billing-recon-payment-gateway"]["data"]["gateway"]
    assert gateway["stripe_api_key"] == "sk_test_e2e_secret"
    policy = docs["billing-recon-approval-policy"]["data"]["approval"]
    assert policy["approvers"] == ["carol", "dan"]
    assert "signing_key" not in policy and "approver_key" not in policy
    saved = repr(docs)  # every document, secrets included, as a Prefect API client reads them
    home = cli.cwd / "home"
    for key in [*KEYS.values(), *(p.read_text().strip() for p in home.glob("*.key"))]:
        assert key not in saved
    assert docs["billing-recon-sandbox"]["data"]["sandbox"]["backend"] == "bwrap"
    assert done.stdout.count("saved") == len(SLUGS)
