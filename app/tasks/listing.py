"""The tasks page's query: filters, text search, four sort orders and keyset pagination.

A page ends with a cursor that contains the sort key and the id of its last row,
and the next page requests the rows after that pair. No query uses OFFSET, so a
deep page costs what the first one does, given an index that starts with the
sort key (see the indexes on Task).

Tasks whose sort key is NULL (never started, or not finished yet) come after
all others, in both directions, ordered by id. A page is read in two phases:
rows with a key, then rows without one, each through its own index-friendly
query. A cursor in the second phase carries no value, only the id.

Text search does not scan the whole table. Each page reads at most
SEARCH_WINDOW tasks after the cursor, in the sort order and within the other
filters, and keeps those whose parameters or last error contain the text.
When the window ends before the page is full, the page's cursor points past
the window, so the next page goes on searching where this one stopped.
"""

import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Interval, String, and_, bindparam, cast, func, or_, select

from app.extensions import db

from .expressions import task_duration
from .lifecycle import TaskStatus
from .models import Task

SORT_KEYS = ("created", "started", "finished", "duration")
DEFAULT_SORT = "created"

# Tasks one page of a text search reads at most, after the cursor.
SEARCH_WINDOW = 10_000

# Counts stop here: "10,000+" instead of reading every row of a huge table.
COUNT_LIMIT = 10_000

MAX_SEARCH_LENGTH = 200

# The largest BIGINT. Larger numbers make SQLite raise OverflowError when bound.
MAX_ID = 2**63 - 1

_ID_SEARCH = re.compile(r"#?([0-9]{1,19})")


@dataclass(frozen=True)
class TaskFilter:
    """The tasks that a list, a count or a bulk action covers. Empty fields match everything.

    `search` is text to find in the parameters or the last error; `task_id`
    matches one id. `max_id` caps the ids, so that a bulk action confirmed on
    a count does not reach tasks submitted after the count was taken.
    """

    status: str | None = None
    type: str | None = None
    queue: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    task_id: int | None = None
    search: str | None = None
    max_id: int | None = None

    def conditions(self) -> list:
        """Return the SQL conditions of every field but `search`."""
        conditions = []
        if self.status:
            conditions.append(Task.status == self.status)
        if self.type:
            conditions.append(Task.type == self.type)
        if self.queue:
            conditions.append(Task.queue == self.queue)
        if self.created_after is not None:
            conditions.append(Task.created_at >= self.created_after)
        if self.created_before is not None:
            conditions.append(Task.created_at < self.created_before)
        if self.task_id is not None:
            conditions.append(Task.id == self.task_id)
        if self.max_id is not None:
            conditions.append(Task.id <= self.max_id)
        return conditions

    def search_condition(self, params=None, last_error=None):
        """Return the SQL condition of `search`, or None when there is no text to find.

        `params` and `last_error` replace the columns of Task, to search a subquery.
        """
        if not self.search:
            return None
        return text_matches(self.search, params, last_error)

    def all_conditions(self) -> list:
        condition = self.search_condition()
        return self.conditions() + ([] if condition is None else [condition])


def text_matches(text: str, params=None, last_error=None):
    """Return a condition that holds when a task's parameters or last error contain `text`.

    Case is ignored for ASCII letters. Parameters are stored as JSON, which
    escapes quotes, backslashes and non-ASCII characters, so the JSON-escaped
    form of `text` is searched as well as the text itself.
    """
    params_text = cast(Task.params if params is None else params, String)
    last_error = Task.last_error if last_error is None else last_error
    escaped = json.dumps(text)[1:-1]
    options = [
        params_text.icontains(text, autoescape=True),
        last_error.icontains(text, autoescape=True),
    ]
    if escaped != text:
        options.append(params_text.icontains(escaped, autoescape=True))
    return or_(*options)


def parse_search(text: str | None) -> dict:
    """Split a search box's text into {"task_id": ...} for "#12" or "12", else {"search": ...}.

    Raise ValueError when the text is too long.
    """
    text = (text or "").strip()
    if not text:
        return {}
    if len(text) > MAX_SEARCH_LENGTH:
        raise ValueError(f"must be at most {MAX_SEARCH_LENGTH} characters")
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")
    match = _ID_SEARCH.fullmatch(text)
    if match and 1 <= int(match.group(1)) <= MAX_ID:
        return {"task_id": int(match.group(1))}
    return {"search": text}


@dataclass(frozen=True)
class Cursor:
    """The sort key and id of the last row of a page; `value` is None in the NULL phase."""

    value: object | None
    id: int

    def encode(self) -> str:
        if self.value is None:
            return f"null_{self.id}"
        if isinstance(self.value, datetime):
            value = self.value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        elif isinstance(self.value, timedelta):
            value = str(self.value // timedelta(microseconds=1))
        else:
            value = str(int(self.value))
        return f"{value}_{self.id}"


def decode_cursor(text: str, sort: str, dialect: str) -> Cursor:
    """Parse a cursor made by Cursor.encode for `sort`; raise ValueError when it is not one."""
    value_text, separator, id_text = text.rpartition("_")
    if not separator or not id_text.isascii() or not id_text.isdigit() or len(id_text) > 19:
        raise ValueError("is not a cursor from a page of this list")
    task_id = int(id_text)
    if not 1 <= task_id <= MAX_ID:
        raise ValueError("is not a cursor from a page of this list")
    if value_text == "null":
        return Cursor(None, task_id)
    try:
        if sort == "duration":
            # Whole microseconds: an interval on PostgreSQL, a number on SQLite.
            if not value_text.lstrip("-").isdigit() or len(value_text) > 19:
                raise ValueError(value_text)
            value = int(value_text)
            if abs(value) > MAX_ID:
                raise ValueError(value_text)
            if dialect == "postgresql":
                value = timedelta(microseconds=value)
        else:
            value = datetime.strptime(value_text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ValueError("is not a cursor from a page of this list") from None
    return Cursor(value, task_id)


@dataclass(frozen=True)
class TaskListPage:
    """One page of the tasks list.

    `next_cursor` is None on the last page. `window_ended` is True when a text
    search read SEARCH_WINDOW tasks without filling the page, so that more
    matches may follow the cursor.
    """

    items: list[Task]
    next_cursor: str | None
    limit: int
    window_ended: bool = False
    sort: str = DEFAULT_SORT
    descending: bool = True


def sort_expression(sort: str):
    """Return the SQL expression a sort key orders by."""
    if sort == "created":
        return Task.created_at
    if sort == "started":
        return Task.started_at
    if sort == "finished":
        return Task.finished_at
    if sort == "duration":
        return task_duration()
    raise ValueError(f"unknown sort key {sort!r}; use one of {', '.join(SORT_KEYS)}")


def _key_parameter(value, sort: str):
    """Bind a cursor value with the type of its sort expression."""
    if sort == "duration" and isinstance(value, timedelta):
        return bindparam("cursor_key", value, type_=Interval())
    return bindparam("cursor_key", value, type_=sort_expression(sort).type)


def _after(key, value, task_id: int, descending: bool, sort: str):
    """Return the condition "(key, id) comes after (value, task_id)" in a form indexes can use.

    It is written as key <= value AND (key < value OR id < task_id), rather
    than as a row comparison, so that both databases use the leading `key`
    bound of the index.
    """
    bound = _key_parameter(value, sort)
    if descending:
        return and_(key <= bound, or_(key < bound, Task.id < task_id))
    return and_(key >= bound, or_(key > bound, Task.id > task_id))


def _order(key, descending: bool) -> list:
    if descending:
        return [key.desc(), Task.id.desc()]
    return [key.asc(), Task.id.asc()]


def _phase_statement(filters: TaskFilter, sort: str, descending: bool, cursor: Cursor | None,
                     *, null_phase: bool):
    """Return the statement of (Task, key) rows of one phase after `cursor`, in page order."""
    key = sort_expression(sort)
    statement = select(Task, key.label("sort_key")).where(*filters.conditions())
    if null_phase:
        statement = statement.where(key.is_(None))
        if cursor is not None:
            statement = statement.where(Task.id < cursor.id if descending else Task.id > cursor.id)
        return statement.order_by(*(_order(Task.id, descending)))
    statement = statement.where(key.is_not(None))
    if cursor is not None:
        statement = statement.where(_after(key, cursor.value, cursor.id, descending, sort))
    return statement.order_by(*_order(key, descending))


def _read_phase(filters: TaskFilter, sort: str, descending: bool, cursor: Cursor | None,
                row_limit: int, *, null_phase: bool, window: int) -> tuple[list, Cursor | None]:
    """Read up to `row_limit` (task, sort key) pairs of one phase, and where a search stopped.

    Without a text search the window plays no part. With one, at most
    `window` tasks are read, and the second value is the cursor of the last
    task read when the window was used up (None otherwise).
    """
    statement = _phase_statement(filters, sort, descending, cursor, null_phase=null_phase)
    if not filters.search:
        rows = db.session.execute(statement.limit(row_limit))
        return [(row[0], row.sort_key) for row in rows], None

    # The window: the next `window` tasks in page order, with the columns the
    # search reads. Its LIMIT makes the database read it first, through the
    # index, instead of scanning the whole table for the text.
    key = sort_expression(sort)
    scanned = (
        statement.with_only_columns(Task.id, key.label("sort_key"), Task.params, Task.last_error)
        .limit(window)
        .subquery("scanned")
    )
    columns = [scanned.c.id] if null_phase else [scanned.c.sort_key, scanned.c.id]
    order = [column.desc() if descending else column.asc() for column in columns]
    condition = filters.search_condition(scanned.c.params, scanned.c.last_error)
    found = db.session.execute(
        select(scanned.c.id, scanned.c.sort_key).where(condition).order_by(*order).limit(row_limit)
    ).all()
    tasks = {task.id: task for task in db.session.scalars(
        select(Task).where(Task.id.in_([row.id for row in found])))}
    rows = [(tasks[row.id], row.sort_key) for row in found if row.id in tasks]
    if len(found) >= row_limit:
        return rows, None

    # The last task of the window becomes the cursor. OFFSET is bounded by the window here.
    last = db.session.execute(
        select(scanned.c.id, scanned.c.sort_key)
        .order_by(*order)
        .limit(1)
        .offset(window - 1)
    ).first()
    if last is None:
        return rows, None
    return rows, Cursor(None if null_phase else last.sort_key, last.id)


def find_tasks(filters: TaskFilter = TaskFilter(), *, sort: str = DEFAULT_SORT,
               descending: bool = True, cursor: Cursor | None = None, limit: int = 50,
               window: int | None = None) -> TaskListPage:
    """Return one page of tasks that match `filters`, in the order of `sort`, after `cursor`.

    A text search reads at most `window` (default SEARCH_WINDOW) tasks.
    """
    sort_expression(sort)
    window = window or SEARCH_WINDOW
    limit = max(1, limit)
    has_nulls = sort != "created"
    row_limit = limit + 1
    rows: list = []
    window_end: Cursor | None = None

    if cursor is None or cursor.value is not None:
        rows, window_end = _read_phase(filters, sort, descending, cursor, row_limit,
                                       null_phase=False, window=window)
    if has_nulls and len(rows) < row_limit and window_end is None:
        null_cursor = cursor if cursor is not None and cursor.value is None else None
        more, window_end = _read_phase(filters, sort, descending, null_cursor,
                                       row_limit - len(rows), null_phase=True, window=window)
        rows = rows + more

    items = [task for task, _ in rows[:limit]]
    if len(rows) > limit:
        last_task, last_key = rows[limit - 1]
        next_cursor = Cursor(last_key, last_task.id).encode()
    elif window_end is not None:
        next_cursor = window_end.encode()
    else:
        next_cursor = None
    return TaskListPage(items, next_cursor, limit, window_ended=window_end is not None,
                        sort=sort, descending=descending)


@dataclass(frozen=True)
class BoundedCount:
    """A count that stops at `limit`: `exact` is False when more rows exist than it counted."""

    value: int
    exact: bool

    def __str__(self) -> str:
        return f"{self.value:,}" if self.exact else f"{self.value:,}+"


def bounded_count(conditions: list, limit: int | None = None) -> BoundedCount:
    """Count tasks matching `conditions`, reading at most `limit` (default COUNT_LIMIT) + 1."""
    limit = COUNT_LIMIT if limit is None else limit
    inner = select(Task.id).where(*conditions).limit(limit + 1).subquery()
    found = db.session.scalar(select(func.count()).select_from(inner))
    if found > limit:
        return BoundedCount(limit, False)
    return BoundedCount(found, True)


def count_tasks(filters: TaskFilter, *, statuses=None, extra=(),
                limit: int | None = None) -> BoundedCount:
    """Count the tasks that match `filters` (search included) and `extra`, in `statuses` only."""
    conditions = filters.all_conditions() + list(extra)
    if statuses is not None:
        conditions.append(Task.status.in_(sorted(str(s) for s in statuses)))
    return bounded_count(conditions, limit)


def matching_ids(filters: TaskFilter, *, statuses, extra=(), after_id: int = 0,
                 limit: int = 200) -> list[int]:
    """Return up to `limit` ids above `after_id`, in order, of tasks in `statuses` that match."""
    statement = (
        select(Task.id)
        .where(*filters.all_conditions(), *extra,
               Task.status.in_(sorted(str(s) for s in statuses)), Task.id > after_id)
        .order_by(Task.id)
        .limit(limit)
    )
    return list(db.session.scalars(statement))


def highest_id() -> int:
    """Return the highest task id in use, or 0 for an empty table."""
    return db.session.scalar(select(func.max(Task.id))) or 0


def with_max_id(filters: TaskFilter, max_id: int) -> TaskFilter:
    return replace(filters, max_id=max_id)


STATUS_VALUES = [status.value for status in TaskStatus]
