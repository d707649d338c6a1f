"""The database's own ceiling: Taskboard's statements in plain SQL on one connection.

Each task costs what Taskboard's queue operations issue, without Flask,
SQLAlchemy or threads: a submit transaction (INSERT of the task, INSERT of
its submitted event), a claim transaction (UPDATE ... RETURNING of one due
task, INSERT of its started event) and a completion transaction (guarded
UPDATE to SUCCEEDED, INSERT of its succeeded event). The tables are the ones
Taskboard's migrations create, with their indexes and CHECK constraints, and
SQLite runs in WAL mode with synchronous=NORMAL and BEGIN IMMEDIATE, as
Taskboard does.
"""

import sqlite3
import time
from datetime import UTC, datetime, timedelta

import psycopg

from .common import Database

WORKER_ID = "raw-sql-bench"
LEASE = timedelta(seconds=30)

SUBMIT_TASK = """
    INSERT INTO tasks (type, params, queue, status, priority, attempts, max_attempts,
                       timeout_seconds, progress, cancel_requested, created_at, run_at)
    VALUES ('noop', '{}', 'default', 'PENDING', 0, 0, 3, 300, 0, false, {now}, {now})
    RETURNING id
"""

INSERT_EVENT = """
    INSERT INTO task_events (task_id, kind, level, attempt, worker_id, message, created_at)
    VALUES ({p}, {p}, 'info', {p}, {p}, {p}, {p})
"""

CLAIM = """
    UPDATE tasks SET status = 'PROCESSING', attempts = attempts + 1, locked_by = {p},
                     lease_expires_at = {p}, started_at = {p}, progress = 0,
                     progress_message = NULL
    WHERE id IN (
        SELECT id FROM tasks
        WHERE status IN ('PENDING', 'RETRYING') AND run_at <= {p}
        ORDER BY priority DESC, run_at, id
        LIMIT 1 {lock}
    ) AND status IN ('PENDING', 'RETRYING')
    RETURNING id, type, params, attempts, max_attempts, timeout_seconds, priority, run_at
"""

SUCCEED = """
    UPDATE tasks SET status = 'SUCCEEDED', result = NULL, finished_at = {p}, locked_by = NULL,
                     lease_expires_at = NULL, progress = 100
    WHERE id = {p} AND status = 'PROCESSING' AND locked_by = {p} AND attempts = {p}
"""


def _sqlite_time(value: datetime) -> str:
    # The naive UTC text that SQLAlchemy's SQLite DateTime writes for Taskboard.
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


class _Dialect:
    """Placeholders, lock clause, timestamp form and transaction start of one database."""

    def __init__(self, kind: str, connection):
        self.kind = kind
        self.connection = connection
        sqlite = kind == "sqlite"
        self.placeholder = "?" if sqlite else "%s"
        self.lock = "" if sqlite else "FOR UPDATE SKIP LOCKED"
        self.begin = "BEGIN IMMEDIATE" if sqlite else "BEGIN"
        self.time = _sqlite_time if sqlite else (lambda value: value)

    def sql(self, template: str) -> str:
        return template.replace("{p}", self.placeholder).replace("{lock}", self.lock)

    def execute(self, statement: str, parameters=()):
        return self.connection.execute(statement, parameters)


def _connect(database: Database):
    if database.kind == "sqlite":
        connection = sqlite3.connect(database.path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=30000")
        return connection
    # Autocommit, so that the BEGIN and COMMIT statements below delimit each transaction.
    return psycopg.connect(database.url, autocommit=True)


def _create_schema(database: Database) -> None:
    from flask_migrate import upgrade

    from app import create_app

    app = create_app({"DATABASE_URL": database.url, "EMBEDDED_WORKER": False,
                      "SECRET_KEY": "bench", "LOG_LEVEL": "WARNING"},
                     instance_path=database.folder.name)
    with app.app_context():
        upgrade()
        from app.extensions import db

        db.engine.dispose()


# An index whose order is the claim's ORDER BY, over due statuses only. It is
# not in Taskboard's schema: the runs with it show what it would change.
CLAIM_ORDER_INDEX = """
    CREATE INDEX ix_tasks_claim_order ON tasks (priority DESC, run_at, id)
    WHERE status IN ('PENDING', 'RETRYING')
"""


def raw_run(kind: str, tasks: int, *, claim_order_index: bool = False) -> dict:
    """Submit, then claim and complete `tasks` tasks one by one; return the rates.

    Taskboard's claim-time index (status, run_at, priority) does not match the
    claim's ORDER BY, so each claim reads and sorts every due task. With
    `claim_order_index` the run adds CLAIM_ORDER_INDEX first.
    """
    with Database(kind) as database:
        _create_schema(database)
        connection = _connect(database)
        if claim_order_index:
            connection.execute(CLAIM_ORDER_INDEX)
        dialect = _Dialect(kind, connection)
        insert_event = dialect.sql(INSERT_EVENT)
        claim = dialect.sql(CLAIM)
        succeed = dialect.sql(SUCCEED)
        try:
            started = time.perf_counter()
            for _ in range(tasks):
                now = dialect.time(datetime.now(UTC))
                dialect.execute(dialect.begin)
                submit = SUBMIT_TASK.replace("{now}", dialect.placeholder)
                task_id = dialect.execute(submit, (now, now)).fetchone()[0]
                dialect.execute(insert_event, (task_id, "submitted", 0, None,
                                               "Submitted from the benchmark", now))
                dialect.execute("COMMIT")
            submit_seconds = time.perf_counter() - started

            started = time.perf_counter()
            for _ in range(tasks):
                moment = datetime.now(UTC)
                now = dialect.time(moment)
                dialect.execute(dialect.begin)
                row = dialect.execute(claim, (WORKER_ID, dialect.time(moment + LEASE), now,
                                              now)).fetchone()
                if row is None:
                    raise RuntimeError(f"raw {kind} run: no due task left to claim")
                task_id, attempt, max_attempts = row[0], row[3], row[4]
                dialect.execute(insert_event, (task_id, "started", attempt, WORKER_ID,
                                               f"Attempt {attempt} of {max_attempts} started", now))
                dialect.execute("COMMIT")

                now = dialect.time(datetime.now(UTC))
                dialect.execute(dialect.begin)
                changed = dialect.execute(succeed, (now, task_id, WORKER_ID, attempt)).rowcount
                if changed != 1:
                    raise RuntimeError(f"raw {kind} run: task {task_id} did not move to SUCCEEDED")
                dialect.execute(insert_event, (task_id, "succeeded", attempt, WORKER_ID,
                                               f"Attempt {attempt} succeeded", now))
                dialect.execute("COMMIT")
            cycle_seconds = time.perf_counter() - started
        finally:
            connection.close()

    return {
        "database": kind,
        "claim_order_index": claim_order_index,
        "tasks": tasks,
        "submit_per_second": tasks / submit_seconds,
        "claim_complete_per_second": tasks / cycle_seconds,
        "claim_complete_ms_per_task": 1000 * cycle_seconds / tasks,
    }
