"""Queue operations: every change of a task's status.

Each operation is one transaction that performs a guarded UPDATE (the WHERE
clause repeats the statuses the transition may start from, and the lease owner
where a worker acts) and writes the event row that records the change. When
the guard matches no row, the operation raises instead of writing anything.
Views, the JSON API, the worker and tests all go through these functions.
"""

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import TextClause, bindparam, case, func, insert, select, text, update
from sqlalchemy.sql.selectable import TextualSelect
from sqlalchemy.exc import IntegrityError

from app.extensions import db

from . import signals
from .backoff import retry_delay
from .errors import InvalidResult, InvalidTransition, LeaseLost, TaskError, TaskNotFound
from .lifecycle import (
    CLAIMABLE_STATUSES,
    KIND_LEVELS,
    EventKind,
    EventLevel,
    TaskStatus,
    Transition,
    sources,
)
from .models import MAX_ATTEMPTS_LIMIT, Task, TaskEvent
from .registry import registry
from .submission import lone_surrogate_path, validate_submission
from .queue_control import claim_rules
from .session import clock, clock_expression, uses_database_clock, write_transaction
from .timeutil import UTCDateTime

log = logging.getLogger(__name__)

tasks_table = Task.__table__
events_table = TaskEvent.__table__

# PostgreSQL channel on which a committed submit or retry wakes idle workers;
# the payload is the task's queue.
NOTIFY_CHANNEL = "taskboard_tasks"

MAX_MESSAGE_LENGTH = 10_000
# Characters that storable_text replaces: NUL and the UTF-16 surrogates.
UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
MAX_PROGRESS_MESSAGE_LENGTH = 200
WORKER_LOST = "WorkerLost"


@dataclass(frozen=True)
class Claim:
    """One attempt of a task, held by one worker until it completes or its lease runs out."""

    task_id: int
    type: str
    params: dict
    attempt: int
    max_attempts: int
    timeout_seconds: float
    worker_id: str


class RetryLimitReached(TaskError):
    def __init__(self, task_id: int):
        self.task_id = task_id
        super().__init__(
            f"cannot retry task {task_id}: it has used the maximum of {MAX_ATTEMPTS_LIMIT} attempts"
        )


def _setting(name: str):
    return current_app.config[name]


def _notify_workers(session, queue_name: str) -> None:
    """Wake workers in other processes when this transaction commits (PostgreSQL only)."""
    if uses_database_clock(session):
        session.execute(select(func.pg_notify(NOTIFY_CHANNEL, queue_name)))


def storable_text(text: str | None) -> str | None:
    """Return `text` with each NUL character and lone surrogate replaced by U+FFFD.

    PostgreSQL's text columns cannot hold NUL, and a handler's error or log
    line may contain one. A lone surrogate (from "\\ud800" in JSON or a
    bytes.decode with errors="surrogateescape") cannot be written as UTF-8,
    so a page that showed it would fail. Both databases store the same
    text, so that a message reads the same on either.
    """
    if text is None:
        return None
    return UNSTORABLE_CHARACTERS.sub("\ufffd", text)


def _event_row(task_id, kind: EventKind, *, attempt: int, message: str, now: datetime,
               worker_id: str | None = None, level: EventLevel | None = None,
               traceback: str | None = None) -> dict:
    # Every row has the same keys, so that a list of them inserts as one executemany.
    return {
        "task_id": task_id,
        "kind": kind.value,
        "level": (level or KIND_LEVELS[kind]).value,
        "attempt": attempt,
        "worker_id": worker_id,
        "message": storable_text(message[:MAX_MESSAGE_LENGTH]),
        "traceback": storable_text(traceback),
        "created_at": now,
    }


def _write_events(session, rows: list[dict]) -> None:
    if rows:
        session.execute(insert(events_table), rows)


def _guarded_update(session, task_id, transition: Transition, values: Mapping, *conditions) -> bool:
    """UPDATE one task if its status allows `transition`; return whether a row changed."""
    statement = (
        update(tasks_table)
        .where(tasks_table.c.id == task_id, tasks_table.c.status.in_(sources(transition)), *conditions)
        .values(**values)
    )
    return session.execute(statement).rowcount == 1


def _load(session, task_id, *, for_update: bool = False) -> Task:
    task = session.get(Task, task_id, populate_existing=True, with_for_update=for_update)
    if task is None:
        raise TaskNotFound(task_id)
    return task


def _notify(signal, **kwargs) -> None:
    signal.send(current_app._get_current_object(), **kwargs)


# Submitting


def submit(data: Mapping, *, source: str = "code", now: datetime | None = None) -> tuple[Task, bool]:
    """Validate and store a new PENDING task; return it and whether it was created.

    `data` has the fields of the JSON API (type, params, priority,
    delay_seconds, max_attempts, timeout_seconds, queue, idempotency_key).
    Raise ValidationError, naming every invalid field, before anything is
    written. A submission whose idempotency key was used before returns the
    task of the first one, with created=False, and writes nothing.
    """
    submission = validate_submission(data)
    task_type = registry.get(submission.type)

    if submission.idempotency_key is not None:
        existing = _find_by_idempotency_key(submission.idempotency_key)
        if existing is not None:
            return existing, False

    task = Task(
        type=submission.type,
        params=submission.params,
        queue=submission.queue,
        status=TaskStatus.PENDING.value,
        priority=submission.priority,
        attempts=0,
        max_attempts=(
            submission.max_attempts
            or task_type.max_attempts
            or _setting("DEFAULT_MAX_ATTEMPTS")
        ),
        timeout_seconds=(
            submission.timeout_seconds
            or task_type.timeout_seconds
            or _setting("DEFAULT_TIMEOUT_SECONDS")
        ),
        progress=0,
        cancel_requested=False,
        idempotency_key=submission.idempotency_key,
    )
    message = f"Submitted from {source}"

    try:
        with write_transaction() as session:
            now = clock(session, now)
            task.created_at = now
            task.run_at = now + timedelta(seconds=submission.delay_seconds)
            if task.run_at > now:
                message += f"; due at {task.run_at.isoformat(timespec='seconds')}"
            session.add(task)
            session.flush()
            if task.run_at <= now:
                _notify_workers(session, task.queue)
            _write_events(session, [_event_row(task.id, EventKind.SUBMITTED, attempt=0,
                                               message=message, now=now)])
    except IntegrityError:
        # Two submissions with the same key raced; the unique index let one in.
        if submission.idempotency_key is None:
            raise
        existing = _find_by_idempotency_key(submission.idempotency_key)
        if existing is None:
            raise
        return existing, False

    log.info("Task %s submitted (%s) from %s", task.id, task.type, source,
             extra={"task_id": task.id, "event": "submitted"})
    _notify(signals.task_submitted, task_id=task.id, due_now=submission.delay_seconds == 0,
            queue=task.queue)
    return task, True


def _find_by_idempotency_key(key: str) -> Task | None:
    return db.session.scalar(select(Task).where(Task.idempotency_key == key))


# SQL of the worker's batch operations
#
# Claims and successful completions are the worker's hot path. Their
# statements are written once per database as SQL text, so that a batch
# costs one compiled statement with a fixed set of parameters, whatever its
# size: the tasks of a batch travel as one JSON array (SQLite) or as arrays
# and JSON (PostgreSQL). On PostgreSQL the event rows are inserted by the
# same statement, through a data-modifying WITH clause; SQLite has none, so
# there a second statement inserts them. Either way the change and its
# events share one transaction.


def _sql_literals(*values: str) -> str:
    """Return `values` as a comma-separated list of SQL string literals (constants only)."""
    return ", ".join(f"'{value}'" for value in values)


_CLAIMABLE_SQL = _sql_literals(TaskStatus.PENDING, TaskStatus.RETRYING)
_PROCESSING_SQL = _sql_literals(TaskStatus.PROCESSING)
_EVENT_COLUMNS = "task_id, kind, level, attempt, worker_id, message, created_at"
_STARTED_SQL = _sql_literals(EventKind.STARTED, KIND_LEVELS[EventKind.STARTED])
_SUCCEEDED_SQL = _sql_literals(EventKind.SUCCEEDED, KIND_LEVELS[EventKind.SUCCEEDED])
_CLAIM_RETURNING = "id, type, params, attempts, max_attempts, timeout_seconds, priority, run_at"
_SUCCEED_SET = (f"status = '{TaskStatus.SUCCEEDED}', finished_at = {{now}}, locked_by = NULL, "
                "lease_expires_at = NULL, progress = 100")
# The messages match those of the Python paths, "Attempt 2 of 3 started".
_STARTED_MESSAGE = "'Attempt ' || attempts || ' of ' || max_attempts || ' started'"

# PostgreSQL takes the time from the server unless the caller passed `now`.
_PG_NOW = "COALESCE(CAST(:now AS timestamptz), now())"

_PG_CLAIM = f"""
WITH due AS (
    SELECT id FROM tasks
    WHERE status IN ({_CLAIMABLE_SQL}) AND run_at <= {_PG_NOW}
      AND (CAST(:only AS text[]) IS NULL OR queue = ANY(CAST(:only AS text[])))
      AND queue <> ALL(CAST(:skip AS text[]))
    ORDER BY priority DESC, run_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE tasks AS t
    SET status = '{TaskStatus.PROCESSING}', attempts = t.attempts + 1,
        locked_by = CAST(:worker_id AS varchar),
        lease_expires_at = {_PG_NOW} + make_interval(secs => :lease_seconds),
        started_at = {_PG_NOW}, progress = 0, progress_message = NULL
    FROM due
    WHERE t.id = due.id AND t.status IN ({_CLAIMABLE_SQL})
    RETURNING t.id, t.type, t.params, t.attempts, t.max_attempts, t.timeout_seconds,
              t.priority, t.run_at, t.started_at
), started AS (
    INSERT INTO task_events ({_EVENT_COLUMNS})
    SELECT id, {_STARTED_SQL}, attempts, CAST(:worker_id AS varchar), {_STARTED_MESSAGE},
           started_at
    FROM claimed
    ORDER BY priority DESC, run_at, id
)
SELECT {_CLAIM_RETURNING} FROM claimed
"""

# Without ANALYZE statistics, SQLite's planner claimed through
# ix_tasks_claim and sorted the whole backlog. INDEXED BY makes it read the
# partial index in claim order. NOT INDEXED makes the UPDATE find each
# chosen row by its id instead of scanning the status index. RETURNING and
# UPDATE ... FROM need SQLite 3.35 or later.
_SQLITE_CLAIM = f"""
UPDATE tasks NOT INDEXED
SET status = '{TaskStatus.PROCESSING}', attempts = attempts + 1, locked_by = :worker_id,
    lease_expires_at = :lease_expires_at, started_at = :now, progress = 0,
    progress_message = NULL
WHERE status IN ({_CLAIMABLE_SQL}) AND id IN (
    SELECT id FROM tasks INDEXED BY ix_tasks_due
    WHERE status IN ({_CLAIMABLE_SQL}) AND run_at <= :now
      AND (:only IS NULL OR queue IN (SELECT value FROM json_each(:only)))
      AND queue NOT IN (SELECT value FROM json_each(:skip))
    ORDER BY priority DESC, run_at, id
    LIMIT :limit)
RETURNING {_CLAIM_RETURNING}
"""

_SQLITE_STARTED_EVENTS = f"""
INSERT INTO task_events ({_EVENT_COLUMNS})
SELECT id, {_STARTED_SQL}, attempts, locked_by, {_STARTED_MESSAGE}, started_at
FROM tasks
WHERE id IN (SELECT value FROM json_each(:ids))
ORDER BY priority DESC, run_at, id
"""

# :outcomes is a JSON array of [task id, attempt, worker id, result as JSON
# text or null]; the result is JSON inside JSON, so that it arrives as the
# exact text to store.
_PG_SUCCEED = f"""
WITH outcome AS (
    SELECT CAST(e ->> 0 AS bigint) AS id, CAST(e ->> 1 AS integer) AS attempt,
           e ->> 2 AS worker_id, e ->> 3 AS result
    FROM json_array_elements(CAST(:outcomes AS json)) AS e
), done AS (
    UPDATE tasks AS t
    SET result = CAST(outcome.result AS json), {_SUCCEED_SET.format(now=_PG_NOW)}
    FROM outcome
    WHERE t.id = outcome.id AND t.status IN ({_PROCESSING_SQL})
      AND t.locked_by = outcome.worker_id AND t.attempts = outcome.attempt
    RETURNING t.id, t.attempts, outcome.worker_id, t.finished_at
), succeeded AS (
    INSERT INTO task_events ({_EVENT_COLUMNS})
    SELECT id, {_SUCCEEDED_SQL}, attempts, worker_id, 'Attempt ' || attempts || ' succeeded',
           finished_at
    FROM done
    ORDER BY id
)
SELECT id, attempts FROM done
"""

_SQLITE_SUCCEED = f"""
UPDATE tasks NOT INDEXED
SET result = outcome.result, {_SUCCEED_SET.format(now=":now")}
FROM (
    SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS attempt,
           json_extract(value, '$[2]') AS worker_id, json_extract(value, '$[3]') AS result
    FROM json_each(:outcomes)
) AS outcome
WHERE tasks.id = outcome.id AND tasks.status IN ({_PROCESSING_SQL})
  AND tasks.locked_by = outcome.worker_id AND tasks.attempts = outcome.attempt
RETURNING tasks.id, tasks.attempts
"""

_SQLITE_SUCCEEDED_EVENTS = f"""
INSERT INTO task_events ({_EVENT_COLUMNS})
SELECT json_extract(value, '$[0]'), {_SUCCEEDED_SQL}, json_extract(value, '$[1]'),
       json_extract(value, '$[2]'), 'Attempt ' || json_extract(value, '$[1]') || ' succeeded',
       :now
FROM json_each(:outcomes)
ORDER BY key
"""


@dataclass(frozen=True)
class _BatchStatements:
    """The batch statements of one database; the event statements are None where the main
    statement writes the events itself."""

    postgresql: bool
    claim: TextualSelect
    started_events: TextClause | None
    succeed: TextClause
    succeeded_events: TextClause | None


def _timestamp(name: str):
    return bindparam(name, type_=UTCDateTime())


_CLAIM_COLUMNS = [tasks_table.c[name] for name in _CLAIM_RETURNING.split(", ")]

_BATCH_STATEMENTS = {
    "postgresql": _BatchStatements(
        postgresql=True,
        claim=text(_PG_CLAIM).bindparams(_timestamp("now")).columns(*_CLAIM_COLUMNS),
        started_events=None,
        succeed=text(_PG_SUCCEED).bindparams(_timestamp("now")),
        succeeded_events=None,
    ),
    "sqlite": _BatchStatements(
        postgresql=False,
        claim=text(_SQLITE_CLAIM)
        .bindparams(_timestamp("now"), _timestamp("lease_expires_at"))
        .columns(*_CLAIM_COLUMNS),
        started_events=text(_SQLITE_STARTED_EVENTS),
        succeed=text(_SQLITE_SUCCEED).bindparams(_timestamp("now")),
        succeeded_events=text(_SQLITE_SUCCEEDED_EVENTS).bindparams(_timestamp("now")),
    ),
}


def _statements(connection) -> _BatchStatements:
    name = connection.dialect.name
    try:
        return _BATCH_STATEMENTS[name]
    except KeyError:
        raise RuntimeError(
            f"Taskboard supports SQLite and PostgreSQL; the database is {name}") from None


# Worker operations


def claim(worker_id: str, limit: int, *, queues: Iterable[str] | None = None,
          now: datetime | None = None) -> list[Claim]:
    """Move up to `limit` due tasks to PROCESSING for `worker_id` and return the claims.

    Due tasks are PENDING or RETRYING with run_at in the past, in a queue
    that is not paused, taken by priority (highest first), then run_at, then
    id; tasks of a queue with a concurrency limit are taken only while it has
    free slots. The claims come back in that order. All tasks are claimed by
    one UPDATE ... RETURNING, and their started events by one INSERT, in one
    transaction: on PostgreSQL the rows are locked with FOR UPDATE SKIP
    LOCKED, and SQLite allows one writer at a time, so two workers never
    claim the same attempt.
    """
    if limit <= 0:
        return []
    wanted = sorted(set(queues)) if queues else None

    with write_transaction() as session:
        connection = session.connection()
        statements = _statements(connection)
        paused, free_slots = claim_rules(session, lock=statements.postgresql)
        parameters = _claim_parameters(session, worker_id, now)
        rows = _claim_rows(connection, statements, parameters, limit, only=wanted,
                           skip=sorted(paused | set(free_slots)))
        for name, slots in sorted(free_slots.items()):
            remaining = limit - len(rows)
            if remaining <= 0:
                break
            if slots > 0 and (wanted is None or name in wanted):
                rows += _claim_rows(connection, statements, parameters, min(slots, remaining),
                                    only=[name], skip=[])

    rows.sort(key=lambda row: (-row.priority, row.run_at, row.id))
    return [
        Claim(task_id=row.id, type=row.type, params=row.params or {}, attempt=row.attempts,
              max_attempts=row.max_attempts, timeout_seconds=row.timeout_seconds,
              worker_id=worker_id)
        for row in rows
    ]


def _claim_parameters(session, worker_id: str, now: datetime | None) -> dict:
    lease_seconds = float(_setting("LEASE_SECONDS"))
    if uses_database_clock(session):
        return {"worker_id": worker_id, "now": now, "lease_seconds": lease_seconds}
    moment = clock(session, now)
    return {"worker_id": worker_id, "now": moment,
            "lease_expires_at": moment + timedelta(seconds=lease_seconds)}


def _claim_rows(connection, statements: "_BatchStatements", parameters: dict, limit: int, *,
                only: list[str] | None, skip: list[str]) -> list:
    """Claim up to `limit` due tasks of the queues in `only` (all if None) but not in `skip`.

    The started events are written in the same transaction: on PostgreSQL by
    the claim statement itself, on SQLite by a second statement.
    """
    if statements.postgresql:
        filters = {"only": only, "skip": skip}
    else:
        filters = {"only": None if only is None else json.dumps(only), "skip": json.dumps(skip)}
    rows = connection.execute(statements.claim, {**parameters, **filters, "limit": limit}).all()
    if rows and statements.started_events is not None:
        connection.execute(statements.started_events,
                           {"ids": json.dumps([row.id for row in rows])})
    return rows


def _held_by(worker_id: str, attempt: int):
    """SQL conditions that hold while `worker_id` still owns `attempt` of a task."""
    return (
        tasks_table.c.status == TaskStatus.PROCESSING.value,
        tasks_table.c.locked_by == worker_id,
        tasks_table.c.attempts == attempt,
    )


def encode_result(result) -> str | None:
    """Return `result` as the JSON text to store (None for None).

    Raise InvalidResult unless it is JSON within MAX_RESULT_BYTES.
    """
    if result is None:
        return None
    try:
        encoded = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidResult(f"the handler returned a result that is not JSON: {error}") from None
    # json.dumps writes every character outside ASCII as an escape, and only
    # surrogates, paired or lone, as a \\ud800 to \\udfff escape.
    if "\\ud" in encoded and lone_surrogate_path(result) is not None:
        raise InvalidResult("the handler returned a result with a lone surrogate character "
                            "(U+D800 to U+DFFF), which is not valid Unicode text")
    limit = _setting("MAX_RESULT_BYTES")
    size = len(encoded.encode())
    if size > limit:
        raise InvalidResult(
            f"the handler returned {size} bytes of JSON; the limit is {limit} (MAX_RESULT_BYTES)"
        )
    return encoded


def succeed(claim: Claim, result, *, now: datetime | None = None) -> None:
    """Record that the claimed attempt returned `result`: PROCESSING to SUCCEEDED.

    Raise InvalidResult if `result` cannot be stored (nothing is written), and
    LeaseLost if the worker no longer holds the attempt (the late result is
    rejected).
    """
    if succeed_many([(claim, result)], now=now):
        raise LeaseLost(claim.task_id, claim.worker_id, claim.attempt)


def succeed_many(outcomes: Iterable[tuple[Claim, object]], *,
                 now: datetime | None = None) -> list[Claim]:
    """Record several attempts that returned, in one transaction; return the claims not held.

    One UPDATE moves every task from PROCESSING to SUCCEEDED, guarded per
    task by its status, lease owner and attempt, and the events of the tasks
    it changed are written in the same transaction. An attempt the worker no
    longer holds is left as it is and returned, so the caller can log its
    rejected result. Raise InvalidResult, writing nothing, if any result
    cannot be stored.
    """
    outcomes = list(outcomes)
    if not outcomes:
        return []
    rows = [[claim.task_id, claim.attempt, claim.worker_id, encode_result(result)]
            for claim, result in outcomes]
    with write_transaction() as session:
        connection = session.connection()
        statements = _statements(connection)
        moment = now if statements.postgresql else clock(session, now)
        # A batch may hold two attempts of one task, when its lease expired
        # and the worker claimed it again, so the attempt counts too.
        done = {tuple(row) for row in connection.execute(
            statements.succeed, {"outcomes": json.dumps(rows), "now": moment})}
        if done and statements.succeeded_events is not None:
            events = [row[:3] for row in rows if (row[0], row[1]) in done]
            connection.execute(statements.succeeded_events,
                               {"outcomes": json.dumps(events), "now": moment})

    if log.isEnabledFor(logging.INFO):
        for claim, _ in outcomes:
            if (claim.task_id, claim.attempt) in done:
                log.info("Task %s succeeded on attempt %s", claim.task_id, claim.attempt,
                         extra={"task_id": claim.task_id, "worker_id": claim.worker_id,
                                "event": "succeeded"})
    return [claim for claim, _ in outcomes if (claim.task_id, claim.attempt) not in done]


@dataclass(frozen=True)
class _FailedAttemptOutcome:
    transition: Transition
    kind: EventKind
    values: dict
    message: str
    retry_delay: float | None = None


def _outcome_of_failed_attempt(*, task_id, attempt: int, max_attempts: int, cancel_requested: bool,
                               retryable: bool, error: str, traceback: str | None,
                               now: datetime) -> _FailedAttemptOutcome:
    """Decide what follows a failed attempt: CANCELLED, RETRYING with backoff, or FAILED."""
    error, traceback = storable_text(error), storable_text(traceback)
    values = dict(locked_by=None, lease_expires_at=None, last_error=error, last_traceback=traceback)
    # The error ends its own sentence, so that what follows reads as a new one.
    error_sentence = error if error.endswith((".", "!", "?")) else f"{error}."

    if cancel_requested:
        values.update(status=TaskStatus.CANCELLED.value, finished_at=now)
        return _FailedAttemptOutcome(
            Transition.CANCEL, EventKind.CANCELLED, values,
            f"Cancelled by a person while attempt {attempt} of {max_attempts} ran; "
            f"the handler stopped with {error}")

    header = f"Attempt {attempt} of {max_attempts} failed: {error_sentence}"
    if retryable and attempt < max_attempts:
        delay = retry_delay(attempt, _setting("RETRY_BACKOFF_BASE"), _setting("RETRY_BACKOFF_MAX"))
        values.update(status=TaskStatus.RETRYING.value, run_at=now + timedelta(seconds=delay))
        return _FailedAttemptOutcome(Transition.SCHEDULE_RETRY, EventKind.RETRY_SCHEDULED, values,
                                     f"{header} Retrying in {delay:.1f} s.", retry_delay=delay)

    reason = "No attempts left." if retryable else "The error is not retryable."
    values.update(status=TaskStatus.FAILED.value, finished_at=now)
    return _FailedAttemptOutcome(Transition.FAIL, EventKind.FAILED, values, f"{header} {reason}")


def _log_outcome(outcome: _FailedAttemptOutcome, task_id, worker_id) -> None:
    extra = {"task_id": task_id, "worker_id": worker_id, "event": outcome.kind.value}
    if outcome.kind is EventKind.FAILED:
        log.error("Task %s: %s", task_id, outcome.message, extra=extra)
    else:
        log.warning("Task %s: %s", task_id, outcome.message, extra=extra)


@dataclass(frozen=True)
class AttemptFailure:
    """A claimed attempt that ended without a result: its error and whether to retry it."""

    claim: Claim
    error: str
    traceback: str | None = None
    retryable: bool = True


def fail(claim: Claim, error: str, traceback: str | None = None, *, retryable: bool = True,
         now: datetime | None = None) -> TaskStatus:
    """Record that the claimed attempt failed with `error`; return the task's new status.

    The task moves to RETRYING (with backoff) while attempts remain and the
    error is retryable, to CANCELLED if a person asked it to stop, and to
    FAILED otherwise. Raise LeaseLost if the worker no longer holds the attempt.
    """
    [status] = fail_many([AttemptFailure(claim, error, traceback, retryable)], now=now)
    if status is None:
        raise LeaseLost(claim.task_id, claim.worker_id, claim.attempt)
    return status


def fail_many(failures: Iterable[AttemptFailure], *,
              now: datetime | None = None) -> list[TaskStatus | None]:
    """Record several failed attempts in one transaction; return each task's new status.

    Each task follows the rules of `fail`, through its own guarded UPDATE and
    event. The status is None for an attempt the worker no longer holds:
    nothing is written for it.
    """
    failures = list(failures)
    if not failures:
        return []
    t = tasks_table
    statuses: list[TaskStatus | None] = []
    recorded = []
    with write_transaction() as session:
        # Locked, so that a cancel request cannot land between reading the
        # flag and the UPDATE, and be lost. Locked in id order, so that two
        # batches lock the rows they share in the same order.
        rows = {row.id: row for row in session.execute(
            select(t.c.id, t.c.attempts, t.c.locked_by, t.c.max_attempts, t.c.cancel_requested,
                   t.c.queue)
            .where(t.c.id.in_(sorted({failure.claim.task_id for failure in failures})),
                   t.c.status == TaskStatus.PROCESSING.value)
            .order_by(t.c.id)
            .with_for_update()
        )}
        now = clock(session, now)
        events = []
        for failure in failures:
            claim = failure.claim
            row = rows.get(claim.task_id)
            if row is None or row.locked_by != claim.worker_id or row.attempts != claim.attempt:
                statuses.append(None)
                continue
            outcome = _outcome_of_failed_attempt(
                task_id=claim.task_id, attempt=claim.attempt, max_attempts=row.max_attempts,
                cancel_requested=row.cancel_requested, retryable=failure.retryable,
                error=failure.error, traceback=failure.traceback, now=now)
            held = _held_by(claim.worker_id, claim.attempt)
            if not _guarded_update(session, claim.task_id, outcome.transition, outcome.values,
                                   *held):
                statuses.append(None)
                continue
            events.append(_event_row(
                claim.task_id, outcome.kind, attempt=claim.attempt, worker_id=claim.worker_id,
                message=outcome.message, now=now, traceback=failure.traceback))
            recorded.append((claim, outcome, row.queue))
            statuses.append(TaskStatus(outcome.values["status"]))
        _write_events(session, events)

    for claim, outcome, queue_name in recorded:
        _log_outcome(outcome, claim.task_id, claim.worker_id)
        _announce_retry(outcome, claim.task_id, queue_name)
    return statuses


def _announce_retry(outcome: _FailedAttemptOutcome, task_id, queue_name: str) -> None:
    if outcome.retry_delay is not None:
        _notify(signals.retry_scheduled, task_id=task_id, queue=queue_name,
                delay_seconds=outcome.retry_delay)


def notify_workers(queue_name: str) -> None:
    """Wake idle workers in other processes for `queue_name` (PostgreSQL; a no-op on SQLite)."""
    if not uses_database_clock(db.session()):
        return
    with write_transaction() as session:
        _notify_workers(session, queue_name)


def extend_leases(worker_id: str, claims: Iterable[Claim], *,
                  now: datetime | None = None) -> dict[int, bool]:
    """Renew the leases of the attempts `worker_id` still holds.

    Return {task_id: cancel_requested} for each attempt still held; an attempt
    missing from the result was lost (its lease expired and it was recovered).
    """
    claims = list(claims)
    if not claims:
        return {}
    t = tasks_table
    attempts = {c.task_id: c.attempt for c in claims}
    with write_transaction() as session:
        lease_expires_at = clock_expression(session, now) + timedelta(
            seconds=_setting("LEASE_SECONDS"))
        statement = (
            update(t)
            .where(t.c.id.in_(list(attempts)), t.c.locked_by == worker_id,
                   t.c.status == TaskStatus.PROCESSING.value)
            .values(lease_expires_at=lease_expires_at)
            .returning(t.c.id, t.c.attempts, t.c.cancel_requested)
        )
        rows = session.execute(statement).all()
    return {row.id: row.cancel_requested for row in rows if attempts.get(row.id) == row.attempts}


def report_progress(claim: Claim, percent: int, message: str | None = None) -> bool:
    """Store the progress of a running attempt; return whether a person asked it to stop.

    Raise LeaseLost if the worker no longer holds the attempt.
    """
    percent = max(0, min(100, int(percent)))
    if message is not None:
        message = storable_text(str(message)[:MAX_PROGRESS_MESSAGE_LENGTH])
    t = tasks_table
    statement = (
        update(t)
        .where(t.c.id == claim.task_id, *_held_by(claim.worker_id, claim.attempt))
        .values(progress=percent, progress_message=message)
        .returning(t.c.cancel_requested)
    )
    with write_transaction() as session:
        cancel_flag = session.execute(statement).scalar_one_or_none()
    if cancel_flag is None:
        raise LeaseLost(claim.task_id, claim.worker_id, claim.attempt)
    return cancel_flag


def release(claims: Iterable[Claim], *, reason: str, now: datetime | None = None) -> int:
    """Give unfinished attempts back to the queue: PROCESSING to PENDING, due now.

    For a worker that stops before its handlers return. The attempt does not
    count, so `attempts` goes back down by one; the handler may still have
    done part of its work, which is why handlers should be idempotent. A task
    that a person asked to stop ends CANCELLED instead, since running it again
    would undo the request. Attempts the worker no longer holds are skipped.
    Return how many were released or cancelled.
    """
    t = tasks_table
    events = []
    queues = set()
    with write_transaction() as session:
        now = clock(session, now)
        for claim in claims:
            held = _held_by(claim.worker_id, claim.attempt)
            row = session.execute(
                select(t.c.queue, t.c.cancel_requested).where(t.c.id == claim.task_id, *held)
                .with_for_update()
            ).one_or_none()
            if row is None:
                continue
            if row.cancel_requested:
                values = dict(status=TaskStatus.CANCELLED.value, finished_at=now, locked_by=None,
                              lease_expires_at=None)
                transition, kind = Transition.CANCEL, EventKind.CANCELLED
                message = (f"Cancelled, as a person asked: worker {claim.worker_id} stopped "
                           f"before attempt {claim.attempt} finished")
            else:
                values = dict(status=TaskStatus.PENDING.value, attempts=claim.attempt - 1,
                              run_at=now, locked_by=None, lease_expires_at=None,
                              progress=0, progress_message=None)
                transition, kind = Transition.RELEASE, EventKind.REQUEUED
                message = (f"Released by worker {claim.worker_id}: {reason}; "
                           f"attempt {claim.attempt} did not finish and does not count")
                queues.add(row.queue)
            if _guarded_update(session, claim.task_id, transition, values, *held):
                events.append(_event_row(claim.task_id, kind, attempt=claim.attempt,
                                         worker_id=claim.worker_id, now=now,
                                         level=EventLevel.WARNING, message=message))
        _write_events(session, events)
        for queue_name in sorted(queues):
            _notify_workers(session, queue_name)

    for event in events:
        log.warning("Task %s: %s", event["task_id"], event["message"],
                    extra={"task_id": event["task_id"], "worker_id": event["worker_id"],
                           "event": "released"})
    return len(events)


def write_log(task_id: int, message: str, *, level: EventLevel | str = EventLevel.INFO,
              attempt: int = 0, worker_id: str | None = None,
              now: datetime | None = None) -> None:
    """Append a `log` event to a task's history."""
    level = EventLevel(str(level).lower())
    with write_transaction() as session:
        row = _event_row(task_id, EventKind.LOG, attempt=attempt, worker_id=worker_id,
                         message=str(message), level=level,
                         now=clock_expression(session, now))
        session.execute(insert(events_table).values(**row))


def recover_expired_leases(*, now: datetime | None = None, limit: int = 100) -> int:
    """Count each PROCESSING task whose lease ran out as a failed attempt ("worker lost").

    The task is retried, failed or cancelled by the same rules as any failed
    attempt. Return how many tasks were recovered. A late outcome from the
    lost worker is rejected afterwards because it no longer holds the attempt.
    """
    t = tasks_table
    session = db.session()
    # On PostgreSQL now() is the time the transaction began, so an open one
    # is ended first, as write_transaction() does.
    if session.in_transaction():
        session.commit()
    expired = (t.c.status == TaskStatus.PROCESSING.value,
               t.c.lease_expires_at < clock_expression(session, now))
    # Workers call this on every poll, and almost always nothing has expired.
    # A plain read checks that without a write transaction, which on SQLite
    # would take the one write lock that claims and completions wait for.
    anything_expired = session.execute(select(t.c.id).where(*expired).limit(1)).first()
    session.commit()
    if anything_expired is None:
        return 0

    recovered = 0
    with write_transaction() as session:
        rows = session.execute(
            select(t.c.id, t.c.attempts, t.c.max_attempts, t.c.cancel_requested, t.c.locked_by,
                   t.c.lease_expires_at)
            .where(*expired)
            .order_by(t.c.lease_expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if rows:
            now = clock(session, now)

        for row in rows:
            error = (f"{WORKER_LOST}: worker lost; {row.locked_by} stopped renewing its lease, "
                     f"which expired at {row.lease_expires_at.isoformat(timespec='seconds')}")
            outcome = _outcome_of_failed_attempt(
                task_id=row.id, attempt=row.attempts, max_attempts=row.max_attempts,
                cancel_requested=row.cancel_requested, retryable=True, error=error,
                traceback=None, now=now)
            changed = _guarded_update(session, row.id, outcome.transition, outcome.values,
                                      *_held_by(row.locked_by, row.attempts),
                                      t.c.lease_expires_at < now)
            if not changed:
                continue
            recovered += 1
            _write_events(session, [
                _event_row(row.id, EventKind.LEASE_EXPIRED, attempt=row.attempts,
                           worker_id=row.locked_by, now=now,
                           message=f"Lease of {row.locked_by} expired; the attempt is lost"),
                _event_row(row.id, outcome.kind, attempt=row.attempts, worker_id=row.locked_by,
                           message=outcome.message, now=now),
            ])
            log.warning("Task %s: lease of worker %s expired", row.id, row.locked_by,
                        extra={"task_id": row.id, "worker_id": row.locked_by,
                               "event": "lease_expired"})
            _log_outcome(outcome, row.id, row.locked_by)
    return recovered


# Operations a person starts


def cancel(task_id: int, *, source: str = "code", now: datetime | None = None) -> Task:
    """Cancel a waiting task, or ask a running one to stop; return the task.

    PENDING and RETRYING tasks become CANCELLED at once. A PROCESSING task is
    flagged: its handler sees the request through its context, and the
    worker records CANCELLED when the handler stops. Asking again while the
    request stands changes nothing. Raise InvalidTransition from any other
    status, TaskNotFound for an unknown id.
    """
    with write_transaction() as session:
        now = clock(session, now)
        # Locked, so that a worker cannot claim the task between this check
        # and the UPDATE below (SQLite's write transaction already excludes it).
        task = _load(session, task_id, for_update=True)
        task.cancel()

        if task.status == TaskStatus.PROCESSING:
            if task.cancel_requested:
                return task
            changed = session.execute(
                update(tasks_table)
                .where(tasks_table.c.id == task_id,
                       tasks_table.c.status == TaskStatus.PROCESSING.value)
                .values(cancel_requested=True)
            ).rowcount == 1
            event = _event_row(task_id, EventKind.LOG, attempt=task.attempts, now=now,
                               level=EventLevel.WARNING,
                               message=f"Cancellation requested from {source}; "
                                       "the running handler is asked to stop")
        else:
            changed = _guarded_update(
                session, task_id, Transition.CANCEL,
                dict(status=TaskStatus.CANCELLED.value, finished_at=now),
                tasks_table.c.status.in_(CLAIMABLE_STATUSES))
            event = _event_row(task_id, EventKind.CANCELLED, attempt=task.attempts, now=now,
                               message=f"Cancelled by a person from {source}")
        if not changed:
            task = _load(session, task_id)
            raise InvalidTransition(task_id, task.status, "cancel", sources(Transition.CANCEL))
        _write_events(session, [event])

    running = event["kind"] == EventKind.LOG
    log.info("Task %s %s from %s", task_id,
             "asked to stop" if running else "cancelled", source,
             extra={"task_id": task_id, "event": "cancel_requested" if running else "cancelled"})
    if running:
        _notify(signals.cancel_requested, task_id=task_id)
    return _reload(task_id)


def _requeue_values(now: datetime) -> dict:
    """Return the columns a person's retry sets: due now, with one more attempt if all were used."""
    t = tasks_table
    return dict(
        status=TaskStatus.PENDING.value,
        run_at=now,
        finished_at=None,
        cancel_requested=False,
        progress=0,
        progress_message=None,
        max_attempts=case((t.c.attempts >= t.c.max_attempts, t.c.attempts + 1),
                          else_=t.c.max_attempts),
    )


def retry(task_id: int, *, source: str = "code", now: datetime | None = None) -> Task:
    """Requeue a FAILED or CANCELLED task as PENDING, due now; return it.

    A task that used all its attempts gets one more. Raise InvalidTransition
    from any other status, TaskNotFound for an unknown id.
    """
    with write_transaction() as session:
        now = clock(session, now)
        task = _load(session, task_id)
        task.requeue()
        if task.attempts >= MAX_ATTEMPTS_LIMIT:
            raise RetryLimitReached(task_id)

        if not _guarded_update(session, task_id, Transition.REQUEUE, _requeue_values(now)):
            task = _load(session, task_id)
            raise InvalidTransition(task_id, task.status, "retry", sources(Transition.REQUEUE))
        _write_events(session, [_event_row(
            task_id, EventKind.REQUEUED, attempt=task.attempts, now=now,
            message=f"Retried by a person from {source}; attempt {task.attempts + 1} is due now")])
        _notify_workers(session, task.queue)
        queue_name = task.queue

    log.info("Task %s requeued from %s", task_id, source,
             extra={"task_id": task_id, "event": "requeued"})
    _notify(signals.task_submitted, task_id=task_id, due_now=True, queue=queue_name)
    return _reload(task_id)


def _reload(task_id: int) -> Task:
    return _load(db.session, task_id)
