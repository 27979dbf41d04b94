"""Alembic migrations (the path migrate() takes, no autogenerate) on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text

from billing_recon.store.db import _alembic_config, migrate
from billing_recon.store.models import Base


def _invoice_indexes(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {str(i["name"]) for i in sa.inspect(conn).get_indexes("invoices")}


def test_the_migrated_schema_is_exactly_what_the_models_declare(engine: Engine) -> None:
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_invoices_keep_only_the_customer_and_issued_index(engine: Engine) -> None:
    assert _invoice_indexes(engine) == {"ix_invoices_customer_issued"}


def test_revision_0004_downgrades_and_upgrades_again(engine: Engine) -> None:
    command.downgrade(_alembic_config(engine), "0003")
    assert "ix_invoices_customer_id" in _invoice_indexes(engine)
    migrate(engine)
    assert _invoice_indexes(engine) == {"ix_invoices_customer_issued"}


def test_a_customers_invoices_are_found_through_the_composite_index(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        plan_sql = "EXPLAIN QUERY PLAN SELECT * FROM invoices WHERE customer_id = 'C1'"
    else:
        plan_sql = "EXPLAIN SELECT * FROM invoices WHERE customer_id = 'C1'"
    with engine.begin() as conn:
        if engine.dialect.name != "sqlite":  # an empty table: make the planner show its index
            conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = " ".join(str(row) for row in conn.execute(text(plan_sql)))
    assert "ix_invoices_customer_issued" in plan


def test_revision_0006_downgrades_and_upgrades_again(engine: Engine) -> None:
    command.downgrade(_alembic_config(engine), "0005")
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        assert not inspector.has_table("spent_codes")
        assert "locked_at" not in {c["name"] for c in inspector.get_columns("approvers")}
    migrate(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_revision_0007_gives_recorded_refunds_the_succeeded_refund_status(engine: Engine) -> None:
    """Refunds recorded before refund statuses were the gateway's first answer: succeeded."""
    command.downgrade(_alembic_config(engine), "0006")
    with engine.begin() as conn:
        assert "status" not in {c["name"] for c in sa.inspect(conn).get_columns("refunds")}
        conn.execute(text("INSERT INTO customers VALUES ('C1', 'Ann', 'ann@x.test', 'USD', 0, "
                          "false)"))
        conn.execute(text("INSERT INTO invoices (invoice_id, customer_id, issued_at, currency, "
                          "subtotal, tax, total) VALUES ('INV-1', 'C1', '2026-03-01 09:00:00', "
                          "'USD', 10, 0, 10)"))
        conn.execute(text("INSERT INTO payments VALUES ('P1', 'INV-1', 'C1', 10, 'USD', "
                          "'2026-03-01 09:00:00', 'ch_1')"))
        conn.execute(text("INSERT INTO refunds (refund_id, payment_id, amount, currency, "
                          "refunded_at) VALUES ('re_1', 'P1', 5, 'USD', '2026-03-02 09:00:00')"))
    migrate(engine)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT status, failure_reason FROM refunds")).one()
        assert tuple(row) == ("succeeded", None)
        assert conn.execute(text("SELECT count(*) FROM webhook_events")).scalar() == 0
