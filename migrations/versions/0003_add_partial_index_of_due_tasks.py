"""Add a partial index of due tasks, in claim order

Revision ID: 0003
Revises: 0002

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

WAITING = sa.text("status IN ('PENDING', 'RETRYING')")


def upgrade():
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index(
            'ix_tasks_due', [sa.text('priority DESC'), 'run_at', 'id'], unique=False,
            postgresql_where=WAITING, sqlite_where=WAITING)


def downgrade():
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_due', postgresql_where=WAITING, sqlite_where=WAITING)
