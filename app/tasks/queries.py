"""Read-side queries for the dashboard, the event log and the JSON API.

Lists use keyset pagination on the id, newest first: a page ends with a
cursor (the last id shown), and the next page asks for ids below it, so a
deep page costs the same as the first.
"""

from dataclasses import dataclass, field

from sqlalchemy import func, select

from app.extensions import db

from .listing import BoundedCount, bounded_count
from .lifecycle import EventKind, EventLevel, TaskStatus
from .models import Task, TaskEvent

MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class Page:
    items: list
    next_cursor: int | None
    limit: int
    filters: dict = field(default_factory=dict)


def status_counts(limit: int | None = None) -> dict[str, BoundedCount]:
    """Return a count of the tasks in each status, each bounded at `limit`.

    Counting every row of a large table costs a full index scan on each
    dashboard refresh. A count that stops after `limit` + 1 index entries
    costs the same at a thousand tasks and at a million.
    """
    return {status.value: bounded_count([Task.status == status.value], limit)
            for status in TaskStatus}


def _clamp(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE_SIZE))


def _page(statement, id_column, *, before: int | None, limit: int) -> tuple[list, int | None]:
    if before is not None:
        statement = statement.where(id_column < before)
    rows = list(db.session.scalars(statement.order_by(id_column.desc()).limit(limit + 1)))
    has_more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if has_more and rows else None)


def list_tasks(*, status: str | None = None, type: str | None = None, queue: str | None = None,
               before: int | None = None, limit: int = 50) -> Page:
    """Return a page of tasks, newest first, filtered by status, type and queue."""
    limit = _clamp(limit)
    statement = select(Task)
    if status:
        statement = statement.where(Task.status == status)
    if type:
        statement = statement.where(Task.type == type)
    if queue:
        statement = statement.where(Task.queue == queue)
    items, cursor = _page(statement, Task.id, before=before, limit=limit)
    filters = {"status": status, "type": type, "queue": queue}
    return Page(items, cursor, limit, {k: v for k, v in filters.items() if v})


def list_events(*, task_id: int | None = None, kind: str | None = None, level: str | None = None,
                before: int | None = None, limit: int = 50) -> Page:
    """Return a page of events, newest first, filtered by task, kind and level."""
    limit = _clamp(limit)
    statement = select(TaskEvent)
    if task_id is not None:
        statement = statement.where(TaskEvent.task_id == task_id)
    if kind:
        statement = statement.where(TaskEvent.kind == kind)
    if level:
        statement = statement.where(TaskEvent.level == level)
    items, cursor = _page(statement, TaskEvent.id, before=before, limit=limit)
    filters = {"task_id": task_id, "kind": kind, "level": level}
    return Page(items, cursor, limit, {k: v for k, v in filters.items() if v is not None})


def task_events(task_id: int) -> list[TaskEvent]:
    """Return every event of one task, oldest first, for its timeline."""
    return list(db.session.scalars(
        select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)
    ))


def get_task(task_id: int) -> Task | None:
    return db.session.get(Task, task_id)


STATUS_VALUES = [status.value for status in TaskStatus]
KIND_VALUES = [kind.value for kind in EventKind]
LEVEL_VALUES = [level.value for level in EventLevel]
