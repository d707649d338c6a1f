"""A SqliteHuey instance with one no-op task, for `huey_consumer bench.peer_apps.huey_app.huey`.

The database file comes from BENCH_HUEY_FILE. SqliteHuey offers
fsync=True (PRAGMA synchronous=FULL) or fsync=False (OFF), and leaves
SQLite's compiled-in default, FULL, when fsync is not given (huey 3.5.4,
huey/storage.py). Taskboard runs SQLite in WAL mode with synchronous=NORMAL,
so the storage below sets NORMAL on every connection it opens, after huey's
own pragmas; both then fsync the WAL only at checkpoints.
"""

import os

from huey import SqliteHuey
from huey.storage import SqliteStorage


class NormalSyncSqliteStorage(SqliteStorage):
    """SqliteHuey's storage in WAL mode with PRAGMA synchronous=NORMAL, as Taskboard uses."""

    def _create_connection(self):
        connection = super()._create_connection()
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection


class NormalSyncSqliteHuey(SqliteHuey):
    storage_class = NormalSyncSqliteStorage


huey = NormalSyncSqliteHuey(
    "bench",
    filename=os.environ.get("BENCH_HUEY_FILE", "huey-bench.db"),
    journal_mode="wal",
)


@huey.task()
def noop():
    # Returning a value makes huey store a result row, which is how the
    # benchmark counts finished tasks across processes (None is not stored).
    return 1
