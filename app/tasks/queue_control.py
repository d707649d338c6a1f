"""Named queues: pause and resume them, limit their concurrency, and count their tasks.

Settings live in the `queues` table, which every worker reads when it claims,
so a change holds for all workers from their next poll on.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from app.extensions import db

from .errors import ValidationError
from .lifecycle import CLAIMABLE_STATUSES, TaskStatus
from .models import QueueState, Task
from .session import clock, write_transaction
from .submission import QUEUE_NAME

log = logging.getLogger(__name__)

# The highest task count per queue and status; the tasks page stops at the same number.
COUNT_LIMIT = 10_000


@dataclass(frozen=True)
class QueueOverview:
    name: str
    paused: bool
    concurrency_limit: int | None
    counts: dict[str, int]
    oldest_waiting_at: datetime | None
    # False for a status whose count stopped at COUNT_LIMIT.
    counts_exact: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "paused": self.paused,
            "concurrency_limit": self.concurrency_limit,
            "counts": self.counts,
            "counts_exact": self.counts_exact,
            "oldest_waiting_at": (
                None if self.oldest_waiting_at is None else self.oldest_waiting_at.isoformat()
            ),
        }


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
        raise ValidationError({"queue": "must be 1 to 100 letters, digits, '_', '.' or '-'"})


def _update(name: str, **values) -> QueueState:
    _check_name(name)
    with write_transaction() as session:
        now = clock(session, None)
        state = session.get(QueueState, name, with_for_update=True)
        if state is None:
            state = QueueState(name=name, paused=False, concurrency_limit=None)
            session.add(state)
        for key, value in values.items():
            setattr(state, key, value)
        state.updated_at = now
    return state


def pause_queue(name: str, *, source: str = "code") -> QueueState:
    """Stop workers from claiming tasks of queue `name`; running tasks finish.

    `source` names where the request came from ("the queues page"); the log
    line records it, because a queue has no event log of its own.
    """
    state = _update(name, paused=True)
    log.info("Queue %s paused from %s", name, source,
             extra={"queue": name, "source": source, "event": "queue_paused"})
    return state


def resume_queue(name: str, *, source: str = "code") -> QueueState:
    state = _update(name, paused=False)
    log.info("Queue %s resumed from %s", name, source,
             extra={"queue": name, "source": source, "event": "queue_resumed"})
    return state


def set_concurrency_limit(name: str, limit: int | None) -> QueueState:
    """Cap the tasks of queue `name` that run at once across all workers; None lifts the cap."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValidationError({"concurrency_limit": "must be a whole number of at least 1, or none"})
    state = _update(name, concurrency_limit=limit)
    log.info("Queue %s concurrency limit set to %s", name, limit if limit is not None else "none",
             extra={"queue": name, "event": "queue_limit"})
    return state


def claim_rules(session, *, lock: bool) -> tuple[set[str], dict[str, int]]:
    """Return the paused queues, and the free slots of each queue with a concurrency limit.

    With `lock`, the rows of limited queues are locked until the transaction
    ends, so two workers on PostgreSQL cannot both fill the last slot.
    """
    rows = session.execute(
        select(QueueState.name, QueueState.paused, QueueState.concurrency_limit)
        .where((QueueState.paused.is_(True)) | (QueueState.concurrency_limit.is_not(None)))
    ).all()
    paused = {row.name for row in rows if row.paused}
    limits = {row.name: row.concurrency_limit for row in rows
              if not row.paused and row.concurrency_limit is not None}
    if not limits:
        return paused, {}

    if lock:
        session.execute(
            select(QueueState.name).where(QueueState.name.in_(limits)).with_for_update()
        ).all()
    running = dict(session.execute(
        select(Task.queue, func.count())
        .where(Task.status == TaskStatus.PROCESSING.value, Task.queue.in_(limits))
        .group_by(Task.queue)
    ).all())
    free = {name: max(0, limit - running.get(name, 0)) for name, limit in limits.items()}
    return paused, free


def list_queues() -> list[QueueOverview]:
    """Return every queue that has tasks or settings, with counts per status.

    Each count stops after COUNT_LIMIT tasks, and `counts_exact` marks which
    stopped: a full count of a queue with a million finished tasks would read
    a million index entries on every request.
    """
    session = db.session()
    counts: dict[str, dict[str, int]] = {}
    exact: dict[str, dict[str, bool]] = {}
    for status in TaskStatus:
        for name in _queues_with(session, status.value):
            found = session.scalar(select(func.count()).select_from(
                select(Task.id).where(Task.status == status.value, Task.queue == name)
                .limit(COUNT_LIMIT + 1).subquery()))
            counts.setdefault(name, _zero_counts())[status.value] = min(found, COUNT_LIMIT)
            exact.setdefault(name, {s.value: True for s in TaskStatus})[status.value] = (
                found <= COUNT_LIMIT)
    oldest = dict(session.execute(
        select(Task.queue, func.min(Task.run_at))
        .where(Task.status.in_(CLAIMABLE_STATUSES))
        .group_by(Task.queue)
    ).all())
    states = {state.name: state for state in session.scalars(select(QueueState))}

    overviews = []
    for name in sorted(set(counts) | set(states)):
        state = states.get(name)
        overviews.append(QueueOverview(
            name=name,
            paused=bool(state and state.paused),
            concurrency_limit=state.concurrency_limit if state else None,
            counts=counts.get(name, _zero_counts()),
            oldest_waiting_at=oldest.get(name),
            counts_exact=exact.get(name, {s.value: True for s in TaskStatus}),
        ))
    return overviews


def _zero_counts() -> dict[str, int]:
    return {status.value: 0 for status in TaskStatus}


def _queues_with(session, status: str) -> list[str]:
    """Return the queues that have tasks in `status`, in name order.

    Each step seeks the next name in ix_tasks_status_queue, so the cost grows
    with the number of queues, not with the number of tasks.
    """
    names = []
    name = session.scalar(select(func.min(Task.queue)).where(Task.status == status))
    while name is not None:
        names.append(name)
        name = session.scalar(
            select(func.min(Task.queue)).where(Task.status == status, Task.queue > name))
    return names
