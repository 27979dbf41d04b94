"""The local gateway's own storage: charges, refunds and idempotency keys, with Stripe semantics.

The gateway is a separate service with its own database (a SQLite file by default, PostgreSQL
works too). Tables carry a `gateway_` prefix so that pointing it at the billing database by
mistake cannot collide with the billing `refunds` table.

Idempotency follows Stripe: the first response for a key, success or error, is stored and
replayed for the same key and parameters; other parameters are a 400 `idempotency_error`; a key
whose first request is still running is a 409 `idempotency_key_in_use`. A request claims its key
with an INSERT on the primary key in its own short transaction (an IntegrityError means someone
else holds it); the refund row, the charge's `amount_refunded` and the key's stored response then
commit in one transaction, guarded by the claim token.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError

from billing_recon.payments import gateway_lifecycle
from billing_recon.payments.gateway_lifecycle import Lifecycle

DEFAULT_RETENTION_S = 24 * 3600.0
DEFAULT_LEASE_S = 60.0
MAX_KEY_LENGTH = 255
REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})

metadata = sa.MetaData()

charges = sa.Table(
    "gateway_charges",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_refunded", sa.BigInteger, nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
    # The database itself refuses a charge refunded below zero or beyond its amount.
    sa.CheckConstraint(
        "amount_refunded >= 0 AND amount_refunded <= amount", name="gateway_charges_refund_bounds"
    ),
)

refunds = sa.Table(
    "gateway_refunds",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("charge_id", sa.ForeignKey("gateway_charges.id"), nullable=False, index=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("reason", sa.String(64), nullable=True),
    sa.Column("metadata", sa.JSON, key="meta", nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
)

idempotency_keys = sa.Table(
    "gateway_idempotency_keys",
    metadata,
    sa.Column("key", sa.String(MAX_KEY_LENGTH), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # in_flight | done
    sa.Column("claim_token", sa.String(32), nullable=False),
    sa.Column("claimed_at", sa.Float, nullable=False),
    sa.Column("response_status", sa.Integer, nullable=True),
    sa.Column("response_body", sa.JSON, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
)


class ApiError(Exception):
    """A Stripe-shaped API error: HTTP status plus the `error` object's type, code and message."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        self.status, self.type, self.code, self.param = status, type_, code, param
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        """The JSON body Stripe sends for this error (absent fields left out, as Stripe does)."""
        error = {"type": self.type, "code": self.code, "param": self.param, "message": str(self)}
        return {"error": {k: v for k, v in error.items() if v is not None}}


@dataclass(frozen=True)
class StoredResponse:
    """An HTTP response the store produced, or replayed from an idempotency key."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


@dataclass(frozen=True)
class RefundParams:
    """A validated refund request: which charge (or PaymentIntent), how much, and labels."""

    source_id: str
    via_payment_intent: bool
    amount: int | None = None
    currency: str | None = None
    reason: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Claim:
    key: str
    token: str


def request_fingerprint(method: str, path: str, params: Sequence[tuple[str, str]]) -> str:
    """SHA-256 of method, path and the parameters in canonical (sorted) order."""
    canonical = json.dumps([method.upper(), path, sorted(params)], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def make_gateway_engine(url: str) -> Engine:
    """An engine for the gateway database; SQLite write transactions start with BEGIN IMMEDIATE.

    BEGIN IMMEDIATE takes SQLite's write lock up front (waiting on the busy timeout), so a
    read-then-write transaction can never fail half-way with SQLITE_BUSY on lock upgrade.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    if url in ("sqlite://", "sqlite:///") or ":memory:" in url:
        # Each pooled connection would get its own empty in-memory database.
        raise ValueError("the gateway needs a SQLite file (sqlite:///path), not :memory:")
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class GatewayStore:
    """Charges, refunds and idempotency keys of the local gateway, safe across threads and
    processes sharing one database."""

    def __init__(
        self,
        url: str,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        lease_s: float = DEFAULT_LEASE_S,
        clock: Callable[[], float] = time.time,
        lifecycle: Lifecycle | None = None,
    ) -> None:
        """Open (and create if needed) the gateway tables at `url`.

        `retention_s`: how long keys are kept (Stripe: at least 24 h). `lease_s`: after this long
        an in-flight key whose holder died may be taken over; the holder's late commit then fails.
        `lifecycle`: what happens to refunds after their first answer (gateway_lifecycle.py;
        default: every refund succeeds at once and stays so).
        """
        self.engine = make_gateway_engine(url)
        self.retention_s, self.lease_s, self.clock = retention_s, lease_s, clock
        self.lifecycle = lifecycle or Lifecycle()
        for tables in (metadata, gateway_lifecycle.metadata):
            try:
                tables.create_all(self.engine)
            except sa.exc.DBAPIError:
                # Another process created the tables between our check and our CREATE; now
                # they exist and the second pass only checks.
                tables.create_all(self.engine)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- charges ---------------------------------------------------------------------------

    def ensure_charge(
        self, charge_id: str, amount: int, currency: str, amount_refunded: int = 0
    ) -> dict[str, Any]:
        """Create the charge if it does not exist (an existing one is never changed); return it."""
        if amount <= 0 or not 0 <= amount_refunded <= amount:
            raise ValueError(f"bad charge amounts: amount={amount} refunded={amount_refunded}")
        row = {
            "id": charge_id,
            "amount": amount,
            "currency": currency.lower(),
            "amount_refunded": amount_refunded,
            "created": int(self.clock()),
        }
        try:
            with self._begin() as conn:
                conn.execute(charges.insert().values(**row))
        except IntegrityError:
            pass  # it exists already (perhaps created concurrently): keep it as it is
        charge = self.get_charge(charge_id)
        assert charge is not None
        return charge

    def get_charge(self, charge_id: str) -> dict[str, Any] | None:
        """The Stripe charge object, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(charges.select().where(charges.c.id == charge_id)).first()
        return None if row is None else _charge_object(row)

    # -- refunds ---------------------------------------------------------------------------

    def get_refund(self, refund_id: str) -> dict[str, Any] | None:
        """The Stripe refund object, or None."""
        found = self._refund_objects(refunds.c.id == refund_id)
        return found[0] if found else None

    def list_refunds(self, charge_id: str | None = None) -> list[dict[str, Any]]:
        """Refund objects, newest first, optionally of one charge (or PaymentIntent) only."""
        return self._refund_objects(None if charge_id is None
                                    else refunds.c.charge_id == charge_id)

    def get_refund_in(self, conn: Connection, refund_id: str) -> dict[str, Any]:
        """The refund object as ``conn``'s transaction sees it (it exists)."""
        return self._refund_objects(refunds.c.id == refund_id, conn)[0]

    def _refund_objects(self, where: sa.ColumnElement[bool] | None,
                        conn: Connection | None = None) -> list[dict[str, Any]]:
        if conn is None:
            with self.engine.connect() as own:
                return self._refund_objects(where, own)
        query = refunds.select().order_by(refunds.c.created.desc(), refunds.c.id.desc())
        rows = list(conn.execute(query if where is None else query.where(where)))
        planned = gateway_lifecycle.plan_fields(conn, [row.id for row in rows])
        return [_refund_object(row, planned.get(row.id)) for row in rows]

    def refund(
        self, params: RefundParams, *, idempotency_key: str | None, fingerprint: str
    ) -> StoredResponse:
        """Create a refund, honouring the idempotency key; raises ApiError for unstored errors.

        Errors that depend on stored state (unknown charge, too large, already refunded) are
        responses: they are stored under the key and replayed like a success.
        """
        if idempotency_key is None:
            return self._execute(params, None)
        self.purge_expired_keys()
        claimed = self.claim_key(idempotency_key, fingerprint)
        if isinstance(claimed, StoredResponse):
            return claimed
        return self._execute(params, _Claim(idempotency_key, claimed))

    def _execute(self, params: RefundParams, claim: _Claim | None) -> StoredResponse:
        try:
            with self._begin() as conn:
                try:
                    refund = self._create_refund(conn, params, claim.key if claim else None)
                    response = StoredResponse(200, refund)
                except ApiError as exc:
                    response = StoredResponse(exc.status, exc.body())
                if claim is not None:
                    self._finish(conn, claim, response)
            return response
        except BaseException:
            # Nothing committed: free the key so a retry can run the request again.
            if claim is not None:
                self._release(claim)
            raise

    def _create_refund(self, conn: Connection, params: RefundParams,
                       key: str | None) -> dict[str, Any]:
        charge = _locked_charge(conn, params)
        amount = _refund_amount(charge, params)
        guarded = (
            charges.update()
            .where(charges.c.id == charge.id)
            .where(charges.c.amount - charges.c.amount_refunded >= amount)
            .values(amount_refunded=charges.c.amount_refunded + amount)
        )
        if conn.execute(guarded).rowcount != 1:
            raise RuntimeError(f"charge {charge.id} changed under its row lock")
        refund_id, now = "re_" + secrets.token_hex(12), self.clock()
        plan = gateway_lifecycle.plan_for(key or refund_id, self.lifecycle, now)
        row = {
            "id": refund_id,
            "charge_id": charge.id,
            "amount": amount,
            "currency": charge.currency,
            "reason": params.reason,
            "meta": params.metadata,
            "status": plan.status.value,
            "created": int(now),
        }
        conn.execute(refunds.insert().values(**row))
        gateway_lifecycle.record_plan(conn, refund_id, plan)
        created = _refund_object(row, {"pending_reason": "processing"})
        gateway_lifecycle.publish(conn, ["refund.created"], created, now, self.lifecycle)
        return created

    # -- idempotency keys ------------------------------------------------------------------

    def claim_key(self, key: str, fingerprint: str) -> str | StoredResponse:
        """Claim `key` for a new request (returns a claim token) or replay its stored response.

        Raises ApiError 400 `idempotency_error` when the key was used with other parameters and
        409 `idempotency_key_in_use` while its first request is still running.
        """
        for _ in range(3):  # the holder may release the key between our INSERT and SELECT
            token = secrets.token_hex(16)
            if self._insert_key(key, fingerprint, token):
                return token
            row = self._load_key(key)
            if row is None:
                continue
            if row.fingerprint != fingerprint:
                raise _idempotency_mismatch(key)
            if row.state == "done":
                return StoredResponse(row.response_status, row.response_body, replayed=True)
            if self._take_over_stale(row, token):
                return token
            break
        raise ApiError(
            409,
            "invalid_request_error",
            "There is currently another in-progress request using this idempotency key. "
            "Please try again later.",
            code="idempotency_key_in_use",
        )

    def purge_expired_keys(self) -> int:
        """Delete keys older than the retention window; returns how many went."""
        cutoff = self.clock() - self.retention_s
        with self._begin() as conn:
            deleted = conn.execute(
                idempotency_keys.delete().where(idempotency_keys.c.created_at < cutoff)
            )
        return deleted.rowcount

    def _insert_key(self, key: str, fingerprint: str, token: str) -> bool:
        now = self.clock()
        row = {
            "key": key,
            "fingerprint": fingerprint,
            "state": "in_flight",
            "claim_token": token,
            "claimed_at": now,
            "created_at": now,
        }
        try:
            with self._begin() as conn:
                conn.execute(idempotency_keys.insert().values(**row))
        except IntegrityError:
            return False
        return True

    def _load_key(self, key: str) -> Row[Any] | None:
        with self.engine.connect() as conn:
            query = idempotency_keys.select().where(idempotency_keys.c.key == key)
            return conn.execute(query).first()

    def _take_over_stale(self, row: Row[Any], token: str) -> bool:
        """Take an in-flight key whose holder has not finished within the lease (it crashed)."""
        now = self.clock()
        if row.claimed_at > now - self.lease_s:
            return False
        with self._begin() as conn:
            taken = conn.execute(
                _key_held(row.key, row.claim_token).values(claim_token=token, claimed_at=now)
            )
        return taken.rowcount == 1

    def _finish(self, conn: Connection, claim: _Claim, response: StoredResponse) -> None:
        done = conn.execute(
            _key_held(claim.key, claim.token).values(
                state="done", response_status=response.status, response_body=response.body
            )
        )
        if done.rowcount != 1:
            # Our claim was taken over or purged: roll the whole refund back.
            raise ApiError(
                409,
                "invalid_request_error",
                "The idempotency key was taken over; retry.",
                code="idempotency_key_in_use",
            )

    def _release(self, claim: _Claim) -> None:
        with self._begin() as conn:
            conn.execute(
                idempotency_keys.delete()
                .where(idempotency_keys.c.key == claim.key)
                .where(idempotency_keys.c.claim_token == claim.token)
                .where(idempotency_keys.c.state == "in_flight")
            )


def _key_held(key: str, token: str) -> sa.Update:
    """An UPDATE of `key` that only applies while `token` still holds it in flight."""
    return (
        idempotency_keys.update()
        .where(idempotency_keys.c.key == key)
        .where(idempotency_keys.c.claim_token == token)
        .where(idempotency_keys.c.state == "in_flight")
    )


def _idempotency_mismatch(key: str) -> ApiError:
    return ApiError(
        400,
        "idempotency_error",
        f"Keys for idempotent requests can only be used with the same parameters they were "
        f"first used with. Try using a key other than '{key}' if you meant to execute a "
        f"different request.",
    )


def _locked_charge(conn: Connection, params: RefundParams) -> Row[Any]:
    """The charge row, locked for update; a `pi_` id is only reachable as a PaymentIntent."""
    kind = "payment_intent" if params.via_payment_intent else "charge"
    if params.source_id.startswith("pi_") == params.via_payment_intent:
        query = charges.select().where(charges.c.id == params.source_id).with_for_update()
        row = conn.execute(query).first()
        if row is not None:
            return row
    raise ApiError(
        404,
        "invalid_request_error",
        f"No such {kind}: '{params.source_id}'",
        code="resource_missing",
        param=kind,
    )


def _refund_amount(charge: Row[Any], params: RefundParams) -> int:
    """The amount to refund: the request's, or everything that remains; checked against it."""
    if params.currency is not None and params.currency != charge.currency:
        raise ApiError(
            400,
            "invalid_request_error",
            f"Currency {params.currency} does not match the charge's currency {charge.currency}.",
            code="currency_mismatch",
            param="currency",
        )
    remaining = charge.amount - charge.amount_refunded
    if remaining <= 0:
        raise ApiError(
            400,
            "invalid_request_error",
            f"Charge {charge.id} has already been refunded.",
            code="charge_already_refunded",
        )
    amount = remaining if params.amount is None else params.amount
    if amount > remaining:
        raise ApiError(
            400,
            "invalid_request_error",
            f"Refund amount ({amount} {charge.currency}) is greater than unrefunded amount on "
            f"charge ({remaining} {charge.currency}).",
            code="amount_too_large",
            param="amount",
        )
    return amount


def _charge_object(row: Row[Any]) -> dict[str, Any]:
    is_pi = row.id.startswith("pi_")
    return {
        "id": row.id,
        "object": "payment_intent" if is_pi else "charge",
        "amount": row.amount,
        "amount_refunded": row.amount_refunded,
        "currency": row.currency,
        "refunded": row.amount_refunded >= row.amount,
        "created": row.created,
    }


def _refund_object(row: Row[Any] | dict[str, Any],
                   planned: dict[str, Any] | None = None) -> dict[str, Any]:
    """Stripe's refund object; ``planned``: its plan's fields (gateway_lifecycle.py)."""
    r = row if isinstance(row, dict) else row._mapping
    is_pi = r["charge_id"].startswith("pi_")
    planned = planned or {}
    return {
        "id": r["id"],
        "object": "refund",
        "amount": r["amount"],
        "currency": r["currency"],
        "charge": None if is_pi else r["charge_id"],
        "payment_intent": r["charge_id"] if is_pi else None,
        "metadata": dict(r["meta"]),
        "reason": r["reason"],
        "status": r["status"],
        "created": r["created"],
        "pending_reason": planned.get("pending_reason") if r["status"] == "pending" else None,
        "failure_reason": planned.get("failure_reason") if r["status"] == "failed" else None,
        "failure_balance_transaction": planned.get("failure_balance_transaction"),
    }
