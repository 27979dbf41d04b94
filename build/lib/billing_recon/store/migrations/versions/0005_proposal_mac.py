"""tickets.proposal_mac (the keyed seal of the proposal) and ix_tickets_customer_id

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision.

    Proposals made before it have no MAC: the approval gate and the refund worker refuse
    them, so such a ticket must be re-opened (re-analysed) to be approved.
    The index serves the lookup of a customer's other live tickets (store/commitments.py).
    """
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('proposal_mac', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_tickets_customer_id'), ['customer_id'],
                              unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tickets_customer_id'))
        batch_op.drop_column('proposal_mac')
