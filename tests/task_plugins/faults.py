"""Task types for the fault-tolerance tests, loaded with TASK_MODULES=tests.task_plugins.faults.

Each handler inserts a row into the side table `task_runs` when it finishes
its work, so a test can count how many times a handler ran for each task and
in which process. The tests create that table with `create_runs_table`; it
is not part of Taskboard's schema.
"""

import os
import time

from sqlalchemy import text

from app.extensions import db
from app.tasks import Param, task_type

TYPE_NAMES = ("record_run", "slow_record")

RUNS_TABLE = "task_runs"

_INSERT_RUN = text(
    f"INSERT INTO {RUNS_TABLE} (task_id, attempt, worker_pid, worker_id) "
    "VALUES (:task_id, :attempt, :worker_pid, :worker_id)"
)


def create_runs_table(engine) -> None:
    """Create an empty `task_runs` table in the database of `engine`, replacing an old one."""
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE IF EXISTS {RUNS_TABLE}"))
        connection.execute(text(
            f"CREATE TABLE {RUNS_TABLE} ("
            " task_id INTEGER NOT NULL,"
            " attempt INTEGER NOT NULL,"
            " worker_pid INTEGER NOT NULL,"
            " worker_id VARCHAR(200) NOT NULL)"
        ))


def drop_runs_table(engine) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE IF EXISTS {RUNS_TABLE}"))


def _record(ctx) -> dict:
    """Insert this run into `task_runs` in a transaction of its own; return the worker's pid."""
    values = {"task_id": ctx.task_id, "attempt": ctx.attempt, "worker_pid": os.getpid(),
              "worker_id": ctx.worker_id}
    with db.engine.connect() as connection:
        # On SQLite this option makes the transaction start with BEGIN
        # IMMEDIATE (app/database.py), so the insert waits on the busy
        # timeout while another process writes, as Taskboard's own writes do.
        connection.execution_options(taskboard_write=True)
        with connection.begin():
            connection.execute(_INSERT_RUN, values)
    return {"pid": values["worker_pid"]}


@task_type("record_run", description="Record this run in the task_runs table.")
def record_run(ctx):
    return _record(ctx)


@task_type(
    "slow_record",
    description="Sleep without checking for a stop request, then record this run.",
    params={"seconds": Param(float, min=0, max=600, default=0.03)},
)
def slow_record(ctx, seconds):
    # time.sleep, not ctx.wait, as in a handler that never checks
    # ctx.cancelled, so a stop request cannot cut it short.
    time.sleep(seconds)
    return _record(ctx)
