"""drop ix_invoices_customer_id: ix_invoices_customer_issued (customer_id, issued_at) serves it

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision.

    The single-column index is a prefix of the composite one: every lookup of a customer's
    invoices can use the composite index (docs/benchmarks.md, section 4), and each inserted
    invoice no longer updates two indexes on the same column.
    """
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.drop_index('ix_invoices_customer_id')


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.create_index('ix_invoices_customer_id', ['customer_id'], unique=False)
