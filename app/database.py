"""Engine settings per database: SQLite pragmas and write transactions."""

import fcntl
import logging
import os
import time

from sqlalchemy import event
from sqlalchemy.engine import Engine


log = logging.getLogger(__name__)

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
    path = engine.url.database
    lock_path = f"{path}-writelock" if path and path != ":memory:" else None
    # The write locks taken now, by id of the DBAPI connection whose transaction has them.
    held_locks: dict[int, WriteLock] = {}

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_seconds * 1000)}")
        cursor.close()
        if lock_path is not None:
            connection_record.info["write_lock"] = WriteLock(lock_path, busy_timeout_seconds)

    @event.listens_for(engine, "close")
    def on_close(dbapi_connection, connection_record):
        held_locks.pop(id(dbapi_connection), None)
        lock = connection_record.info.pop("write_lock", None)
        if lock is not None:
            lock.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection):
        if not connection.get_execution_options().get("taskboard_write"):
            connection.exec_driver_sql("BEGIN")
            return
        proxied = connection.connection
        lock = proxied.info.get("write_lock")
        if lock is not None and lock.acquire():
            held_locks[id(proxied.dbapi_connection)] = lock
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(proxied)
            raise

    def _release(proxied) -> None:
        lock = held_locks.pop(id(proxied.dbapi_connection), None)
        if lock is not None:
            lock.release()

    # The engine's "commit" and "rollback" events fire before the database
    # ends the transaction. The lock is released after, or the next writer
    # would find SQLite still locked and sleep in its busy handler.
    dialect = engine.dialect
    do_commit, do_rollback = dialect.do_commit, dialect.do_rollback

    def commit_then_release(proxied) -> None:
        try:
            do_commit(proxied)
        finally:
            _release(proxied)

    def rollback_then_release(proxied) -> None:
        try:
            do_rollback(proxied)
        finally:
            _release(proxied)

    dialect.do_commit = commit_then_release
    dialect.do_rollback = rollback_then_release


class WriteLock:
    """A lock file that Taskboard's SQLite writers take in turn, across threads and processes.

    SQLite's busy handler sleeps between tries, for up to 100 ms at a time,
    so a waiting writer often sleeps through the moment the database frees,
    and under steady load one process can starve the others. Writers that
    queue on this lock instead get the database as soon as the last one
    commits. The lock is an flock on a file beside the database, one open
    file per connection, so threads of one process also take turns, and the
    kernel drops it when a process dies. A writer waits at most the busy
    timeout and then goes on to BEGIN IMMEDIATE, whose own timeout applies.
    A writer that cannot open the lock file goes straight on. Writers outside
    Taskboard (the sqlite3 shell, another program) ignore the lock and meet
    SQLite's own locking as before.
    """

    # Pauses between tries while another connection has the lock. They are
    # short because a write transaction lasts a few milliseconds.
    FIRST_PAUSE = 0.0001
    MAX_PAUSE = 0.001

    def __init__(self, path: str, timeout: float):
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None
        self._unusable = False

    def acquire(self) -> bool:
        """Take the lock, waiting up to the timeout, and return whether it was taken."""
        if self._fd is None:
            if self._unusable:
                return False
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                log.warning("Failed to open the SQLite write lock %s (%s): writers wait on "
                            "SQLite's busy timeout instead. Check that the folder is writable.",
                            self.path, error)
                self._unusable = True
                return False
        if self._try():
            return True
        deadline = time.monotonic() + self.timeout
        pause = self.FIRST_PAUSE
        while time.monotonic() < deadline:
            time.sleep(pause)
            if self._try():
                return True
            pause = min(pause * 2, self.MAX_PAUSE)
        return False

    def _try(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
