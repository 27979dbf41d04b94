"""Blocks on the session's Prefect backend: Prefect's standards, round trips, the settings they
build, and flows that take their configuration from them.

Every test saves its blocks under a name of its own and deletes them afterwards, so no other
test's flow ever loads them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from prefect import flow
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import BlockDocumentCreate
from prefect.exceptions import ObjectNotFound
from prefect.flow_engine import run_flow_async
from prefect.testing.cli import invoke_and_assert
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import BaseModel, SecretStr

from billing_recon.agents.triage import triage
from billing_recon.config import (
    ApprovalSettings,
    DatabaseSettings,
    GatewaySettings,
    ImapSettings,
    KeySettings,
    LlmBudget,
    ModelSettings,
    Price,
    SandboxSettings,
    SmtpSettings,
    WebhookSettings,
    load,
)
from billing_recon.domain.email import parse_email
from billing_recon.errors import ApprovalRefused, ModelUnavailable, UserInputError
from billing_recon.llm.backends import chat_model
from billing_recon.sandbox.port import SandboxLimits
from billing_recon.steps import approval_gate
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.store.db import make_engine
from billing_recon.testing.chat_server import ChatServer
from billing_recon_blocks import (
    ApprovalPolicy,
    BillingDatabase,
    LlmEndpoint,
    MailServers,
    PaymentGateway,
    SandboxConfig,
    registration,
)
from billing_recon_blocks.settings import BLOCK_TYPES, DEFAULT_BLOCK_SET, settings_from_blocks
from billing_recon_flows.process_ticket import process_ticket
from billing_recon_tasks.runtime import block_settings, deps, forget_block_settings
from tests.flows.conftest import email, gateway_refunds

pytestmark = pytest.mark.flows
BOTH = "Hello, INV-000001 and INV-000002 look wrong: I was overcharged $24.60."


def samples() -> list[Block]:
    """One block of each type with a secret in it and values away from the defaults."""
    return [
        BillingDatabase(database=DatabaseSettings(
            url=SecretStr("postgresql://recon:db-pw-7f3@127.0.0.1:5432/billing"))),
        LlmEndpoint(llm=ModelSettings(
            backend="openai", base_url="http://127.0.0.1:9/v1",
            api_key=SecretStr("sk-llm-secret-91"), analysis_model="gpt-4o",
            prices={"gpt-4o": Price(input_per_mtok=Decimal("2.5"),
                                    output_per_mtok=Decimal("10"))}),
            budgets=LlmBudget(max_calls_per_ticket=4, breaker_window_s=60.0)),
        SandboxConfig(sandbox=SandboxSettings(
            backend="e2b", e2b_api_key=SecretStr("e2b-secret-55"), workers=3,
            limits=SandboxLimits(cpu_seconds=5), e2b_template="recon")),
        PaymentGateway(gateway=GatewaySettings(
            url="https://stripe.example.test", stripe_api_key=SecretStr("sk_test_gw_secret_12"),
            db=SecretStr("sqlite:///gateway-x.db")),
            webhooks=WebhookSettings(url="https://recon.example.test/v1/webhooks/stripe",
                                     secret=SecretStr("whsec_block_secret_31"))),
        ApprovalPolicy(approval=ApprovalSettings(
            approvers=("carol", " dan "), approval_timeout_s=60.0, require_code=True,
            four_eyes={"usd": Decimal("1000.00")})),
        MailServers(imap=ImapSettings(host="imap.example.test", user="billing",
                                      password=SecretStr("imap-app-token-44")),
                    smtp=SmtpSettings(host="smtp.example.test", port=587, security="starttls",
                                      password=SecretStr("smtp-app-token-45"),
                                      notify=("ops@example.test",))),
    ]


def secret_fields(model: BaseModel, prefix: str = "") -> dict[str, str]:
    """The model's secret fields (dotted paths into its sections) and their plain values."""
    found: dict[str, str] = {}
    for name, value in model:
        if isinstance(value, SecretStr):
            found[prefix + name] = value.get_secret_value()
        elif isinstance(value, BaseModel):
            found.update(secret_fields(value, f"{prefix}{name}."))
    return found


def plain(block: Block) -> dict[str, Any]:
    """Every field of the block with secrets revealed, for comparing values."""
    return json.loads(json.dumps(block.model_dump(mode="python"), default=_revealed))


def _revealed(value: object) -> object:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def at(data: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted path of a block document."""
    for key in dotted.split("."):
        data = data[key]
    return data


def delete_block_set(name: str) -> None:
    """Delete whatever blocks of ours are saved under ``name``."""
    with get_client(sync_client=True) as client:
        for cls in BLOCK_TYPES:
            try:
                found = client.read_block_document_by_name(name, cls.get_block_type_slug())
            except ObjectNotFound:
                continue
            client.delete_block_document(found.id)


@pytest.fixture
def block_set() -> Iterator[str]:
    """A block-set name no other test uses; its blocks are deleted afterwards."""
    name = f"test-{uuid4().hex[:12]}"
    forget_block_settings()
    yield name
    delete_block_set(name)
    forget_block_settings()


class TestPrefectBlockStandards(BlockStandardTestSuite):
    """Prefect's own checks for every block type (description, docs, field docs, example)."""

    @pytest.fixture(params=BLOCK_TYPES, ids=lambda cls: cls.__name__)
    def block(self, request: pytest.FixtureRequest) -> type[Block]:
        """Each of our block types in turn."""
        return request.param  # type: ignore[no-any-return]

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """Prefect's check fetches each block's logo from the internet (it runs once Pillow is
        installed, as matplotlib brings it): our blocks have no logo (the UI shows Prefect's
        default), and a test must not depend on the network."""
        assert block._logo_url is None


@pytest.mark.parametrize("sample", samples(), ids=lambda block: type(block).__name__)
def test_block_round_trips_and_its_secrets_stay_hidden(sample: Block, block_set: str) -> None:
    sample.save(block_set)
    loaded = type(sample).load(block_set)
    assert plain(loaded) == plain(sample)
    secrets = secret_fields(sample)
    # Every block holds a secret but the approval policy, which must hold none: the keys that
    # make approvals stay on the hosts (KeySettings), out of reach of Prefect API clients.
    assert bool(secrets) != isinstance(sample, ApprovalPolicy), secrets
    with get_client(sync_client=True) as client:
        slug = sample.get_block_type_slug()
        shown = client.read_block_document_by_name(block_set, slug, include_secrets=False)
        stored = client.read_block_document_by_name(block_set, slug, include_secrets=True)
    for field, value in secrets.items():
        assert value not in json.dumps(shown.data, default=str) + repr(loaded) + str(loaded)
        assert at(shown.data, field) != value and set(str(at(shown.data, field))) == {"*"}
        assert at(stored.data, field) == value


def test_settings_from_blocks_are_the_blocks_values(block_set: str) -> None:
    for block in samples():
        block.save(block_set)
    settings = settings_from_blocks(block_set)
    blocks = samples()
    expected = load(**{name: section for block in blocks
                       for name, section in block.sections().items()})
    assert settings == expected
    assert settings.database.sqlalchemy_url.endswith("db-pw-7f3@127.0.0.1:5432/billing")
    assert (settings.llm.backend, settings.llm.analysis_model) == ("openai", "gpt-4o")
    assert settings.llm.prices == {"gpt-4o": Price(input_per_mtok=Decimal("2.5"),
                                                   output_per_mtok=Decimal("10"))}
    assert settings.budgets.max_calls_per_ticket == 4
    assert (settings.sandbox.backend, settings.sandbox.limits.cpu_seconds) == ("e2b", 5)
    assert settings.gateway.db_url == "sqlite:///gateway-x.db"
    assert settings.approval.approvers == ("carol", "dan")
    assert settings.approval.four_eyes == {"USD": Decimal("1000.00")}
    for block in blocks:
        for value in secret_fields(block).values():
            assert value not in repr(settings) and value not in str(settings)


def test_a_missing_block_leaves_its_part_to_the_environment(block_set: str) -> None:
    url = "sqlite:///only-the-database.db"
    BillingDatabase(database=DatabaseSettings(url=SecretStr(url))).save(block_set)
    assert settings_from_blocks(block_set) == load(database=DatabaseSettings(url=SecretStr(url)))
    assert settings_from_blocks(block_set) != load()


def test_a_block_saved_by_an_older_release_is_a_clear_error(block_set: str) -> None:
    """A flat document of the previous block schema is refused, never read as the defaults."""
    BillingDatabase.register_type_and_schema()
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug(BillingDatabase.get_block_type_slug())
        schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
        assert schema is not None
        client.create_block_document(BlockDocumentCreate(
            name=block_set, data={"url": "sqlite:///old.db"}, block_type_id=block_type.id,
            block_schema_id=schema.id))
    with pytest.raises(UserInputError, match=r"saved by an older release.*--overwrite"):
        settings_from_blocks(block_set)


def test_secret_an_approval_policy_saved_with_keys_is_refused_not_used(
        block_set: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An older release saved the signing key in the policy block: such a document is refused
    (save it again without keys), and its key is never used."""
    ApprovalPolicy.register_type_and_schema()
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug(ApprovalPolicy.get_block_type_slug())
        schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
        assert schema is not None
        client.create_block_document(BlockDocumentCreate(
            name=block_set, data={"approval": {"approvers": ["carol"],
                                               "signing_key": "k-in-a-block"}},
            block_type_id=block_type.id, block_schema_id=schema.id))
    monkeypatch.setenv("BILLING_RECON_SIGNING_KEY", "k-on-the-host")
    with pytest.raises(UserInputError, match=r"signing_key.*--overwrite"):
        settings_from_blocks(block_set)


def test_settings_differing_only_in_a_secret_have_different_cache_keys() -> None:
    base = load()
    variants = [
        load(database=DatabaseSettings(url=SecretStr("postgresql://u:pw-a@h/db"))),
        load(database=DatabaseSettings(url=SecretStr("postgresql://u:pw-b@h/db"))),
        load(gateway=GatewaySettings(stripe_api_key=SecretStr("sk_test_a"))),
        load(sandbox=SandboxSettings(e2b_api_key=SecretStr("e2b-a"))),
        load(keys=KeySettings(signing_key=SecretStr("key-a"))),
        load(keys=KeySettings(signing_key=SecretStr("key-b")))]
    keys = {s.fingerprint() for s in [base, *variants]}
    assert len(keys) == len(variants) + 1
    assert base.fingerprint() == load().fingerprint()
    for secret in ("pw-a", "pw-b", "sk_test_a", "e2b-a", "key-a", "key-b"):
        assert all(secret not in key and secret not in repr(s) for key in keys for s in variants)


def test_each_block_hands_out_its_configured_client(tmp_path: Path,
                                                   chat_server: ChatServer) -> None:
    """As prefect-sqlalchemy's connector does: an engine, a model, a sandbox, a refund client."""
    engine = BillingDatabase(database=DatabaseSettings(
        url=SecretStr(f"sqlite:///{tmp_path}/b.db"))).get_engine()
    try:
        with engine.connect() as conn:  # migrated: the tickets table is there
            assert conn.exec_driver_sql("SELECT count(*) FROM tickets").scalar() == 0
    finally:
        engine.dispose()
    model = LlmEndpoint(llm=ModelSettings(base_url=chat_server.url,
                                          api_key=SecretStr("sk-test-loopback")),
                        budgets=LlmBudget()).chat_model()
    mail = parse_email(b"From: ann@example.com\r\nSubject: bill\r\n\r\nINV-000001 is wrong\r\n")
    assert triage(model, mail).invoice_ids == ["INV-000001"] and chat_server.calls("triage") == 1
    box = SandboxConfig(sandbox=SandboxSettings(backend="subprocess")).get_sandbox()
    try:
        assert box.run("print(6 * 7)", {}).stdout == "42\n"
    finally:
        box.close()
    block = PaymentGateway(gateway=GatewaySettings(retries=0), webhooks=WebhookSettings())
    client = block.get_client("http://127.0.0.1:9", api_key="sk_local_given")
    assert client.busy_wait_s == GatewaySettings().busy_wait_s
    with pytest.raises(UserInputError, match="no gateway key"):
        PaymentGateway(gateway=GatewaySettings(url="http://127.0.0.1:9"),
                       webhooks=WebhookSettings()).get_client()
    with pytest.raises(UserInputError, match="names no URL"):
        PaymentGateway(gateway=GatewaySettings(), webhooks=WebhookSettings()).get_client()


def test_llm_block_endpoint_and_key_reach_the_model_server(
        block_set: str, chat_server: ChatServer) -> None:
    """The block's URL, key and models are used; another key is another model (and runtime)."""
    def endpoint(key: str) -> LlmEndpoint:
        return LlmEndpoint(llm=ModelSettings(backend="openai", base_url=chat_server.url,
                                             api_key=SecretStr(key),
                                             triage_model="gpt-4.1-nano", max_retries=0),
                           budgets=LlmBudget())

    endpoint("sk-test-loopback").save(block_set)
    good = settings_from_blocks(block_set)
    endpoint("sk-wrong").save(block_set, overwrite=True)
    bad = settings_from_blocks(block_set)
    assert good.fingerprint() != bad.fingerprint()
    mail = parse_email(b"From: ann@example.com\r\nSubject: bill\r\n\r\nINV-000001 is wrong\r\n")
    assert triage(chat_model(good.llm), mail).invoice_ids == ["INV-000001"]
    assert [r.model for r in chat_server.requests] == ["gpt-4.1-nano"]
    with pytest.raises(ModelUnavailable, match="401"):
        triage(chat_model(bad.llm), mail)


def test_blocks_env_naming_no_saved_block_is_refused(
        block_set: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_RECON_BLOCKS", block_set)
    with pytest.raises(UserInputError, match=block_set):
        deps()


def test_prefect_block_register_finds_every_block_type_in_the_module() -> None:
    invoke_and_assert(["block", "register", "-m", "billing_recon_blocks"], expected_code=0,
                      expected_output_contains=f"Successfully registered {len(BLOCK_TYPES)} "
                      "blocks")


@pytest.mark.anyio
async def test_flow_under_blocks_env_uses_the_blocks_database_and_policy(
        world: Deps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_set: str) -> None:
    """The ticket lands in the block's database, and only the block's approver may decide."""
    await BillingDatabase(database=world.settings.database).asave(block_set)
    await ApprovalPolicy(approval=ApprovalSettings(approvers=("carol",))).asave(block_set)
    monkeypatch.setenv("BILLING_RECON_SIGNING_KEY", "k-host")  # keys never come from blocks
    env_only = tmp_path / "env-only.db"
    monkeypatch.setenv("BILLING_RECON_DATABASE_URL", f"sqlite:///{env_only}")
    monkeypatch.setenv("BILLING_RECON_BLOCKS", block_set)
    first = await process_ticket(email_path=email(tmp_path, "m1", "ann@example.com", BOTH),
                                 approval_wait_s=0)
    assert first["state"] == "APPROVAL_PENDING"
    tid = tickets.parse_ticket_id(first["ticket_id"])
    ticket = tickets.get(world.sessions, tid)  # the block's database is the seeded one
    assert not env_only.exists() or _ticket_count(f"sqlite:///{env_only}") == 0
    configured = await asyncio.to_thread(deps)
    with pytest.raises(ApprovalRefused):
        approval_gate.record_decision(configured, tid, approval_gate.Decision(
            True, "alice", ticket.proposal_hash or "", "cli"), "cli:alice")
    approval_gate.record_decision(configured, tid, approval_gate.Decision(
        True, "carol", ticket.proposal_hash or "", "cli"), "cli:carol")
    assert configured.settings.signing_key() == b"k-host"
    assert (await process_ticket(ticket_id=tid, approval_wait_s=0))["state"] == "CLOSED"
    assert len(gateway_refunds(world)) == 2


def _ticket_count(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM tickets").scalar() or 0)
    finally:
        engine.dispose()


@flow(name="blocks-test-configured-database")
async def configured_database() -> str:
    """Which database the flow's configuration names ("env" when no blocks are in use)."""
    settings = block_settings()
    return settings.database.sqlalchemy_url if settings else "env"


@pytest.mark.anyio
async def test_deployment_runs_load_the_default_block_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only for this test the default block set exists; other tests' flows never see it."""
    monkeypatch.delenv("BILLING_RECON_BLOCKS", raising=False)
    url = f"sqlite:///default-set-{uuid4().hex[:8]}.db"
    forget_block_settings()
    await BillingDatabase(database=DatabaseSettings(url=SecretStr(url))).asave(DEFAULT_BLOCK_SET)
    try:
        async with get_client() as client:
            flow_id = await client.create_flow(configured_database)
            deployment = await client.create_deployment(flow_id, f"test-{uuid4().hex[:8]}")
            run = await client.create_flow_run_from_deployment(deployment)
            assert await run_flow_async(configured_database, flow_run=run) == url
            assert await configured_database() == "env"  # same flow, not from a deployment
            await client.delete_deployment(deployment)
    finally:
        await asyncio.to_thread(delete_block_set, DEFAULT_BLOCK_SET)
        forget_block_settings()


def test_register_keeps_existing_blocks_unless_told_to_overwrite(
        block_set: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_RECON_SIGNING_KEY", "k-register")
    monkeypatch.setenv("BILLING_RECON_APPROVERS", "carol")
    lines: list[str] = []
    registration.register(block_set, out=lines.append)
    assert sum(line.startswith("saved") for line in lines) == len(BLOCK_TYPES)
    monkeypatch.setenv("BILLING_RECON_APPROVERS", "erin")
    policy = ApprovalPolicy.from_settings(load())
    registration.save_block_set([policy], block_set, overwrite=False, out=lines.append)
    assert lines[-1].startswith("kept")
    assert settings_from_blocks(block_set).approval.approvers == ("carol",)
    registration.save_block_set([policy], block_set, overwrite=True, out=lines.append)
    assert settings_from_blocks(block_set).approval.approvers == ("erin",)
    assert settings_from_blocks(block_set).signing_key() == b"k-register"
    assert not any("k-register" in line for line in lines)
