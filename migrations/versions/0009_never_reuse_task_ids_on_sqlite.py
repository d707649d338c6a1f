"""Never reuse a deleted task's id on SQLite

Revision ID: 0009
Revises: 0008

SQLite gives a new row of an INTEGER PRIMARY KEY the largest id plus one,
so once the newest tasks were deleted, the next task took one of their ids,
and a bookmarked task page or an API client's id pointed at another task.
With AUTOINCREMENT, SQLite keeps the largest id ever used in sqlite_sequence
instead. PostgreSQL's sequences never hand out an id twice, so this changes
nothing there.

SQLite cannot add AUTOINCREMENT to a table, so the table is rebuilt: a copy
with the new definition, the rows, then the indexes as they were. Foreign
keys are switched off meanwhile, because dropping the old table would
otherwise delete every event through ON DELETE CASCADE, and that switch
only takes effect outside a transaction.

"""
import re

from alembic import op


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

PRIMARY_KEY_COLUMN = "id INTEGER NOT NULL"
# After a rebuild SQLite keeps the name as written in the RENAME: quoted.
TABLE_NAME = re.compile(r'CREATE TABLE "?tasks"?')
TABLE_PRIMARY_KEY = re.compile(r",\s*CONSTRAINT pk_tasks PRIMARY KEY \(id\)")


def upgrade():
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_tasks(autoincrement=True)


def downgrade():
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_tasks(autoincrement=False)


def _rebuild_tasks(*, autoincrement: bool):
    connection = op.get_bind()
    table_sql = connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tasks'").scalar_one()
    index_sqls = [row[0] for row in connection.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks' "
        "AND sql IS NOT NULL ORDER BY name")]

    if autoincrement:
        if "AUTOINCREMENT" in table_sql:
            return
        if PRIMARY_KEY_COLUMN not in table_sql or not TABLE_PRIMARY_KEY.search(table_sql):
            raise RuntimeError("unexpected definition of table tasks; cannot add AUTOINCREMENT")
        new_sql = TABLE_PRIMARY_KEY.sub("", table_sql, count=1).replace(
            PRIMARY_KEY_COLUMN, f"{PRIMARY_KEY_COLUMN} PRIMARY KEY AUTOINCREMENT", 1)
    else:
        if "AUTOINCREMENT" not in table_sql:
            return
        new_sql = table_sql.replace(f"{PRIMARY_KEY_COLUMN} PRIMARY KEY AUTOINCREMENT",
                                    PRIMARY_KEY_COLUMN, 1)
        # Table constraints follow the columns: the key goes before the first.
        first = new_sql.index(", \n\tCONSTRAINT ")
        new_sql = f"{new_sql[:first]}, \n\tCONSTRAINT pk_tasks PRIMARY KEY (id){new_sql[first:]}"
    new_sql = TABLE_NAME.sub("CREATE TABLE _rebuild_tasks", new_sql, count=1)

    # Leave the migration's transaction, switch foreign keys off, and do the
    # rebuild in a transaction of its own; Alembic commits it with the
    # version number at the end.
    connection.exec_driver_sql("COMMIT")
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        connection.exec_driver_sql(new_sql)
        connection.exec_driver_sql("INSERT INTO _rebuild_tasks SELECT * FROM tasks")
        connection.exec_driver_sql("DROP TABLE tasks")
        connection.exec_driver_sql("ALTER TABLE _rebuild_tasks RENAME TO tasks")
        for index_sql in index_sqls:
            connection.exec_driver_sql(index_sql)
        problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if problems:
            raise RuntimeError(f"foreign keys broken by the rebuild of tasks: {problems[:5]}")
    except Exception:
        connection.exec_driver_sql("ROLLBACK")
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.exec_driver_sql("BEGIN")
        raise
    connection.exec_driver_sql("COMMIT")
    connection.exec_driver_sql("PRAGMA foreign_keys=ON")
    connection.exec_driver_sql("BEGIN")
