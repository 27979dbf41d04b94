"""model calls (replay, budgets) and an index for the global breaker

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import billing_recon.store.types


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('model_calls',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('agent', sa.String(length=32), nullable=False),
    sa.Column('input_hash', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('output', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('completion_tokens', sa.Integer(), nullable=False),
    sa.Column('usage_reported', sa.Boolean(), nullable=False),
    sa.Column('cost_usd', sa.Numeric(precision=18, scale=8), nullable=True),
    sa.Column('created_at', billing_recon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_model_calls_ticket_id_tickets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_calls')),
    sa.UniqueConstraint('ticket_id', 'agent', 'input_hash', name=op.f('uq_model_calls_ticket_id'))
    )
    with op.batch_alter_table('model_calls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_calls_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_calls_ticket_id'), ['ticket_id'], unique=False)

    with op.batch_alter_table('ticket_events', schema=None) as batch_op:
        batch_op.create_index('ix_ticket_events_to_state_at', ['to_state', 'at'], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('ticket_events', schema=None) as batch_op:
        batch_op.drop_index('ix_ticket_events_to_state_at')

    with op.batch_alter_table('model_calls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_calls_ticket_id'))
        batch_op.drop_index(batch_op.f('ix_model_calls_created_at'))

    op.drop_table('model_calls')
