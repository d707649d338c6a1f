"""Add indexes for the tasks page's sorts and filters, and the event log's level filter

Revision ID: 0005
Revises: 0004

"""
from alembic import op
import sqlalchemy as sa

from app.tasks.expressions import TASK_DURATION_SQL


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    duration = sa.text(TASK_DURATION_SQL[op.get_bind().dialect.name])
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_started_at_id', ['started_at', 'id'], unique=False)
        batch_op.create_index('ix_tasks_finished_at_id', ['finished_at', 'id'], unique=False)
        batch_op.create_index('ix_tasks_duration', [duration, 'id'], unique=False)
        batch_op.create_index(
            'ix_tasks_status_created_at', ['status', 'created_at', 'id'], unique=False)
        batch_op.create_index(
            'ix_tasks_type_created_at', ['type', 'created_at', 'id'], unique=False)
        batch_op.create_index(
            'ix_tasks_queue_created_at', ['queue', 'created_at', 'id'], unique=False)
        batch_op.create_index(
            'ix_tasks_status_started_at', ['status', 'started_at', 'id'], unique=False)
        batch_op.create_index(
            'ix_tasks_status_finished_at', ['status', 'finished_at', 'id'], unique=False)
        batch_op.create_index(
            'ix_tasks_status_duration', ['status', duration, 'id'], unique=False)
        batch_op.create_index(
            'ix_tasks_type_finished_at', ['type', 'finished_at', 'id'], unique=False)
        batch_op.create_index('ix_tasks_type_duration', ['type', duration, 'id'], unique=False)
    with op.batch_alter_table('task_events', schema=None) as batch_op:
        batch_op.create_index('ix_task_events_level_id', ['level', 'id'], unique=False)


def downgrade():
    with op.batch_alter_table('task_events', schema=None) as batch_op:
        batch_op.drop_index('ix_task_events_level_id')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_type_duration')
        batch_op.drop_index('ix_tasks_type_finished_at')
        batch_op.drop_index('ix_tasks_status_duration')
        batch_op.drop_index('ix_tasks_status_finished_at')
        batch_op.drop_index('ix_tasks_status_started_at')
        batch_op.drop_index('ix_tasks_queue_created_at')
        batch_op.drop_index('ix_tasks_type_created_at')
        batch_op.drop_index('ix_tasks_status_created_at')
        batch_op.drop_index('ix_tasks_duration')
        batch_op.drop_index('ix_tasks_finished_at_id')
        batch_op.drop_index('ix_tasks_started_at_id')
