"""Task and TaskEvent rows, with the CHECK constraints that back the invariants."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db

from .errors import InvalidTransition
from .expressions import task_duration
from .lifecycle import (
    TERMINAL_STATUSES,
    EventKind,
    EventLevel,
    TaskStatus,
    Transition,
    sources,
    target,
)
from .timeutil import UTCDateTime, isoformat

# BIGINT on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")


def _sql_in(column: str, values) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in sorted(values))})"


_TERMINAL_SQL = _sql_in("status", TERMINAL_STATUSES)

MAX_PRIORITY = 100
MAX_ATTEMPTS_LIMIT = 100


class Task(db.Model):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(_sql_in("status", TaskStatus), name="status_valid"),
        CheckConstraint(
            f"attempts >= 0 AND max_attempts >= 1 AND max_attempts <= {MAX_ATTEMPTS_LIMIT} "
            "AND attempts <= max_attempts",
            name="attempts_range",
        ),
        CheckConstraint(
            "(status = 'PROCESSING' AND locked_by IS NOT NULL AND lease_expires_at IS NOT NULL) "
            "OR (status <> 'PROCESSING' AND locked_by IS NULL AND lease_expires_at IS NULL)",
            name="lease_only_processing",
        ),
        CheckConstraint(
            f"({_TERMINAL_SQL} AND finished_at IS NOT NULL) "
            f"OR (NOT {_TERMINAL_SQL} AND finished_at IS NULL)",
            name="finished_only_terminal",
        ),
        CheckConstraint("result IS NULL OR status = 'SUCCEEDED'", name="result_only_succeeded"),
        CheckConstraint(
            "(started_at IS NULL OR started_at >= created_at) "
            "AND (finished_at IS NULL OR finished_at >= created_at) "
            "AND (finished_at IS NULL OR started_at IS NULL OR finished_at >= started_at)",
            name="timestamps_ordered",
        ),
        CheckConstraint("progress >= 0 AND progress <= 100", name="progress_range"),
        CheckConstraint(
            f"priority >= -{MAX_PRIORITY} AND priority <= {MAX_PRIORITY}", name="priority_range"
        ),
        CheckConstraint("timeout_seconds > 0", name="timeout_positive"),
        # The claim query: due tasks by priority, then run_at, then id. Partial,
        # so that it holds only waiting tasks and the claim reads them in order
        # instead of sorting the whole backlog.
        Index("ix_tasks_claim", "status", "run_at", "priority"),
        Index(
            "ix_tasks_due",
            text("priority DESC"),
            "run_at",
            "id",
            postgresql_where=text("status IN ('PENDING', 'RETRYING')"),
            sqlite_where=text("status IN ('PENDING', 'RETRYING')"),
        ),
        Index("ix_tasks_lease_expires_at", "lease_expires_at"),
        Index("ix_tasks_created_at", "created_at"),
        Index("ix_tasks_type", "type"),
        # The queues page: counts of unfinished tasks per status and queue
        # read this index alone, and the oldest waiting task of each queue is
        # its first entry in ix_tasks_queue_waiting.
        Index("ix_tasks_status_queue", "status", "queue"),
        Index(
            "ix_tasks_queue_waiting",
            "queue",
            "run_at",
            postgresql_where=text("status IN ('PENDING', 'RETRYING')"),
            sqlite_where=text("status IN ('PENDING', 'RETRYING')"),
        ),
        # The charts and the queues page: tasks finished in a recent window,
        # counted by status and queue from this index alone.
        Index("ix_tasks_finished_at", "finished_at", "status", "queue"),
        # The tasks page: keyset pages under each sort key (created_at reads
        # ix_tasks_created_at), and the status, type and queue filters in
        # the default order, newest first.
        Index("ix_tasks_started_at_id", "started_at", "id"),
        Index("ix_tasks_finished_at_id", "finished_at", "id"),
        Index("ix_tasks_duration", task_duration(), "id"),
        Index("ix_tasks_status_created_at", "status", "created_at", "id"),
        Index("ix_tasks_type_created_at", "type", "created_at", "id"),
        Index("ix_tasks_queue_created_at", "queue", "created_at", "id"),
        # A status or type filter under the other sorts. Without these, a
        # filter whose rows cluster at one end of the sort order ("noop tasks
        # by longest duration") scans most of the sort index.
        Index("ix_tasks_status_started_at", "status", "started_at", "id"),
        Index("ix_tasks_status_finished_at", "status", "finished_at", "id"),
        Index("ix_tasks_status_duration", "status", task_duration(), "id"),
        Index("ix_tasks_type_finished_at", "type", "finished_at", "id"),
        Index("ix_tasks_type_duration", "type", task_duration(), "id"),
        # The dashboard table and GET /api/tasks: a status filter, newest id first.
        Index("ix_tasks_status_id", "status", "id"),
        # A deleted task's id is never given to a new task on SQLite either.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict] = mapped_column(JSON)
    queue: Mapped[str] = mapped_column(String(100), default="default")
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.PENDING)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    timeout_seconds: Mapped[float] = mapped_column(Float)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    progress_message: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    locked_by: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at = mapped_column(UTCDateTime)
    created_at = mapped_column(UTCDateTime, nullable=False)
    run_at = mapped_column(UTCDateTime, nullable=False)
    started_at = mapped_column(UTCDateTime)
    finished_at = mapped_column(UTCDateTime)
    result = mapped_column(JSON(none_as_null=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_traceback: Mapped[str | None] = mapped_column(Text)

    events = relationship(
        "TaskEvent",
        back_populates="task",
        order_by="TaskEvent.id",
        passive_deletes=True,
        lazy="dynamic",
    )

    def __repr__(self):
        return f"<Task {self.id} {self.type} {self.status}>"

    # Entity checks. Each raises InvalidTransition when the task's current
    # status does not allow the move; queue.py calls them before its guarded
    # UPDATE, which repeats the same check in SQL against concurrent changes.

    def check(self, transition: Transition) -> TaskStatus:
        """Raise InvalidTransition unless `transition` is allowed now; return its target."""
        if self.status not in sources(transition):
            raise InvalidTransition(self.id, self.status, transition.value, sources(transition))
        return target(transition)

    def start(self) -> TaskStatus:
        return self.check(Transition.START)

    def succeed(self) -> TaskStatus:
        return self.check(Transition.SUCCEED)

    def schedule_retry(self) -> TaskStatus:
        return self.check(Transition.SCHEDULE_RETRY)

    def fail(self) -> TaskStatus:
        return self.check(Transition.FAIL)

    def cancel(self) -> TaskStatus:
        return self.check(Transition.CANCEL)

    def requeue(self) -> TaskStatus:
        return self.check(Transition.REQUEUE)

    def release(self) -> TaskStatus:
        return self.check(Transition.RELEASE)

    @property
    def is_terminal(self) -> bool:
        return TaskStatus(self.status).is_terminal

    @property
    def can_cancel(self) -> bool:
        return self.status in sources(Transition.CANCEL) and not self.cancel_requested

    @property
    def can_retry(self) -> bool:
        return self.status in sources(Transition.REQUEUE)

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from the start of the latest attempt to the end, if both happened."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "type": self.type,
            "params": self.params,
            "status": self.status,
            "queue": self.queue,
            "priority": self.priority,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "progress": self.progress,
            "progress_message": self.progress_message,
            "cancel_requested": self.cancel_requested,
            "timeout_seconds": self.timeout_seconds,
            "idempotency_key": self.idempotency_key,
            "locked_by": self.locked_by,
            "lease_expires_at": isoformat(self.lease_expires_at),
            "created_at": isoformat(self.created_at),
            "run_at": isoformat(self.run_at),
            "started_at": isoformat(self.started_at),
            "finished_at": isoformat(self.finished_at),
            "result": self.result,
            "error": self.last_error,
        }


class TaskEvent(db.Model):
    __tablename__ = "task_events"
    __table_args__ = (
        CheckConstraint(_sql_in("kind", EventKind), name="kind_valid"),
        CheckConstraint(_sql_in("level", EventLevel), name="level_valid"),
        Index("ix_task_events_task_id_id", "task_id", "id"),
        Index("ix_task_events_kind_id", "kind", "id"),
        # The event log filtered by level, newest first.
        Index("ix_task_events_level_id", "level", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(20))
    level: Mapped[str] = mapped_column(String(10), default=EventLevel.INFO)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text, default="")
    # Set on the event that ends a failed attempt, so that each attempt keeps its own.
    traceback: Mapped[str | None] = mapped_column(Text)
    created_at = mapped_column(UTCDateTime, nullable=False)

    task = relationship("Task", back_populates="events")

    def __repr__(self):
        return f"<TaskEvent {self.id} task={self.task_id} {self.kind}>"

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "task_id": self.task_id,
            "kind": self.kind,
            "level": self.level,
            "attempt": self.attempt,
            "worker_id": self.worker_id,
            "message": self.message,
            "traceback": self.traceback,
            "created_at": isoformat(self.created_at),
        }


class WorkerProcess(db.Model):
    """A worker process that announced itself, with its last heartbeat.

    A clean stop deletes the row. A row whose heartbeat is older than
    LEASE_SECONDS belongs to a worker that is gone: it died or lost the
    database, and the leases of its tasks run out and are recovered.
    """

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues = mapped_column(JSON(none_as_null=True))
    concurrency: Mapped[int] = mapped_column(Integer)
    started_at = mapped_column(UTCDateTime, nullable=False)
    heartbeat_at = mapped_column(UTCDateTime, nullable=False)

    def to_dict(self, *, running: list[int], gone: bool) -> dict:
        return {
            "id": self.id,
            "hostname": self.hostname,
            "pid": self.pid,
            "queues": self.queues,
            "concurrency": self.concurrency,
            "started_at": isoformat(self.started_at),
            "heartbeat_at": isoformat(self.heartbeat_at),
            "running_task_ids": running,
            "gone": gone,
        }


class QueueState(db.Model):
    """Settings of one named queue that every worker obeys: paused, and a concurrency limit.

    A queue without a row is running and unlimited.
    """

    __tablename__ = "queues"
    __table_args__ = (
        CheckConstraint(
            "concurrency_limit IS NULL OR concurrency_limit >= 1", name="concurrency_limit_positive"
        ),
    )

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    concurrency_limit: Mapped[int | None] = mapped_column(Integer)
    updated_at = mapped_column(UTCDateTime, nullable=False)


class QueueSample(db.Model):
    """The depth of one queue at one minute, for the queue depth chart.

    The primary key allows one row per queue and minute, so every worker
    process may take samples and only the first one of each minute is kept.
    """

    __tablename__ = "queue_samples"
    __table_args__ = (
        CheckConstraint("waiting >= 0 AND processing >= 0", name="counts_not_negative"),
    )

    sampled_at = mapped_column(UTCDateTime, primary_key=True)
    queue: Mapped[str] = mapped_column(String(100), primary_key=True)
    waiting: Mapped[int] = mapped_column(Integer)
    processing: Mapped[int] = mapped_column(Integer)
