"""refund status (Stripe's lifecycle) in the ledger, and the webhook events received

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import billing_recon.store.types


revision = '0007'
# Re-pointed to 0006 (approver admin) when both branches are merged.
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision.

    Refunds recorded before it were reported ``succeeded`` by the gateway's first answer:
    they keep that status, and the sweep (`billing-recon refunds sync`) re-reads those still
    within the late-failure window.
    """
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=24),
                                      server_default='succeeded', nullable=False))
        batch_op.add_column(sa.Column('failure_reason', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column(
            'status_at', billing_recon.store.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column(
            'failure_escalated_at', billing_recon.store.types.UTCDateTime(timezone=True),
            nullable=True))
        batch_op.create_index(batch_op.f('ix_refunds_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_refunds_gateway_refund_id'), ['gateway_refund_id'],
                              unique=False)
    op.create_table('webhook_events',
    sa.Column('event_id', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('refund_id', sa.String(length=128), nullable=True),
    sa.Column('received_at', billing_recon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('processed_at', billing_recon.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_webhook_events'))
    )
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_events_processed_at'), ['processed_at'],
                              unique=False)


def downgrade() -> None:
    """Revert this revision (the statuses and the received events are dropped)."""
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_events_processed_at'))
    op.drop_table('webhook_events')
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refunds_gateway_refund_id'))
        batch_op.drop_index(batch_op.f('ix_refunds_status'))
        batch_op.drop_column('failure_escalated_at')
        batch_op.drop_column('status_at')
        batch_op.drop_column('failure_reason')
        batch_op.drop_column('status')
