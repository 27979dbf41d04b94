"""The core ``Settings`` from the blocks saved under one name (a "block set").

Each block holds settings sections; a missing block leaves its sections to the environment
and the defaults, exactly as without blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from prefect.blocks.core import Block
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.exceptions import ObjectNotFound
from pydantic import ValidationError

from billing_recon.config import Settings, load
from billing_recon_blocks.approval import ApprovalPolicy
from billing_recon_blocks.database import BillingDatabase
from billing_recon_blocks.gateway import PaymentGateway
from billing_recon_blocks.llm import LlmEndpoint
from billing_recon_blocks.mail import MailServers
from billing_recon_blocks.parts import stale
from billing_recon_blocks.sandbox import SandboxConfig

DEFAULT_BLOCK_SET = "default"
AnyBlock = (BillingDatabase | LlmEndpoint | SandboxConfig | PaymentGateway | ApprovalPolicy
            | MailServers)
#: Every block type of billing-recon, in the order they are registered and reported.
BLOCK_TYPES: tuple[type[AnyBlock], ...] = (BillingDatabase, LlmEndpoint, SandboxConfig,
                                           PaymentGateway, ApprovalPolicy, MailServers)
B = TypeVar("B", bound=Block)


@dataclass(frozen=True)
class BlockSet:
    """The six blocks saved under one name; None where no such block is saved."""

    database: BillingDatabase | None = None
    llm: LlmEndpoint | None = None
    sandbox: SandboxConfig | None = None
    gateway: PaymentGateway | None = None
    approval: ApprovalPolicy | None = None
    mail: MailServers | None = None

    def found(self) -> list[AnyBlock]:
        """The blocks that exist."""
        blocks = (self.database, self.llm, self.sandbox, self.gateway, self.approval,
                  self.mail)
        return [block for block in blocks if block is not None]

    def settings(self) -> Settings:
        """The core settings: each block's sections, the rest from the environment."""
        given: dict[str, Any] = {}
        for block in self.found():
            given.update(block.sections())
        return load(**given)


def _read(client: SyncPrefectClient, cls: type[B], name: str) -> B | None:
    try:
        document = client.read_block_document_by_name(name, cls.get_block_type_slug(),
                                                       include_secrets=True)
    except ObjectNotFound:
        return None
    try:
        return cls.model_validate(document.data)
    except ValidationError as exc:
        raise stale(cls.get_block_type_slug(), name, exc) from None


def load_block_set(name: str = DEFAULT_BLOCK_SET) -> BlockSet:
    """The blocks saved under ``name`` on the configured Prefect server.

    Uses the synchronous client so that it works the same from sync code and from inside an
    async task (``Block.load`` hands back a coroutine there).
    """
    with get_client(sync_client=True) as client:
        return BlockSet(database=_read(client, BillingDatabase, name),
                        llm=_read(client, LlmEndpoint, name),
                        sandbox=_read(client, SandboxConfig, name),
                        gateway=_read(client, PaymentGateway, name),
                        approval=_read(client, ApprovalPolicy, name),
                        mail=_read(client, MailServers, name))


def settings_from_blocks(name: str = DEFAULT_BLOCK_SET) -> Settings:
    """The core ``Settings`` from the blocks saved under ``name`` (missing ones: the env)."""
    return load_block_set(name).settings()
