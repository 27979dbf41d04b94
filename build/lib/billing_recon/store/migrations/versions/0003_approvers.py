"""approver registry, its audit and used one-time codes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import billing_recon.store.types


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('approver_audit',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('approver', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('at', billing_recon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_approver_audit'))
    )
    with op.batch_alter_table('approver_audit', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_approver_audit_approver'), ['approver'], unique=False)

    op.create_table('approvers',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('secret_sealed', sa.Text(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', billing_recon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_approvers')),
    sa.UniqueConstraint('name', name=op.f('uq_approvers_name'))
    )
    op.create_table('used_codes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('approver', sa.String(length=200), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('used_at', billing_recon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_used_codes_ticket_id_tickets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_used_codes')),
    sa.UniqueConstraint('approver', 'ticket_id', 'step', name=op.f('uq_used_codes_approver'))
    )
    with op.batch_alter_table('used_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_used_codes_ticket_id'), ['ticket_id'], unique=False)



def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('used_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_used_codes_ticket_id'))

    op.drop_table('used_codes')
    op.drop_table('approvers')
    with op.batch_alter_table('approver_audit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_approver_audit_approver'))

    op.drop_table('approver_audit')
