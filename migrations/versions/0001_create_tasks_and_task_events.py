"""Create tasks and task events

Revision ID: 0001
Revises: 

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('tasks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('type', sa.String(length=100), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('queue', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('timeout_seconds', sa.Float(), nullable=False),
    sa.Column('progress', sa.Integer(), nullable=False),
    sa.Column('progress_message', sa.String(length=200), nullable=True),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('locked_by', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('result', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_traceback', sa.Text(), nullable=True),
    sa.CheckConstraint("(status = 'PROCESSING' AND locked_by IS NOT NULL AND lease_expires_at IS NOT NULL) OR (status <> 'PROCESSING' AND locked_by IS NULL AND lease_expires_at IS NULL)", name=op.f('ck_tasks_lease_only_processing')),
    sa.CheckConstraint("(status IN ('CANCELLED', 'FAILED', 'SUCCEEDED') AND finished_at IS NOT NULL) OR (NOT status IN ('CANCELLED', 'FAILED', 'SUCCEEDED') AND finished_at IS NULL)", name=op.f('ck_tasks_finished_only_terminal')),
    sa.CheckConstraint("result IS NULL OR status = 'SUCCEEDED'", name=op.f('ck_tasks_result_only_succeeded')),
    sa.CheckConstraint("status IN ('CANCELLED', 'FAILED', 'PENDING', 'PROCESSING', 'RETRYING', 'SUCCEEDED')", name=op.f('ck_tasks_status_valid')),
    sa.CheckConstraint('(started_at IS NULL OR started_at >= created_at) AND (finished_at IS NULL OR finished_at >= created_at) AND (finished_at IS NULL OR started_at IS NULL OR finished_at >= started_at)', name=op.f('ck_tasks_timestamps_ordered')),
    sa.CheckConstraint('attempts >= 0 AND max_attempts >= 1 AND max_attempts <= 100 AND attempts <= max_attempts', name=op.f('ck_tasks_attempts_range')),
    sa.CheckConstraint('priority >= -100 AND priority <= 100', name=op.f('ck_tasks_priority_range')),
    sa.CheckConstraint('progress >= 0 AND progress <= 100', name=op.f('ck_tasks_progress_range')),
    sa.CheckConstraint('timeout_seconds > 0', name=op.f('ck_tasks_timeout_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_tasks_idempotency_key'))
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_claim', ['status', 'run_at', 'priority'], unique=False)
        batch_op.create_index('ix_tasks_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_tasks_lease_expires_at', ['lease_expires_at'], unique=False)
        batch_op.create_index('ix_tasks_type', ['type'], unique=False)

    op.create_table('task_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('task_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('level', sa.String(length=10), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('worker_id', sa.String(length=200), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('cancelled', 'failed', 'lease_expired', 'log', 'requeued', 'retry_scheduled', 'started', 'submitted', 'succeeded')", name=op.f('ck_task_events_kind_valid')),
    sa.CheckConstraint("level IN ('debug', 'error', 'info', 'warning')", name=op.f('ck_task_events_level_valid')),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_task_events_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_events'))
    )
    with op.batch_alter_table('task_events', schema=None) as batch_op:
        batch_op.create_index('ix_task_events_kind_id', ['kind', 'id'], unique=False)
        batch_op.create_index('ix_task_events_task_id_id', ['task_id', 'id'], unique=False)



def downgrade():
    with op.batch_alter_table('task_events', schema=None) as batch_op:
        batch_op.drop_index('ix_task_events_task_id_id')
        batch_op.drop_index('ix_task_events_kind_id')

    op.drop_table('task_events')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_type')
        batch_op.drop_index('ix_tasks_lease_expires_at')
        batch_op.drop_index('ix_tasks_created_at')
        batch_op.drop_index('ix_tasks_claim')

    op.drop_table('tasks')
