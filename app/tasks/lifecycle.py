"""Task statuses, event kinds and the table of allowed transitions."""

from enum import StrEnum


class TaskStatus(StrEnum):
    """The stage a task is in.

    PENDING     waiting to run. Set by submit (form, API, code), by a manual
                retry of a FAILED or CANCELLED task, and by a stopping worker
                that releases an attempt it could not finish. `run_at` may lie
                in the future.
    PROCESSING  claimed by one worker, which holds a lease until
                `lease_expires_at` and renews it with heartbeats. Set by claim.
    RETRYING    an attempt failed and another is due at `run_at` (backoff). Set
                by the worker when a handler raised, timed out or returned a
                result that cannot be stored, and by lease recovery.
    SUCCEEDED   the handler returned; `result` contains what it returned. Set by
                the worker. Terminal.
    FAILED      the last attempt failed. Set by the worker or lease recovery.
                Terminal.
    CANCELLED   stopped by a person before it finished: at once when it was
                waiting, or by the worker when a running handler stopped after
                being asked to. Terminal.
    """

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})

# Statuses a worker may claim from once `run_at` has passed.
CLAIMABLE_STATUSES = frozenset({TaskStatus.PENDING, TaskStatus.RETRYING})


class Transition(StrEnum):
    """Each named move between statuses; queue operations perform them."""

    START = "start"
    SUCCEED = "succeed"
    SCHEDULE_RETRY = "schedule_retry"
    FAIL = "fail"
    CANCEL = "cancel"
    REQUEUE = "retry"
    RELEASE = "release"


# The one table of allowed transitions: name -> (statuses it may start from,
# status it leads to). Every status change in queue.py is guarded by it.
TRANSITIONS: dict[Transition, tuple[frozenset[TaskStatus], TaskStatus]] = {
    Transition.START: (CLAIMABLE_STATUSES, TaskStatus.PROCESSING),
    Transition.SUCCEED: (frozenset({TaskStatus.PROCESSING}), TaskStatus.SUCCEEDED),
    Transition.SCHEDULE_RETRY: (frozenset({TaskStatus.PROCESSING}), TaskStatus.RETRYING),
    Transition.FAIL: (frozenset({TaskStatus.PROCESSING}), TaskStatus.FAILED),
    Transition.CANCEL: (
        frozenset({TaskStatus.PENDING, TaskStatus.RETRYING, TaskStatus.PROCESSING}),
        TaskStatus.CANCELLED,
    ),
    Transition.REQUEUE: (frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED}), TaskStatus.PENDING),
    Transition.RELEASE: (frozenset({TaskStatus.PROCESSING}), TaskStatus.PENDING),
}


def sources(transition: Transition) -> frozenset[TaskStatus]:
    """Return the statuses from which `transition` is allowed."""
    return TRANSITIONS[transition][0]


def target(transition: Transition) -> TaskStatus:
    """Return the status that `transition` leads to."""
    return TRANSITIONS[transition][1]


def allowed_targets(status: TaskStatus) -> frozenset[TaskStatus]:
    """Return every status a task in `status` may move to."""
    return frozenset(to for (froms, to) in TRANSITIONS.values() if status in froms)


class EventKind(StrEnum):
    """The kind of an event row. All but LOG name a change of status."""

    SUBMITTED = "submitted"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    RETRY_SCHEDULED = "retry_scheduled"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REQUEUED = "requeued"
    LEASE_EXPIRED = "lease_expired"
    LOG = "log"


class EventLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


# The level of each kind of event; a LOG event takes the level its handler gave.
KIND_LEVELS = {
    EventKind.SUBMITTED: EventLevel.INFO,
    EventKind.STARTED: EventLevel.INFO,
    EventKind.SUCCEEDED: EventLevel.INFO,
    EventKind.RETRY_SCHEDULED: EventLevel.WARNING,
    EventKind.FAILED: EventLevel.ERROR,
    EventKind.CANCELLED: EventLevel.WARNING,
    EventKind.REQUEUED: EventLevel.INFO,
    EventKind.LEASE_EXPIRED: EventLevel.WARNING,
    EventKind.LOG: EventLevel.INFO,
}
