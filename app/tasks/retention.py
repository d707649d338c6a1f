"""Retention: delete finished tasks older than an age, with their events.

Finished means SUCCEEDED, FAILED or CANCELLED.

Age counts from `finished_at`, which is set exactly when a task is finished.
Rows go in batches of BATCH_SIZE tasks, each batch in its own short write
transaction, so that workers wait at most one batch for the write lock.

Three ways in: the dashboard's retention form, the task type
"delete_finished_tasks" (which a person or a schedule can submit), and the
RETENTION_DAYS setting, which schedules that task at RETENTION_CRON.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from . import listing
from .errors import TaskCancelled, ValidationError
from .lifecycle import TERMINAL_STATUSES
from .models import Task, TaskEvent
from .registry import Param, task_type
from .schedules import make_schedule, schedules
from .session import write_transaction
from .timeutil import utcnow

log = logging.getLogger(__name__)

BATCH_SIZE = 500
MAX_DAYS = 36_500
TASK_TYPE = "delete_finished_tasks"
SCHEDULE_NAME = "retention"

_TERMINAL = sorted(str(status) for status in TERMINAL_STATUSES)


@dataclass(frozen=True)
class RetentionResult:
    """How many tasks a retention run deleted, and whether older finished tasks remain."""

    deleted: int
    more: bool
    cutoff: datetime


def cutoff_for(days: float, now: datetime | None = None) -> datetime:
    """Return the moment before which finished tasks are old enough to delete."""
    return (now or utcnow()) - timedelta(days=days)


def check_days(value) -> int:
    """Return `value` as a whole number of days from 1 to MAX_DAYS, or raise ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number of days from 1 to {MAX_DAYS}")
    if isinstance(value, str):
        value = value.strip()
        if not (value.isascii() and value.isdigit() and len(value) <= 6):
            raise ValueError(f"must be a whole number of days from 1 to {MAX_DAYS}, got {value!r}")
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
        raise ValueError(f"must be a whole number of days from 1 to {MAX_DAYS}, got {value!r}")
    return value


def _expired(cutoff: datetime) -> list:
    return [Task.finished_at < cutoff, Task.status.in_(_TERMINAL)]


def count_expired(cutoff: datetime, limit: int | None = None) -> listing.BoundedCount:
    """Count finished tasks that finished before `cutoff`, reading at most `limit` + 1."""
    return listing.bounded_count(_expired(cutoff), limit)


def delete_batch(cutoff: datetime, *, batch_size: int | None = None, source: str = "code") -> int:
    """Delete up to `batch_size` (default BATCH_SIZE) of the oldest finished tasks before `cutoff`.

    Return how many were deleted.
    """
    batch_size = batch_size or BATCH_SIZE
    with write_transaction() as session:
        # SKIP LOCKED on PostgreSQL: a task a person is acting on right now is
        # left for the next batch instead of waiting on its lock.
        ids = list(session.scalars(
            select(Task.id)
            .where(*_expired(cutoff))
            .order_by(Task.finished_at, Task.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        ))
        if not ids:
            return 0
        session.execute(delete(TaskEvent).where(TaskEvent.task_id.in_(ids)))
        deleted = session.execute(
            delete(Task).where(Task.id.in_(ids), *_expired(cutoff))
        ).rowcount
    log.info("Retention deleted %s finished tasks (ids %s to %s) that finished before %s, "
             "from %s", deleted, min(ids), max(ids), cutoff.isoformat(timespec="seconds"), source,
             extra={"event": "retention_deleted", "task_count": deleted})
    return deleted


def delete_expired(cutoff: datetime, *, max_batches: int | None = None, source: str = "code",
                   batch_size: int | None = None, should_stop=None,
                   on_batch=None) -> RetentionResult:
    """Delete finished tasks before `cutoff` batch by batch, until none remain.

    Stop early after `max_batches` batches, or when `should_stop()` returns
    True; `on_batch(total_deleted)` is called after each batch.
    """
    batch_size = batch_size or BATCH_SIZE
    total = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        if should_stop is not None and should_stop():
            break
        deleted = delete_batch(cutoff, batch_size=batch_size, source=source)
        batches += 1
        total += deleted
        if on_batch is not None:
            on_batch(total)
        if deleted < batch_size:
            return RetentionResult(total, False, cutoff)
    return RetentionResult(total, count_expired(cutoff, limit=1).value > 0, cutoff)


@task_type(
    TASK_TYPE,
    description="Delete finished tasks older than a number of days, with their events.",
    # One run deletes everything old enough, which may take a while on a large table.
    timeout_seconds=3600,
    params={
        "older_than_days": Param(int, min=1, max=MAX_DAYS,
                                 help="Delete SUCCEEDED, FAILED and CANCELLED tasks that "
                                      "finished more than this many days ago."),
    },
)
def delete_finished_tasks(ctx, older_than_days):
    cutoff = cutoff_for(older_than_days)
    expected = count_expired(cutoff)
    ctx.log(f"Deleting {expected} finished tasks that finished before "
            f"{cutoff.isoformat(timespec='seconds')}")

    def report(total: int) -> None:
        if expected.value:
            ctx.progress(min(99, 100 * total // expected.value), f"{total:,} deleted")

    result = delete_expired(cutoff, source=f"task {ctx.task_id} ({TASK_TYPE})",
                            should_stop=lambda: ctx.cancelled, on_batch=report)
    if ctx.cancelled:
        raise TaskCancelled(f"stopped after deleting {result.deleted} tasks")
    return {"deleted": result.deleted, "finished_before": cutoff.isoformat()}


def configure_schedule(days, cron: str) -> None:
    """Schedule delete_finished_tasks at `cron` when `days` is set, or remove the schedule.

    `days` of 0, None or "" turns retention off. Raise ValidationError naming
    RETENTION_DAYS or RETENTION_CRON when a value cannot be used.
    """
    if days in (0, None, ""):
        schedules.remove(SCHEDULE_NAME)
        return
    try:
        days = check_days(days)
    except ValueError as error:
        raise ValidationError({"RETENTION_DAYS": f"{error}, or 0 to turn retention off"}) from None
    try:
        schedule = make_schedule(SCHEDULE_NAME, {
            "cron": cron, "type": TASK_TYPE, "params": {"older_than_days": days},
        })
    except ValidationError as error:
        fields = {name.replace(f"SCHEDULES.{SCHEDULE_NAME}.cron", "RETENTION_CRON"): message
                  for name, message in error.fields.items()}
        raise ValidationError(fields) from None
    schedules.add(schedule)
