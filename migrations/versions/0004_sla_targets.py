"""recorded SLA target outcomes (met / breached instants)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ticket_sla_targets',
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('target', sa.String(length=16), nullable=False),
    sa.Column('cycle', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('policy', sa.String(length=100), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('target_minutes', sa.Float(), nullable=False),
    sa.Column('business_minutes', sa.Float(), server_default='0', nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('due_at', sa.DateTime(), nullable=True),
    sa.Column('met_at', sa.DateTime(), nullable=True),
    sa.Column('breached_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], ),
    sa.PrimaryKeyConstraint('ticket_id', 'target', 'cycle'),
    sqlite_with_rowid=False,
    )
    with op.batch_alter_table('ticket_sla_targets', schema=None) as batch_op:
        batch_op.create_index('ix_ticket_sla_targets_running_due', ['due_at'], unique=False,
                              sqlite_where=sa.text("state = 'running'"), postgresql_where=sa.text("state = 'running'"))


def downgrade() -> None:
    with op.batch_alter_table('ticket_sla_targets', schema=None) as batch_op:
        batch_op.drop_index('ix_ticket_sla_targets_running_due')
    op.drop_table('ticket_sla_targets')
