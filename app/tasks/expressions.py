"""SQL expressions that differ between SQLite and PostgreSQL, shared by queries and indexes."""

from sqlalchemy import BigInteger, Interval
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


# The expression as SQL text per database, also for the migration that creates the index.
TASK_DURATION_SQL = {
    "sqlite": (
        "((CAST(strftime('%s', finished_at) AS INTEGER)"
        " - CAST(strftime('%s', started_at) AS INTEGER))"
        " * 1000000 + CAST(substr(finished_at, 21, 6) AS INTEGER)"
        " - CAST(substr(started_at, 21, 6) AS INTEGER))"
    ),
    "postgresql": "(finished_at - started_at)",
}


class task_duration(FunctionElement):
    """The run time of a task's latest attempt, finished_at - started_at; NULL until it finished.

    PostgreSQL computes an interval. SQLite stores timestamps as text in the
    form "2026-12-04 20:01:30.123456", so there it is a whole number of
    microseconds: whole seconds from strftime('%s') plus the difference of
    the six fraction digits. That is exact, so equal durations compare
    equal and sort by id. The index ix_tasks_duration is built on this same
    expression, so a query that orders by it reads the index.
    """

    type = BigInteger().with_variant(Interval(), "postgresql")
    name = "task_duration"
    inherit_cache = True


@compiles(task_duration, "sqlite")
def _task_duration_sqlite(element, compiler, **kw):
    return TASK_DURATION_SQL["sqlite"]


@compiles(task_duration, "postgresql")
def _task_duration_postgresql(element, compiler, **kw):
    return TASK_DURATION_SQL["postgresql"]
