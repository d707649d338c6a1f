"""Index tasks by status in id order, for the dashboard's status filter

Revision ID: 0007
Revises: 0005

The dashboard table, its htmx partial and GET /api/tasks list tasks newest
first by id, and filter by status. Without this index SQLite reads every
task of the status through ix_tasks_status_created_at and sorts them, which
took 0.4 to 0.7 s for the 58,000 FAILED tasks of the page benchmark's seed
(bench/pages.py on 2 shared cores). With it, a page reads 51 index entries.

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_status_id', ['status', 'id'], unique=False)


def downgrade():
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_status_id')
