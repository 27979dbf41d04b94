"""approver lockouts (approvers.locked_at) and spent_codes: a code counts once per approver

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import billing_recon.store.types

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision.

    Roles need no schema change (``approvers.role`` already holds approver/demo; ``admin`` is
    new). Nobody is an administrator after it: `billing-recon approvers bootstrap-admin`
    enrolls the first one.
    """
    with op.batch_alter_table('approvers', schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            'locked_at', billing_recon.store.types.UTCDateTime(timezone=True), nullable=True))
    op.create_table('spent_codes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('approver', sa.String(length=200), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('spent_at', billing_recon.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_spent_codes')),
    sa.UniqueConstraint('approver', 'step', name=op.f('uq_spent_codes_approver'))
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table('spent_codes')
    with op.batch_alter_table('approvers', schema=None) as batch_op:
        batch_op.drop_column('locked_at')
