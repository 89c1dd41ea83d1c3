"""agent queue memberships (restricted agents)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agent_queues',
    sa.Column('agent_id', sa.Integer(), nullable=False),
    sa.Column('queue_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ),
    sa.ForeignKeyConstraint(['queue_id'], ['queues.id'], ),
    sa.PrimaryKeyConstraint('agent_id', 'queue_id')
    )
    with op.batch_alter_table('agent_queues', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_queues_queue_id'), ['queue_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('agent_queues', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_queues_queue_id'))
    op.drop_table('agent_queues')
