"""Settings sections of the database, the payment gateway, approvals, orchestration and tests.

Pure data: ``config.settings`` fills them from the environment and ``.env``; the blocks hold
the same sections. Every variable is listed in docs/configuration.md (generated from here).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator

from billing_recon.config.variables import Env, Section
from billing_recon.payments.gateway_lifecycle import Lifecycle
from billing_recon.payments.gateway_store import DEFAULT_LEASE_S, DEFAULT_RETENTION_S
from billing_recon.payments.layers import Layer

DEFAULT_DATABASE_URL = "sqlite:///billing_recon.db"
DEFAULT_APPROVERS = ("alice", "bob")


def _names(value: Any) -> Any:
    """``alice, bob`` (from the environment) as names (``_stripped`` then cleans them)."""
    return tuple(value.split(",")) if isinstance(value, str) else value


def _thresholds(value: Any) -> Any:
    """``USD:1000,EUR:900`` (from the environment) as {currency: amount}."""
    if not isinstance(value, str):
        return value
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        currency, sep, amount = item.partition(":")
        if not sep or not currency.strip() or not amount.strip():
            raise ValueError(f"{item!r} is not CURRENCY:AMOUNT (e.g. USD:1000,EUR:900)")
        pairs[currency.strip()] = amount.strip()
    return pairs


def _layers(value: Any) -> Any:
    """``cache,ledger`` (from the environment) as a set of layer names."""
    if isinstance(value, str):
        return frozenset(name.strip().lower() for name in value.split(",") if name.strip())
    return value


class DatabaseSettings(Section):
    """The billing database: invoices, payments, tickets and the refund ledger."""

    env_prefix = "BILLING_RECON_DATABASE_"

    url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL), description="SQLAlchemy URL, e.g. "
        "postgresql://user:password@host:5432/billing or sqlite:///billing_recon.db; secret "
        "because it may hold a password.")

    @property
    def sqlalchemy_url(self) -> str:
        """The URL as SQLAlchemy takes it (never log it: see ``store.db.shown_url``)."""
        return self.url.get_secret_value()


class GatewaySettings(Section):
    """The payment gateway refunds go to, and the embedded local gateway."""

    env_prefix = "BILLING_RECON_GATEWAY_"

    url: str | None = Field(
        default=None, description="Base URL of a Stripe-compatible API, e.g. "
        "https://api.stripe.com; unset runs the embedded local gateway on 127.0.0.1.")
    stripe_api_key: Annotated[SecretStr | None, Env("BILLING_RECON_STRIPE_API_KEY")] = Field(
        default=None, description="Stripe secret key sent with every refund; unset sends the "
        "local gateway's key (BILLING_RECON_GATEWAY_API_KEY).")
    timeout_s: float = Field(default=10.0, gt=0,
                             description="Seconds to wait for one gateway answer.")
    retries: int = Field(default=2, ge=0, description="Network retries of one refund call "
                         "(connection errors, 409 key in flight, 5xx); the idempotency key "
                         "makes each one safe.")
    busy_wait_s: float = Field(default=30.0, ge=0, description="Seconds to wait out a key "
                               "another request holds (409) before giving up for now.")
    db: SecretStr = Field(
        default=SecretStr("sqlite:///billing_recon_gateway.db"), description="Database of "
        "the embedded local gateway (charges, refunds, idempotency keys); unused with a URL.")
    api_key: SecretStr | None = Field(
        default=None, description="Key the local gateway requires of its callers (embedded, "
        "or `python -m billing_recon.payments.gateway_server`); unset: a random `sk_local_` "
        "key created once in `gateway.key` under the home folder.")
    retention_h: float = Field(
        default=DEFAULT_RETENTION_S / 3600, ge=24, description="Hours the local gateway keeps "
        "idempotency keys (Stripe keeps them 24 h).")
    key_lease_s: float = Field(
        default=DEFAULT_LEASE_S, gt=0, description="Seconds before the local gateway lets "
        "a new request take over the in-flight key of a dead one.")
    faults: str | None = Field(
        default=None, description="Tests only: a fault plan for the local gateway (needs the "
        "source checkout's billing_recon.testing).")
    lifecycle: Lifecycle = Field(default_factory=Lifecycle, description="What the local "
                                 "gateway does with refunds after its first answer.")

    @property
    def db_url(self) -> str:
        """The local gateway's database URL, as SQLAlchemy takes it."""
        return self.db.get_secret_value()


class ApprovalSettings(Section):
    """Who may approve a refund, with which proof, and how long a proposal waits."""

    approvers: Annotated[tuple[str, ...], BeforeValidator(_names)] = Field(
        default=DEFAULT_APPROVERS, description="Names allowed to approve or reject a refund, "
        "comma-separated.")
    approval_timeout_s: Annotated[float, Env("BILLING_RECON_APPROVAL_TIMEOUT")] = Field(
        default=259_200.0, ge=0,
        description="Seconds a proposal waits for a decision before it is escalated (72 h).")
    require_code: bool = Field(
        default=False, description="Refuse any decision without a verified one-time code "
        "(production).")
    max_wrong_codes: int = Field(
        default=5, ge=1, description="Wrong one-time codes within the wrong-code window that "
        "lock an approver (administrators too) out until an administrator unlocks them "
        "(billing-recon approvers unlock).")
    wrong_code_window_s: float = Field(
        default=900.0, gt=0, description="Seconds over which wrong one-time codes are counted "
        "towards the lockout (15 min).")
    four_eyes: Annotated[dict[str, Annotated[Decimal, Field(ge=0)]],
                         BeforeValidator(_thresholds)] = Field(
        default_factory=dict, description="Per currency, the refund amount above which two "
        "different approvers are needed, e.g. USD:1000,EUR:900.")
    @field_validator("four_eyes")
    @classmethod
    def _upper(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        return {currency.strip().upper(): amount for currency, amount in value.items()}

    @field_validator("approvers")
    @classmethod
    def _stripped(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.strip() for name in value if name.strip())


class KeySettings(Section):
    """The keys that make approvals, never kept in a Prefect block.

    They sign approval tokens and proposals and seal the approvers' secrets. Anyone with the
    Prefect API credential can read a block's secrets, so these come only from each host's
    environment or key files."""

    signing_key: SecretStr | None = Field(
        default=None, description="HMAC key that signs approval tokens and proposals; every "
        "worker must share it. Unset: a random key in the file signing.key under "
        "BILLING_RECON_HOME, created once.")
    approver_key: SecretStr | None = Field(
        default=None, description="Key that seals approvers' one-time-code secrets in the "
        "database; every worker and CLI must share it. Unset: the file approvers.key under "
        "BILLING_RECON_HOME, created once.")


class OrchestrationSettings(Section):
    """How the flows run: block sets, deployments, pauses and the refund lease."""

    blocks: str | None = Field(
        default=None, description="Name of the block set the flows and the CLI load their "
        "settings from; unset: the environment (a deployment's run uses the set 'default' "
        "when it exists).")
    inbox_root: Path | None = Field(
        default=None, description="Folder a deployed run resolves relative inbox folders and "
        "email paths against (a worker starts every run in a new temporary folder); unset: "
        "the home folder (BILLING_RECON_HOME). Local runs resolve them against the working "
        "directory.")
    ticket_deployment: str = Field(
        default="process-ticket/process-ticket", description="The deployment that runs one "
        "ticket (flow-name/deployment-name), used by the inbox flow's fan-out.")
    suspend: bool = Field(
        default=True, description="A deployment's run waiting for approval suspends (frees "
        "its worker); false keeps it paused in-process.")
    batch_in_flight: int = Field(
        default=1, ge=1, le=16, description="Tickets a batch runs at once (each customer's "
        "still one after another, in arrival order). Above 1 only with a Prefect server on "
        "PostgreSQL and a PostgreSQL billing database: SQLite has one writer, and a "
        "SQLite-backed Prefect server answers concurrent runs with 503s and 2 s retries.")
    pause_poll_s: int = Field(default=2, ge=1, description="How often a paused run checks "
                              "for a decision, in whole seconds.")
    refund_lease_s: float = Field(
        default=300.0, gt=0, description="Seconds a dead refund worker can block its ticket's "
        "refund key before another takes over.")
    prefect_server: Literal["managed", "temporary"] = Field(
        default="managed", description="Without PREFECT_API_URL, which Prefect server the "
        "commands use. managed: one local server with its UI per home (under "
        "BILLING_RECON_HOME/prefect), started by the first command that needs it and left "
        "running with a local runner that executes resumed runs (`billing-recon server`); "
        "temporary: a server without UI that each command starts and stops (tests, CI).")
    prefect_port: int = Field(
        default=4200, ge=1, le=65535, description="Port of the managed Prefect server when it "
        "is free; else any free port (`billing-recon server status` shows it).")


class SwitchSettings(Section):
    """Tests only, never set in production: exactly-once layers off, a crash point armed."""

    layers_off: Annotated[frozenset[Layer], BeforeValidator(_layers)] = Field(
        default=frozenset(), description="Tests only: exactly-once layers switched off, "
        "comma-separated (e.g. cache,ledger), so the chaos suite proves each layer alone.")
    chaos_kill_at: str | None = Field(
        default=None, pattern=r"^[a-z_.]+(:[1-9][0-9]*)?$", description="Tests only: POINT[:N] "
        "kills the process (SIGKILL) the Nth time it passes POINT (the refund worker's "
        "refund.*, the mailbox's mailbox.before_flag, the outbox's outbox.*).")
