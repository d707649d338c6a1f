"""Attempts of one task, derived from its event log for the task page.

Each `started` event (a claim) opens an attempt. Events that carry the same
attempt number and come after it belong to that attempt: its log lines, and
the event that ends it. Attempt numbers can repeat, because a worker that
stops releases its attempt without counting it, so events are matched to the
latest attempt with their number, in event order.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from app.extensions import db
from app.tasks import EventKind, TaskEvent, TaskStatus

# Events that end an attempt, and how the page names each outcome.
OUTCOMES = {
    EventKind.SUCCEEDED: ("Succeeded", TaskStatus.SUCCEEDED),
    EventKind.RETRY_SCHEDULED: ("Failed, retry scheduled", TaskStatus.RETRYING),
    EventKind.FAILED: ("Failed", TaskStatus.FAILED),
    EventKind.CANCELLED: ("Cancelled", TaskStatus.CANCELLED),
    EventKind.REQUEUED: ("Released, not counted", TaskStatus.PENDING),
}
FAILED_OUTCOMES = frozenset({EventKind.RETRY_SCHEDULED, EventKind.FAILED})
# Outcomes whose event message quotes the error of the attempt.
ERROR_OUTCOMES = FAILED_OUTCOMES | {EventKind.CANCELLED}
# Characters of an error's first line that must appear in an outcome message
# to tie the error to that attempt. Event messages are truncated when long.
ERROR_MATCH_LENGTH = 200

# The message of a failed attempt's event, as app/tasks/queue.py writes it:
# "Attempt 2 of 3 failed: ValueError: bad input. Retrying in 4.0 s."
FAILED_MESSAGE = re.compile(
    # The queue ends the error with a full stop when it has none, so that the
    # next sentence reads apart: the error is shown without it.
    r"^Attempt \d+ of \d+ failed: (?P<error>.*?)\.?"
    r"(?: Retrying in [\d.]+ s\.| No attempts left\.| The error is not retryable\.)?$",
    re.DOTALL,
)

# Log lines shown per attempt. A handler may log without limit, and the task
# page reads and renders its lines on each refresh, so older lines are left
# to the event log.
MAX_LOG_LINES = 200


@dataclass
class Attempt:
    """One claim of a task by a worker, from its `started` event to the event that ended it."""

    sequence: int
    number: int
    worker_id: str | None
    started_at: datetime
    ended_at: datetime | None = None
    outcome_kind: EventKind | None = None
    outcome_message: str = ""
    lease_expired: bool = False
    running: bool = False
    logs: list = field(default_factory=list)
    hidden_log_count: int = 0
    error: str | None = None
    traceback: str | None = None

    @property
    def duration_seconds(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    @property
    def outcome(self) -> str:
        if self.outcome_kind is not None:
            label = OUTCOMES[self.outcome_kind][0]
            return f"Worker lost: {label.lower()}" if self.lease_expired else label
        return "Running" if self.running else "No outcome recorded"

    @property
    def outcome_status(self) -> str:
        """Return the status whose colour the outcome takes."""
        if self.outcome_kind is not None:
            return OUTCOMES[self.outcome_kind][1].value
        return TaskStatus.PROCESSING.value if self.running else "UNKNOWN"

    @property
    def failed(self) -> bool:
        return self.outcome_kind in FAILED_OUTCOMES or self.error is not None

    @property
    def error_text(self) -> str:
        """Return the attempt's error: the stored one, else the one its event message quotes."""
        if self.error:
            return self.error
        match = FAILED_MESSAGE.match(self.outcome_message)
        return match.group("error") if match else self.outcome_message

    @property
    def log_count(self) -> int:
        return len(self.logs) + self.hidden_log_count


def load_attempts(task) -> tuple[list[Attempt], list[tuple[str, object]]]:
    """Read a task's events and group them into attempts, as derive_attempts does.

    Every event that is not a log line is read, but only the newest
    MAX_LOG_LINES log lines of each attempt number, so that a refresh costs
    the same however much a handler logged.
    """
    is_log = (TaskEvent.task_id == task.id) & (TaskEvent.kind == EventKind.LOG.value)
    totals = dict(db.session.execute(
        select(TaskEvent.attempt, func.count()).where(is_log).group_by(TaskEvent.attempt)
    ).all())

    events = list(db.session.scalars(
        select(TaskEvent).where(TaskEvent.task_id == task.id,
                                TaskEvent.kind != EventKind.LOG.value)))
    for number in totals:
        events.extend(db.session.scalars(
            select(TaskEvent).where(is_log, TaskEvent.attempt == number)
            .order_by(TaskEvent.id.desc()).limit(MAX_LOG_LINES)))
    events.sort(key=lambda event: event.id)
    return derive_attempts(task, events, log_totals=totals)


def derive_attempts(task, events, log_totals: dict[int, int] | None = None
                    ) -> tuple[list[Attempt], list[tuple[str, object]]]:
    """Group a task's events, oldest first, into attempts.

    Return the attempts in the order they started, and the task's history:
    ("attempt", Attempt) and ("event", TaskEvent) pairs in the order they
    happened. The events there are those of no attempt, such as submitted, or
    a person's retry or cancel of a waiting task. `log_totals` gives the
    number of log lines per attempt number when `events` holds only the
    newest of them, so that each attempt can say how many it left out.
    """
    attempts: list[Attempt] = []
    latest_by_number: dict[int, Attempt] = {}
    history: list[tuple[str, object]] = []

    for event in events:
        if event.kind == EventKind.STARTED:
            attempt = Attempt(sequence=len(attempts) + 1, number=event.attempt,
                              worker_id=event.worker_id, started_at=event.created_at)
            attempts.append(attempt)
            latest_by_number[event.attempt] = attempt
            history.append(("attempt", attempt))
            continue

        attempt = latest_by_number.get(event.attempt)
        if attempt is None or attempt.outcome_kind is not None:
            history.append(("event", event))
        elif event.kind == EventKind.LOG:
            _add_log_line(attempt, event)
        elif event.kind == EventKind.LEASE_EXPIRED:
            attempt.lease_expired = True
        elif event.kind == EventKind.REQUEUED and event.worker_id is None:
            # A person's retry names no worker, so it cannot end a running attempt.
            history.append(("event", event))
        elif event.kind in OUTCOMES:
            attempt.outcome_kind = EventKind(event.kind)
            attempt.outcome_message = event.message
            attempt.ended_at = event.created_at
            attempt.traceback = event.traceback
        else:
            history.append(("event", event))

    _mark_running(task, attempts)
    _attach_last_error(task, attempts)
    if log_totals:
        _count_unread_log_lines(events, attempts, log_totals)
    return attempts, history


def _add_log_line(attempt: Attempt, event) -> None:
    attempt.logs.append(event)
    if len(attempt.logs) > MAX_LOG_LINES:
        del attempt.logs[0]
        attempt.hidden_log_count += 1


def _count_unread_log_lines(events, attempts: list[Attempt], log_totals: dict[int, int]) -> None:
    """Add the log lines that were not read to the first attempt with their number.

    The lines left unread are the oldest of their attempt number. NOTE: when a
    released attempt and its rerun share a number, all of them are counted
    against the first, even those that the rerun wrote.
    """
    read = {}
    for event in events:
        if event.kind == EventKind.LOG:
            read[event.attempt] = read.get(event.attempt, 0) + 1
    first_by_number = {}
    for attempt in attempts:
        first_by_number.setdefault(attempt.number, attempt)
    for number, total in log_totals.items():
        unread = total - read.get(number, 0)
        if unread > 0 and number in first_by_number:
            first_by_number[number].hidden_log_count += unread


def _mark_running(task, attempts: list[Attempt]) -> None:
    """Mark the latest attempt as running when the task is PROCESSING and it has no outcome."""
    if task.status == TaskStatus.PROCESSING and attempts:
        latest = attempts[-1]
        latest.running = latest.outcome_kind is None and latest.number == task.attempts


def _attach_last_error(task, attempts: list[Attempt]) -> None:
    """Give the task's last error and traceback to the attempt whose outcome event names it.

    The event that ends a failed attempt quotes its error, so the latest
    failed attempt whose message contains the error's first line is the one
    it came from. Each attempt's traceback comes from its outcome event; the
    task's copy fills in for events written before events kept tracebacks.
    """
    if not task.last_error:
        return
    first_line = task.last_error.splitlines()[0][:ERROR_MATCH_LENGTH]
    for attempt in reversed(attempts):
        if attempt.outcome_kind in ERROR_OUTCOMES and first_line in attempt.outcome_message:
            attempt.error = task.last_error
            if attempt.traceback is None:
                attempt.traceback = task.last_traceback
            return
