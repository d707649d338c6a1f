"""Engine settings per database: SQLite pragmas and write transactions."""

from sqlalchemy import event
from sqlalchemy.engine import Engine


SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def configure_engine(engine: Engine, *, busy_timeout_seconds: float, synchronous: str) -> None:
    """Apply the settings Taskboard needs on `engine`'s database."""
    if engine.dialect.name == "sqlite":
        synchronous = str(synchronous).upper()
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"SQLITE_SYNCHRONOUS is {synchronous!r}; use one of {', '.join(SYNCHRONOUS_MODES)}"
            )
        _configure_sqlite(engine, busy_timeout_seconds, synchronous)


def _configure_sqlite(engine: Engine, busy_timeout_seconds: float, synchronous: str) -> None:
    # pysqlite opens transactions on its own schedule; taking that over lets a
    # write transaction begin with BEGIN IMMEDIATE. A deferred transaction that
    # reads and then writes fails at once with "database is locked" when
    # another writer got in between, whatever the busy timeout.

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_seconds * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection):
        if connection.get_execution_options().get("taskboard_write"):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


# Indexes whose sort order Alembic's autogenerate cannot compare with the
# database: it reflects "priority DESC" as a plain column and would report
# the index as changed on every run. Migrations create them by hand, and
# tests/test_migrations.py checks that they exist.
INDEXES_AUTOGENERATE_SKIPS = frozenset({"ix_tasks_due"})

# Indexes on an expression. SQLAlchemy does not reflect them from SQLite (it
# warns and leaves them out), so autogenerate would report them as missing.
# Migration 0005 creates them by hand.
EXPRESSION_INDEXES = frozenset(
    {"ix_tasks_duration", "ix_tasks_status_duration", "ix_tasks_type_duration"})


def include_in_autogenerate(object_, name, type_, reflected, compare_to) -> bool:
    """Alembic's include_object hook: leave out indexes it cannot compare."""
    return not (type_ == "index" and name in INDEXES_AUTOGENERATE_SKIPS | EXPRESSION_INDEXES)
