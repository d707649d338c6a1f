"""Read-side statistics for the queues page and the charts, and the queue depth samples.

Every query reads a bounded slice of the tasks table through an index, so the
pages cost about the same with a million tasks as with a hundred:

- queue counts read ix_tasks_status_queue for unfinished tasks and
  ix_tasks_finished_at for tasks finished within WINDOW, and the oldest
  waiting task of each queue is its first entry in ix_tasks_queue_waiting;
- the finished-per-minute chart and the percentiles read the tasks that
  finished within WINDOW, through ix_tasks_finished_at, and the percentiles
  use at most TIMING_SAMPLE_LIMIT of the latest of them;
- the queue depth chart reads queue_samples, which workers fill once a
  minute (record_queue_sample) and prune after SAMPLE_RETENTION.
"""

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, extract, func, literal, select, text
from sqlalchemy.dialects import postgresql, sqlite

from app.extensions import db

from .lifecycle import CLAIMABLE_STATUSES, TaskStatus
from .models import QueueSample, QueueState, Task, WorkerProcess
from .session import clock, write_transaction

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=1)
SAMPLE_INTERVAL = timedelta(minutes=1)
# Workers try to sample this often. With several tries a minute, no minute is
# skipped when the timer drifts across a minute boundary. Only the first try
# of each minute stores anything.
SAMPLE_ATTEMPT_INTERVAL = timedelta(seconds=20)
SAMPLE_RETENTION = timedelta(days=1)
TIMING_SAMPLE_LIMIT = 5000
PERCENTILES = (50, 95, 99)
# Queues whose samples show waiting or running tasks within this span keep
# getting samples, with zeros, so that their line drops to zero on the chart
# instead of ending where the queue emptied.
SAMPLE_QUEUE_MEMORY = timedelta(hours=1)

WAITING_STATUSES = sorted(status.value for status in CLAIMABLE_STATUSES)
# The condition of the partial index ix_tasks_queue_waiting, as literal SQL:
# SQLite uses a partial index only for a query that repeats its condition,
# and a condition with bound parameters does not count as a repeat.
IS_WAITING = text("tasks.status IN ('PENDING', 'RETRYING')")
UNFINISHED_STATUSES = sorted(
    status.value for status in TaskStatus if not status.is_terminal
)
FINISHED_STATUSES = [TaskStatus.SUCCEEDED.value, TaskStatus.FAILED.value]


def _unindexed(column):
    """Return `column` as an expression that no index matches.

    A condition on it then leaves the choice of index to the other
    conditions. Without ANALYZE statistics, SQLite prefers an index with an
    equality on its first column, such as status, over a range on
    finished_at, though the range is far more selective in these queries.
    """
    return column.concat("")


def floor_minute(moment: datetime) -> datetime:
    """Return the start of the minute that contains `moment`, in UTC."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def percentile(sorted_values: list[float], rank: float) -> float | None:
    """Return the `rank`-th percentile (0 to 100) of ascending values, interpolating linearly.

    This is the "linear" method of NumPy and PERCENTILE.INC in spreadsheets:
    the value at position rank / 100 * (n - 1), between its two neighbours.
    """
    if not sorted_values:
        return None
    position = rank / 100 * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = math.ceil(position)
    fraction = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * fraction


# Queues


@dataclass(frozen=True)
class QueueStats:
    """One queue on the queues page.

    `counts` contains every unfinished task by status, and the tasks that
    finished within `window` by status; finished tasks older than that are
    not counted, so the page stays fast however long the history grows.
    """

    name: str
    paused: bool
    concurrency_limit: int | None
    counts: dict[str, int]
    window: timedelta
    oldest_due_at: datetime | None
    oldest_wait_seconds: float | None

    @property
    def waiting(self) -> int:
        return sum(self.counts[status] for status in WAITING_STATUSES)


def _empty_counts() -> dict[str, int]:
    return {status.value: 0 for status in TaskStatus}


def queue_stats(now: datetime | None = None, window: timedelta = WINDOW) -> list[QueueStats]:
    """Return the queues, by name, with their task counts and the age of their oldest due task.

    A queue is listed when it has unfinished tasks, tasks finished within
    `window`, settings (a row in `queues`), or depth samples from the last
    SAMPLE_RETENTION. The oldest due task is the waiting (PENDING or
    RETRYING) task whose run_at passed longest ago; tasks scheduled for
    later are counted but not aged.
    """
    session = db.session()
    now = clock(session, now)

    counts: dict[str, dict[str, int]] = {}
    unfinished = session.execute(
        select(Task.status, Task.queue, func.count())
        .where(Task.status.in_(UNFINISHED_STATUSES))
        .group_by(Task.status, Task.queue)
    )
    # Grouped by the plain status column, SQLite would scan all of
    # ix_tasks_status_queue for its order instead of reading the window's
    # slice of ix_tasks_finished_at.
    finished_status = _unindexed(Task.status).label("status")
    finished = session.execute(
        select(finished_status, Task.queue, func.count())
        .where(Task.finished_at >= now - window)
        .group_by(finished_status, Task.queue)
    )
    for status, name, count in [*unfinished, *finished]:
        counts.setdefault(name, _empty_counts())[status] = count
    states = {state.name: state for state in session.scalars(select(QueueState))}
    sampled = session.scalars(
        select(QueueSample.queue).distinct()
        .where(QueueSample.sampled_at >= floor_minute(now) - SAMPLE_RETENTION)
    ).all()

    result = []
    for name in sorted(set(counts) | set(states) | set(sampled)):
        queue_counts = counts.get(name, _empty_counts())
        oldest = None
        if any(queue_counts[status] for status in WAITING_STATUSES):
            oldest = _oldest_due(session, name, now)
        state = states.get(name)
        result.append(QueueStats(
            name=name,
            paused=bool(state and state.paused),
            concurrency_limit=state.concurrency_limit if state else None,
            counts=queue_counts,
            window=window,
            oldest_due_at=oldest,
            oldest_wait_seconds=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        ))
    return result


def _oldest_due(session, queue_name: str, now: datetime) -> datetime | None:
    # One index seek per queue, because ix_tasks_queue_waiting keeps the
    # entries of each queue in run_at order.
    return session.scalar(
        select(func.min(Task.run_at)).where(Task.queue == queue_name, IS_WAITING, Task.run_at <= now)
    )


# Tasks finished per minute


@dataclass(frozen=True)
class MinuteCount:
    minute: datetime
    succeeded: int
    failed: int


def _minute_bucket(session, column):
    """Return SQL that truncates a timestamp column to its minute, as text on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("minute", func.timezone("UTC", column))
    # SQLite stores UTCDateTime as "YYYY-MM-DD HH:MM:SS.ffffff" text; the first
    # 16 characters are its minute, read straight from the index entry.
    return func.substr(column, 1, 16)


def _bucket_minute(value) -> datetime:
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.replace(tzinfo=UTC)


def finished_per_minute(now: datetime | None = None, window: timedelta = WINDOW) -> list[MinuteCount]:
    """Return the tasks that succeeded and failed in each minute of `window`, oldest first.

    Every minute of the window is present, with zeros where nothing finished.
    The last entry is the current minute, which is still filling up.
    """
    session = db.session()
    now = clock(session, now)
    last = floor_minute(now)
    first = last - window + SAMPLE_INTERVAL
    bucket = _minute_bucket(session, Task.finished_at).label("minute")
    rows = session.execute(
        select(bucket, Task.status, func.count())
        .where(Task.finished_at >= first, _unindexed(Task.status).in_(FINISHED_STATUSES))
        .group_by(bucket, Task.status)
    )
    found: dict[datetime, dict[str, int]] = {}
    for minute, status, count in rows:
        found.setdefault(_bucket_minute(minute), {})[status] = count

    minutes = []
    moment = first
    while moment <= last:
        counts = found.get(moment, {})
        minutes.append(MinuteCount(minute=moment,
                                   succeeded=counts.get(TaskStatus.SUCCEEDED.value, 0),
                                   failed=counts.get(TaskStatus.FAILED.value, 0)))
        moment += SAMPLE_INTERVAL
    return minutes


# Run and wait time percentiles


@dataclass(frozen=True)
class TypeTimings:
    type: str
    count: int
    run_seconds: dict[int, float]
    wait_seconds: dict[int, float]


@dataclass(frozen=True)
class TimingReport:
    since: datetime
    until: datetime
    sample_size: int
    limit: int
    types: list[TypeTimings]

    @property
    def truncated(self) -> bool:
        """True when the sample reached its limit, so older tasks of the window may be left out."""
        return self.sample_size >= self.limit


def _seconds_between(session, start, end):
    """Return SQL for the seconds from `start` to `end`, so rows carry one float, not two dates."""
    if session.get_bind().dialect.name == "postgresql":
        return extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * literal(86400.0)


def task_timings(now: datetime | None = None, window: timedelta = WINDOW,
                 limit: int = TIMING_SAMPLE_LIMIT) -> TimingReport:
    """Return run and wait time percentiles per task type, over tasks that finished recently.

    The sample is the latest `limit` tasks that succeeded or failed within
    `window`. Run time is from the start of the last attempt to its end. Wait
    time is from when that attempt fell due (run_at) to its start, so a
    scheduled task does not count the time before its schedule.
    """
    session = db.session()
    now = clock(session, now)
    since = now - window
    run = _seconds_between(session, Task.started_at, Task.finished_at)
    wait = _seconds_between(session, Task.run_at, Task.started_at)
    rows = session.execute(
        select(Task.type, run, wait)
        .where(Task.finished_at >= since, _unindexed(Task.status).in_(FINISHED_STATUSES),
               Task.started_at.is_not(None))
        .order_by(Task.finished_at.desc())
        .limit(limit)
    ).all()

    by_type: dict[str, tuple[list[float], list[float]]] = {}
    for task_type, run_seconds, wait_seconds in rows:
        runs, waits = by_type.setdefault(task_type, ([], []))
        runs.append(max(0.0, float(run_seconds)))
        waits.append(max(0.0, float(wait_seconds)))

    types = []
    for task_type in sorted(by_type):
        runs, waits = (sorted(values) for values in by_type[task_type])
        types.append(TypeTimings(
            type=task_type,
            count=len(runs),
            run_seconds={rank: percentile(runs, rank) for rank in PERCENTILES},
            wait_seconds={rank: percentile(waits, rank) for rank in PERCENTILES},
        ))
    return TimingReport(since=since, until=now, sample_size=len(rows), limit=limit, types=types)


# Queue depth samples


@dataclass(frozen=True)
class QueueDepth:
    minutes: list[datetime]
    waiting: dict[str, list[int]]

    @property
    def peak(self) -> int:
        return max((max(values) for values in self.waiting.values()), default=0)


def queue_depth(now: datetime | None = None, window: timedelta = WINDOW) -> QueueDepth:
    """Return the waiting tasks of each queue at every sampled minute of `window`, oldest first.

    A queue without a row at a sampled minute had no waiting or running task
    then, so it counts as zero. Minutes no worker sampled are left out.
    """
    session = db.session()
    now = clock(session, now)
    since = floor_minute(now) - window + SAMPLE_INTERVAL
    rows = session.execute(
        select(QueueSample.sampled_at, QueueSample.queue, QueueSample.waiting)
        .where(QueueSample.sampled_at >= since)
        .order_by(QueueSample.sampled_at)
    ).all()

    minutes = sorted({row.sampled_at for row in rows})
    position = {minute: index for index, minute in enumerate(minutes)}
    waiting: dict[str, list[int]] = {}
    for row in rows:
        values = waiting.setdefault(row.queue, [0] * len(minutes))
        values[position[row.sampled_at]] = row.waiting
    return QueueDepth(minutes=minutes, waiting=dict(sorted(waiting.items())))


def record_queue_sample(now: datetime | None = None) -> bool:
    """Store how many tasks wait and run in each queue at this minute; return True if stored.

    Every worker process may call this, as often as it likes. Only the first
    call of each minute stores rows: the others find the minute taken, or
    lose the race on the primary key and insert nothing. Storing a sample
    also deletes samples older than SAMPLE_RETENTION.
    """
    session = db.session()
    now = clock(session, now)
    minute = floor_minute(now)
    already_sampled = session.scalar(
        select(QueueSample.queue).where(QueueSample.sampled_at == minute).limit(1))
    if already_sampled is not None:
        return False

    waiting = dict(session.execute(
        select(Task.queue, func.count())
        .where(IS_WAITING, Task.run_at <= now)
        .group_by(Task.queue)
    ).all())
    processing = dict(session.execute(
        select(Task.queue, func.count())
        .where(Task.status == TaskStatus.PROCESSING.value)
        .group_by(Task.queue)
    ).all())
    recent = session.scalars(
        select(QueueSample.queue).distinct()
        .where(QueueSample.sampled_at >= minute - SAMPLE_QUEUE_MEMORY,
               (QueueSample.waiting > 0) | (QueueSample.processing > 0))
    ).all()
    configured = session.scalars(select(QueueState.name)).all()
    names = sorted(set(waiting) | set(processing) | set(recent) | set(configured))
    if not names:
        return False

    values = [{"sampled_at": minute, "queue": name, "waiting": waiting.get(name, 0),
               "processing": processing.get(name, 0)} for name in names]
    with write_transaction() as session:
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        stored = session.execute(
            insert(QueueSample).values(values).on_conflict_do_nothing()
        ).rowcount
        if stored:
            session.execute(delete(QueueSample).where(QueueSample.sampled_at < minute - SAMPLE_RETENTION))
    if stored:
        log.debug("Queue depth sample of %s stored for %s queues", minute.isoformat(), len(names),
                  extra={"event": "queue_sample_stored"})
    return bool(stored)


# Workers


@dataclass(frozen=True)
class RunningTask:
    id: int
    type: str
    queue: str
    started_at: datetime | None


@dataclass(frozen=True)
class WorkerOverview:
    """A registered worker process with the tasks it holds leases on.

    A worker is gone when its heartbeat is older than `stale_after`, the
    rule app/tasks/worker_registry.py applies: it died or lost the database,
    and its tasks return to their queues once their leases expire.
    """

    id: str
    hostname: str
    pid: int
    queues: list[str] | None
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_seconds: float
    gone: bool
    tasks: list[RunningTask]


@dataclass(frozen=True)
class WorkersReport:
    workers: list[WorkerOverview]
    # Tasks in PROCESSING whose lease holder has no row in `workers`, e.g. a
    # worker forgotten a day after it went, before its leases were recovered.
    unregistered: dict[str, list[RunningTask]]

    @property
    def live(self) -> list[WorkerOverview]:
        return [worker for worker in self.workers if not worker.gone]

    @property
    def gone(self) -> list[WorkerOverview]:
        return [worker for worker in self.workers if worker.gone]


def workers_report(stale_after: timedelta, now: datetime | None = None) -> WorkersReport:
    """Return every registered worker, live ones first, each with the tasks it runs, oldest first."""
    session = db.session()
    now = clock(session, now)
    workers = session.scalars(select(WorkerProcess)).all()
    # No ORDER BY: sorting by id in SQL makes SQLite walk the whole table in
    # id order instead of reading the few PROCESSING rows through an index.
    rows = session.execute(
        select(Task.id, Task.type, Task.queue, Task.started_at, Task.locked_by)
        .where(Task.status == TaskStatus.PROCESSING.value)
    ).all()

    running_by_worker: dict[str, list[RunningTask]] = {}
    for row in sorted(rows, key=lambda row: row.id):
        running_by_worker.setdefault(row.locked_by, []).append(
            RunningTask(id=row.id, type=row.type, queue=row.queue, started_at=row.started_at))

    overviews = []
    for worker in workers:
        age = max(0.0, (now - worker.heartbeat_at).total_seconds())
        overviews.append(WorkerOverview(
            id=worker.id, hostname=worker.hostname, pid=worker.pid, queues=worker.queues,
            concurrency=worker.concurrency, started_at=worker.started_at,
            heartbeat_at=worker.heartbeat_at, heartbeat_age_seconds=age,
            gone=now - worker.heartbeat_at > stale_after,
            tasks=running_by_worker.pop(worker.id, []),
        ))
    overviews.sort(key=lambda worker: (worker.gone, worker.started_at, worker.id))
    return WorkersReport(workers=overviews, unregistered=dict(sorted(running_by_worker.items())))


# Everything the charts show, read at one instant


@dataclass(frozen=True)
class Metrics:
    now: datetime
    window_start: datetime
    finished: list[MinuteCount]
    depth: QueueDepth
    timings: TimingReport


def metrics(now: datetime | None = None, window: timedelta = WINDOW) -> Metrics:
    """Return the data of every chart for the minute-aligned `window` that ends at `now`."""
    now = clock(db.session(), now)
    return Metrics(
        now=now,
        window_start=floor_minute(now) - window + SAMPLE_INTERVAL,
        finished=finished_per_minute(now, window),
        depth=queue_depth(now, window),
        timings=task_timings(now, window),
    )
