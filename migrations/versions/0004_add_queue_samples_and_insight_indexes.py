"""Add queue depth samples, and indexes for the queues page and charts

Revision ID: 0004
Revises: 0003

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

WAITING = sa.text("status IN ('PENDING', 'RETRYING')")


def upgrade():
    op.create_table('queue_samples',
    sa.Column('sampled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('queue', sa.String(length=100), nullable=False),
    sa.Column('waiting', sa.Integer(), nullable=False),
    sa.Column('processing', sa.Integer(), nullable=False),
    sa.CheckConstraint('waiting >= 0 AND processing >= 0', name=op.f('ck_queue_samples_counts_not_negative')),
    sa.PrimaryKeyConstraint('sampled_at', 'queue', name=op.f('pk_queue_samples'))
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_status_queue', ['status', 'queue'], unique=False)
        batch_op.create_index(
            'ix_tasks_queue_waiting', ['queue', 'run_at'], unique=False,
            postgresql_where=WAITING, sqlite_where=WAITING)
        batch_op.create_index('ix_tasks_finished_at', ['finished_at', 'status', 'queue'], unique=False)


def downgrade():
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_finished_at')
        batch_op.drop_index('ix_tasks_queue_waiting', postgresql_where=WAITING, sqlite_where=WAITING)
        batch_op.drop_index('ix_tasks_status_queue')

    op.drop_table('queue_samples')
