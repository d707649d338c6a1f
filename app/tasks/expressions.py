"""SQL expressions that differ between SQLite and PostgreSQL, shared by queries and indexes."""

from sqlalchemy import Float, Interval
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class task_duration(FunctionElement):
    """The run time of a task's latest attempt, finished_at - started_at; NULL until it finished.

    PostgreSQL computes an interval. SQLite stores timestamps as text, so there
    it is a number of seconds from julianday(), which rounds to about 10
    microseconds. Either way the value sorts like the duration, and the index
    ix_tasks_duration is built on this same expression, so a query that
    orders by it reads the index.
    """

    type = Float().with_variant(Interval(), "postgresql")
    name = "task_duration"
    inherit_cache = True


@compiles(task_duration, "sqlite")
def _task_duration_sqlite(element, compiler, **kw):
    return "((julianday(finished_at) - julianday(started_at)) * 86400.0)"


@compiles(task_duration, "postgresql")
def _task_duration_postgresql(element, compiler, **kw):
    return "(finished_at - started_at)"


# The same expressions as text, for the migration that creates the index.
TASK_DURATION_SQL = {
    "sqlite": "((julianday(finished_at) - julianday(started_at)) * 86400.0)",
    "postgresql": "(finished_at - started_at)",
}
