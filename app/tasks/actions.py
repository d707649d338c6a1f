"""Operations a person applies to one task or to many: cancel, retry, delete and run now.

Each batch is one short write transaction of at most BATCH_SIZE tasks. Its
guarded UPDATE or DELETE repeats the statuses the action may start from, so
a task that changed in the meantime is skipped, never forced, and every
change writes its event row in the same transaction. A task is skipped with
a reason (its status, "already asked to stop", "already due", "not found"),
so that clicking twice changes nothing the second time and reports why.

Deleting a task deletes its events with it, so no event can record the
deletion. The server log does instead, one INFO line per task that names
the task, its type, its status and who deleted it.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app
from sqlalchemy import delete, select, update

from app.extensions import db

from . import listing, signals
from .errors import InvalidTransition, TaskError, TaskNotFound
from .lifecycle import CLAIMABLE_STATUSES, TERMINAL_STATUSES, EventKind, EventLevel, TaskStatus
from .lifecycle import Transition, sources
from .models import MAX_ATTEMPTS_LIMIT, Task, TaskEvent
from .queue import (
    RetryLimitReached,
    _event_row,
    _requeue_values,
    _write_events,
    notify_workers,
)
from .session import clock, write_transaction
from .timeutil import utcnow

log = logging.getLogger(__name__)

tasks_table = Task.__table__
events_table = TaskEvent.__table__

# Tasks changed per transaction, so that a bulk action over thousands of
# tasks never holds the write lock for long.
BATCH_SIZE = 200

# Tasks one bulk action over "every matching task" changes per request. The
# rest are left for the next request, which the caller reports.
MAX_TASKS_PER_REQUEST = 10_000

# Ids a person may select at once.
MAX_SELECTED = 500

CANCEL, RETRY, DELETE, RUN_NOW = "cancel", "retry", "delete", "run_now"
ACTIONS = (CANCEL, RETRY, DELETE, RUN_NOW)

# A running task is not deleted: its worker would go on running it, and
# its outcome would be lost. Cancel it first.
DELETABLE_STATUSES = frozenset(TaskStatus) - {TaskStatus.PROCESSING}

# The statuses each action may start from.
ACTION_STATUSES = {
    CANCEL: sources(Transition.CANCEL),
    RETRY: sources(Transition.REQUEUE),
    DELETE: DELETABLE_STATUSES,
    RUN_NOW: CLAIMABLE_STATUSES,
}

# Past tense for messages: "3 tasks cancelled".
ACTION_DONE = {CANCEL: "cancelled", RETRY: "retried", DELETE: "deleted", RUN_NOW: "made due now"}
ACTION_LABELS = {CANCEL: "Cancel", RETRY: "Retry", DELETE: "Delete", RUN_NOW: "Run now"}


class AlreadyDue(TaskError):
    """Run now was asked for a waiting task whose run_at has already passed."""

    def __init__(self, task_id, status: str):
        self.task_id = task_id
        self.status = status
        super().__init__(
            f"task {task_id} is already due; a worker runs it as soon as one is free")


@dataclass
class BatchResult:
    """The outcome of a bulk action: the tasks it changed, and those it skipped with reasons.

    `stop_requested` lists the running tasks that a cancel only asked to
    stop. `more` is True when tasks that match were left for another request.
    """

    action: str
    changed: list[int] = field(default_factory=list)
    stop_requested: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    more: bool = False
    # Per batch, for the work done after its commit: queues to wake, deleted rows to log.
    queues: set[str] = field(default_factory=set, repr=False)
    deleted_rows: list = field(default_factory=list, repr=False)

    def merge(self, other: "BatchResult") -> None:
        self.changed += other.changed
        self.stop_requested += other.stop_requested
        self.skipped.update(other.skipped)

    def skip_reasons(self) -> dict[str, int]:
        """Return how many tasks were skipped for each reason, most common first."""
        counts: dict[str, int] = {}
        for reason in self.skipped.values():
            counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def to_dict(self) -> dict:
        return {
            "action": self.action,
            "changed": self.changed,
            "stop_requested": self.stop_requested,
            "skipped": [{"id": task_id, "reason": reason}
                        for task_id, reason in sorted(self.skipped.items())],
            "more": self.more,
        }


def check_action(action: str) -> str:
    if action not in ACTIONS:
        raise ValueError(f"must be one of {', '.join(ACTIONS)}")
    return action


# One task. These raise like the operations in queue.py, so that the API
# and the pages turn them into the same 404 and 409 responses.


def delete_task(task_id: int, *, source: str = "code") -> None:
    """Delete a task that is not running, with its events.

    Raise TaskNotFound for an unknown id and InvalidTransition for a
    PROCESSING task, which has to be cancelled first.
    """
    result = apply(DELETE, [task_id], source=source)
    if result.changed:
        return
    _raise_skip(DELETE, task_id, result.skipped[task_id])


def run_now(task_id: int, *, source: str = "code") -> Task:
    """Make a waiting task due now, so that the next free worker runs it; return it.

    Raise TaskNotFound for an unknown id, InvalidTransition from a status
    other than PENDING or RETRYING, and AlreadyDue when it is due already.
    """
    result = apply(RUN_NOW, [task_id], source=source)
    if not result.changed:
        _raise_skip(RUN_NOW, task_id, result.skipped[task_id])
    return _reload(task_id)


def _raise_skip(action: str, task_id: int, reason: str):
    task = _reload(task_id, missing_ok=True)
    if task is None:
        raise TaskNotFound(task_id)
    if reason == REASON_DUE:
        raise AlreadyDue(task_id, task.status)
    if reason == REASON_ATTEMPTS:
        raise RetryLimitReached(task_id)
    raise InvalidTransition(task_id, task.status, action.replace("_", " "),
                            ACTION_STATUSES[action])


def _reload(task_id: int, *, missing_ok: bool = False) -> Task | None:
    db.session.rollback()
    task = db.session.get(Task, task_id, populate_existing=True)
    if task is None and not missing_ok:
        raise TaskNotFound(task_id)
    return task


# Many tasks


def apply(action: str, task_ids: Iterable[int], *, source: str = "code") -> BatchResult:
    """Apply `action` to the tasks `task_ids`, BATCH_SIZE per transaction; return the outcome."""
    check_action(action)
    # In id order, so that two bulk actions lock shared rows in the same order.
    unique = sorted({int(task_id) for task_id in task_ids})
    result = BatchResult(action)
    for start in range(0, len(unique), BATCH_SIZE):
        result.merge(_apply_batch(action, unique[start:start + BATCH_SIZE], source))
    return result


def apply_to_matching(action: str, filters: "listing.TaskFilter", *, source: str = "code",
                      max_tasks: int = MAX_TASKS_PER_REQUEST) -> BatchResult:
    """Apply `action` to the tasks that match `filters`, up to `max_tasks` of them.

    Tasks are taken in id order, BATCH_SIZE at a time, among those whose
    status allows the action. `more` in the result is True when matching
    tasks remain after `max_tasks`.

    NOTE: with a text search in `filters`, each batch reads tasks by id until
    it finds BATCH_SIZE matches, so a rare text on a large table reads most
    of it, once per request.
    """
    check_action(action)
    result = BatchResult(action)
    after_id = 0
    done = 0
    while done < max_tasks:
        ids = listing.matching_ids(filters, statuses=ACTION_STATUSES[action],
                                   extra=candidate_conditions(action), after_id=after_id,
                                   limit=min(BATCH_SIZE, max_tasks - done))
        if not ids:
            break
        result.merge(_apply_batch(action, ids, source))
        after_id = ids[-1]
        done += len(ids)
    if done >= max_tasks:
        result.more = bool(listing.matching_ids(
            filters, statuses=ACTION_STATUSES[action], extra=candidate_conditions(action),
            after_id=after_id, limit=1))
    return result


def preview(action: str, task_ids: Iterable[int]) -> BatchResult:
    """Return what `apply` would change now, by the same rules, without changing anything."""
    check_action(action)
    ids = list(dict.fromkeys(int(task_id) for task_id in task_ids))
    result = BatchResult(action)
    if not ids:
        return result
    now = clock(db.session(), None)
    t = tasks_table
    rows = {row.id: row for row in db.session.execute(
        select(t.c.id, t.c.status, t.c.cancel_requested, t.c.run_at, t.c.attempts)
        .where(t.c.id.in_(ids))
    )}
    for task_id in ids:
        row = rows.get(task_id)
        if row is None:
            result.skipped[task_id] = REASON_MISSING
        elif action == CANCEL and row.status == TaskStatus.PROCESSING and not row.cancel_requested:
            result.stop_requested.append(task_id)
        elif _would_change(action, row, now):
            result.changed.append(task_id)
        else:
            result.skipped[task_id] = _skip_reason(action, row, now)
    return result


def _would_change(action: str, row, now: datetime) -> bool:
    """Return whether `action` changes the task in `row`: the guards of the batch statements."""
    if action == CANCEL:
        return row.status in CLAIMABLE_STATUSES
    if action == RETRY:
        return row.status in sources(Transition.REQUEUE) and row.attempts < MAX_ATTEMPTS_LIMIT
    if action == DELETE:
        return row.status in DELETABLE_STATUSES
    return row.status in CLAIMABLE_STATUSES and row.run_at > now


def candidate_conditions(action: str, now: datetime | None = None) -> list:
    """Return conditions beyond the status that a task needs for `action` to change it."""
    if action == RUN_NOW:
        return [Task.run_at > (now or utcnow())]
    if action == CANCEL:
        return [Task.cancel_requested.is_(False)]
    if action == RETRY:
        return [Task.attempts < MAX_ATTEMPTS_LIMIT]
    return []


def count_candidates(filters: "listing.TaskFilter") -> dict[str, "listing.BoundedCount"]:
    """Return, per action, how many tasks that match `filters` it would change (bounded)."""
    return {action: listing.count_tasks(filters, statuses=ACTION_STATUSES[action],
                                        extra=candidate_conditions(action))
            for action in ACTIONS}


def _apply_batch(action: str, ids: list[int], source: str) -> BatchResult:
    if not ids:
        return BatchResult(action)
    with write_transaction() as session:
        now = clock(session, None)
        if action == CANCEL:
            result = _cancel(session, ids, source, now)
        elif action == RETRY:
            result = _retry(session, ids, source, now)
        elif action == DELETE:
            result = _delete(session, ids, source)
        else:
            result = _run_now(session, ids, source, now)
        remaining = [task_id for task_id in ids
                     if task_id not in set(result.changed) | set(result.stop_requested)]
        result.skipped = _skip_reasons(session, action, remaining, now)
    _after_commit(result, source)
    return result


def _cancel(session, ids: list[int], source: str, now: datetime) -> BatchResult:
    t = tasks_table
    cancelled = session.execute(
        update(t)
        .where(t.c.id.in_(ids), t.c.status.in_(sorted(CLAIMABLE_STATUSES)))
        .values(status=TaskStatus.CANCELLED.value, finished_at=now)
        .returning(t.c.id, t.c.attempts)
    ).all()
    stopping = session.execute(
        update(t)
        .where(t.c.id.in_(ids), t.c.status == TaskStatus.PROCESSING.value,
               t.c.cancel_requested.is_(False))
        .values(cancel_requested=True)
        .returning(t.c.id, t.c.attempts)
    ).all()
    _write_events(session, [
        _event_row(row.id, EventKind.CANCELLED, attempt=row.attempts, now=now,
                   message=f"Cancelled by a person from {source}")
        for row in cancelled
    ] + [
        _event_row(row.id, EventKind.LOG, attempt=row.attempts, now=now, level=EventLevel.WARNING,
                   message=f"Cancellation requested by a person from {source}; "
                           "the running handler is asked to stop")
        for row in stopping
    ])
    return BatchResult(CANCEL, changed=sorted(row.id for row in cancelled),
                       stop_requested=sorted(row.id for row in stopping))


def _retry(session, ids: list[int], source: str, now: datetime) -> BatchResult:
    t = tasks_table
    rows = session.execute(
        update(t)
        .where(t.c.id.in_(ids), t.c.status.in_(sorted(sources(Transition.REQUEUE))),
               t.c.attempts < MAX_ATTEMPTS_LIMIT)
        .values(**_requeue_values(now))
        .returning(t.c.id, t.c.attempts, t.c.queue)
    ).all()
    _write_events(session, [
        _event_row(row.id, EventKind.REQUEUED, attempt=row.attempts, now=now,
                   message=f"Retried by a person from {source}; "
                           f"attempt {row.attempts + 1} is due now")
        for row in rows
    ])
    return BatchResult(RETRY, changed=sorted(row.id for row in rows),
                       queues={row.queue for row in rows})


def _delete(session, ids: list[int], source: str) -> BatchResult:
    t = tasks_table
    deletable = sorted(str(status) for status in DELETABLE_STATUSES)
    # Locked on PostgreSQL, so that no worker claims a task between this
    # read and the DELETE; SQLite's write transaction already excludes that.
    rows = session.execute(
        select(t.c.id, t.c.type, t.c.status)
        .where(t.c.id.in_(ids), t.c.status.in_(deletable))
        .with_for_update()
    ).all()
    doomed = [row.id for row in rows]
    if doomed:
        session.execute(delete(events_table).where(events_table.c.task_id.in_(doomed)))
        session.execute(delete(t).where(t.c.id.in_(doomed), t.c.status.in_(deletable)))
    return BatchResult(DELETE, changed=sorted(doomed), deleted_rows=rows)


def _run_now(session, ids: list[int], source: str, now: datetime) -> BatchResult:
    t = tasks_table
    waiting = sorted(str(status) for status in CLAIMABLE_STATUSES)
    rows = session.execute(
        select(t.c.id, t.c.run_at, t.c.attempts, t.c.queue)
        .where(t.c.id.in_(ids), t.c.status.in_(waiting), t.c.run_at > now)
        .with_for_update()
    ).all()
    if rows:
        session.execute(
            update(t)
            .where(t.c.id.in_([row.id for row in rows]), t.c.status.in_(waiting),
                   t.c.run_at > now)
            .values(run_at=now)
        )
    _write_events(session, [
        _event_row(row.id, EventKind.LOG, attempt=row.attempts, now=now,
                   message=f"Made due now by a person from {source}; it was due at "
                           f"{row.run_at.isoformat(timespec='seconds')}")
        for row in rows
    ])
    return BatchResult(RUN_NOW, changed=sorted(row.id for row in rows),
                       queues={row.queue for row in rows})


REASON_MISSING = "not found"
REASON_STOPPING = "already asked to stop"
REASON_DUE = "already due"
REASON_ATTEMPTS = f"used the maximum of {MAX_ATTEMPTS_LIMIT} attempts"


def _skip_reasons(session, action: str, ids: list[int], now: datetime) -> dict[int, str]:
    """Return why each task in `ids` was left unchanged by `action`."""
    if not ids:
        return {}
    t = tasks_table
    rows = session.execute(
        select(t.c.id, t.c.status, t.c.cancel_requested, t.c.run_at, t.c.attempts)
        .where(t.c.id.in_(ids))
    ).all()
    reasons = {task_id: REASON_MISSING for task_id in ids}
    for row in rows:
        reasons[row.id] = _skip_reason(action, row, now)
    return reasons


def _skip_reason(action: str, row, now: datetime) -> str:
    status = row.status
    if action == CANCEL and status == TaskStatus.PROCESSING and row.cancel_requested:
        return REASON_STOPPING
    if action == RUN_NOW and status in CLAIMABLE_STATUSES and row.run_at <= now:
        return REASON_DUE
    if action == RETRY and status in sources(Transition.REQUEUE):
        return REASON_ATTEMPTS
    if action == DELETE and status == TaskStatus.PROCESSING:
        return "running; cancel it first"
    if status in TERMINAL_STATUSES:
        return f"already {status}"
    return f"status is {status}"


def _after_commit(result: BatchResult, source: str) -> None:
    """Log the changes and wake workers once the batch has committed."""
    action = result.action
    for row in result.deleted_rows:
        log.info("Task %s (%s, %s) deleted by a person from %s, with its events",
                 row.id, row.type, row.status, source,
                 extra={"task_id": row.id, "event": "deleted"})
    if action != DELETE:
        for task_id in result.changed:
            log.info("Task %s %s by a person from %s", task_id, ACTION_DONE[action], source,
                     extra={"task_id": task_id, "event": action})
    for task_id in result.stop_requested:
        log.info("Task %s asked to stop by a person from %s", task_id, source,
                 extra={"task_id": task_id, "event": "cancel_requested"})
        signals.cancel_requested.send(current_app._get_current_object(), task_id=task_id)
    if result.skipped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in result.skip_reasons().items())
        log.info("%s from %s skipped %s (%s): ids %s", action, source,
                 _tasks_text(len(result.skipped)),
                 reasons, sorted(result.skipped)[:20],
                 extra={"event": f"{action}_skipped", "task_count": len(result.skipped)})

    # One wake-up per queue is enough: a worker that wakes claims every due task.
    for queue_name in sorted(result.queues):
        notify_workers(queue_name)
        first = result.changed[0]
        signals.task_submitted.send(current_app._get_current_object(), task_id=first,
                                    due_now=True, queue=queue_name)


def _tasks_text(count: int) -> str:
    return "1 task" if count == 1 else f"{count:,} tasks"
