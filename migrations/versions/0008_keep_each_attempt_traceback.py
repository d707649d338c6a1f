"""Keep the traceback of each failed attempt on the event that ends it

Revision ID: 0008
Revises: 0007

The task row holds only the last traceback, so the task page could show
the traceback of the latest failed attempt alone. The event that ends a
failed attempt (retry scheduled, failed, or cancelled while running) now
carries the traceback of that attempt. The column is nullable, so adding it
rewrites no rows on either database.

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('task_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('traceback', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('task_events', schema=None) as batch_op:
        batch_op.drop_column('traceback')
