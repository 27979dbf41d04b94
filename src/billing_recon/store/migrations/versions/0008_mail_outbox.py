"""mail: the outbox (replies and approver notices sent exactly once) and each mailbox
folder's last UIDVALIDITY

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import billing_recon.store.types

revision = '0008'
# Renumbered at merge if another branch adds a 0008.
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision (new tables only: nothing is queued for tickets closed before)."""
    op.create_table('outbox',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.String(length=300), nullable=False),
    sa.Column('recipients', sa.JSON(), nullable=False),
    sa.Column('message', billing_recon.store.types.EmailBytes(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=True),
    sa.Column('lease_until', billing_recon.store.types.UTCDateTime(timezone=True),
              nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', billing_recon.store.types.UTCDateTime(timezone=True),
              nullable=False),
    sa.Column('sent_at', billing_recon.store.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'],
                            name=op.f('fk_outbox_ticket_id_tickets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('key', name=op.f('uq_outbox_key'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbox_ticket_id'), ['ticket_id'], unique=False)
    op.create_table('mailbox_folders',
    sa.Column('folder', sa.String(length=300), nullable=False),
    sa.Column('uidvalidity', sa.BigInteger(), nullable=False),
    sa.Column('seen_at', billing_recon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('folder', name=op.f('pk_mailbox_folders'))
    )


def downgrade() -> None:
    """Revert this revision (queued and sent messages are forgotten)."""
    op.drop_table('mailbox_folders')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_ticket_id'))
        batch_op.drop_index(batch_op.f('ix_outbox_status'))
    op.drop_table('outbox')
