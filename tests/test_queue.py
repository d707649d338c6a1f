"""Queue operations, their events, and the invariants the schema enforces.

Every test runs on SQLite and on PostgreSQL. Operations get an explicit `now`
where time matters, so no test sleeps.
"""

import random
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import IntegrityError, StatementError

from app.extensions import db
from app.tasks import (
    InvalidResult,
    InvalidTransition,
    LeaseLost,
    Task,
    TaskNotFound,
    TaskStatus,
    TaskType,
    ValidationError,
    queries,
    queue,
    registry,
    signals,
)
from app.tasks.backoff import retry_delay
from app.tasks.queue import RetryLimitReached
from app.tasks.timeutil import utcnow
from conftest import count_rows

tasks_table = Task.__table__
events_table = queue.events_table

WORKER = "worker-a"
OTHER_WORKER = "worker-b"


def _submit(now=None, **fields) -> Task:
    task, created = queue.submit({"type": "noop", **fields}, now=now)
    assert created
    return task


def _reload(task_id) -> Task:
    """Load the task as stored now, detached, so later loads do not change it."""
    db.session.rollback()
    task = db.session.get(Task, task_id, populate_existing=True)
    db.session.expunge(task)
    return task


def _events(task_id):
    db.session.rollback()
    return queries.task_events(task_id)


def _kinds(task_id) -> list[str]:
    return [event.kind for event in _events(task_id)]


def _claim_one(now, worker=WORKER):
    claims = queue.claim(worker, 1, now=now)
    assert len(claims) == 1
    return claims[0]


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


@pytest.fixture
def now():
    """A start time an hour back, so that steps that use the real clock come after it."""
    return utcnow() - timedelta(hours=1)


@pytest.fixture
def slow_backoff(app):
    """Backoff large enough that a scheduled retry is measurably in the future."""
    app.config["RETRY_BACKOFF_BASE"] = 10
    app.config["RETRY_BACKOFF_MAX"] = 15


# Submitting


def test_submit_stores_pending_task(app, now):
    task, created = queue.submit({"type": "sleep", "params": {"seconds": "2"}}, now=now)

    task = _reload(task.id)
    assert created is True
    assert task.status == TaskStatus.PENDING
    assert task.type == "sleep"
    assert task.params == {"seconds": 2.0}
    assert task.queue == "default"
    assert task.priority == 0
    assert task.attempts == 0
    assert task.max_attempts == app.config["DEFAULT_MAX_ATTEMPTS"]
    assert task.timeout_seconds == registry.get("sleep").timeout_seconds
    assert task.progress == 0
    assert task.cancel_requested is False
    assert task.created_at == now
    assert task.run_at == now
    assert task.started_at is None
    assert task.finished_at is None
    assert task.locked_by is None
    assert task.result is None
    assert task.last_error is None


def test_submit_writes_submitted_event(app, now):
    task = _submit(now=now)

    events = _events(task.id)
    assert [event.kind for event in events] == ["submitted"]
    assert events[0].level == "info"
    assert events[0].attempt == 0
    assert events[0].worker_id is None
    assert events[0].message == "Submitted from code"
    assert events[0].created_at == now


def test_submit_names_its_source(app):
    task, _ = queue.submit({"type": "noop"}, source="api")

    assert _events(task.id)[0].message == "Submitted from api"


def test_submit_sends_task_submitted_signal(app):
    received = []

    def receiver(sender, **kwargs):
        received.append((sender, kwargs))

    signals.task_submitted.connect(receiver, sender=app)
    try:
        task = _submit()
    finally:
        signals.task_submitted.disconnect(receiver, sender=app)

    assert len(received) == 1
    assert received[0][0] is app
    assert received[0][1]["task_id"] == task.id
    assert received[0][1]["due_now"] is True


def test_submit_uses_task_type_defaults(app, register_type):
    register_type(TaskType("typed", handler=lambda ctx: None, max_attempts=5, timeout_seconds=7))

    task = _reload(_submit(type="typed").id)

    assert task.max_attempts == 5
    assert task.timeout_seconds == 7


def test_submit_fields_override_type_defaults(app, register_type):
    register_type(TaskType("typed", handler=lambda ctx: None, max_attempts=5, timeout_seconds=7))

    task = _submit(type="typed", max_attempts=2, timeout_seconds=1.5, priority=-3, queue="mail")
    task = _reload(task.id)

    assert task.max_attempts == 2
    assert task.timeout_seconds == 1.5
    assert task.priority == -3
    assert task.queue == "mail"


@pytest.mark.parametrize(
    "data, field",
    [
        ({"type": "no_such_type"}, "type"),
        ({}, "type"),
        ({"type": "sleep", "params": {"seconds": -1}}, "params.seconds"),
        ({"type": "noop", "params": {"extra": 1}}, "params.extra"),
        ({"type": "noop", "priority": 1000}, "priority"),
        ({"type": "noop", "max_attempts": 0}, "max_attempts"),
        ({"type": "noop", "queue": "no spaces"}, "queue"),
        ({"type": "noop", "colour": "red"}, "colour"),
        ({"type": "word_count", "params": {"text": "a\ud800b"}}, "params.text"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_submit_validation_error_writes_nothing(app, data, field):
    with pytest.raises(ValidationError) as raised:
        queue.submit(data)

    assert field in raised.value.fields
    assert count_rows("tasks") == 0
    assert count_rows("task_events") == 0


def test_submit_idempotency_key_returns_first_task(app):
    first, first_created = queue.submit({"type": "noop", "idempotency_key": "order-17"})
    second, second_created = queue.submit(
        {"type": "sleep", "params": {"seconds": 1}, "idempotency_key": "order-17"}
    )

    assert first_created is True
    assert second_created is False
    assert second.id == first.id
    assert second.type == "noop"
    assert count_rows("tasks") == 1
    assert count_rows("task_events") == 1


def test_submit_idempotency_key_signals_once(app):
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs["task_id"])

    signals.task_submitted.connect(receiver, sender=app)
    try:
        queue.submit({"type": "noop", "idempotency_key": "once"})
        queue.submit({"type": "noop", "idempotency_key": "once"})
    finally:
        signals.task_submitted.disconnect(receiver, sender=app)

    assert len(received) == 1


def test_submit_distinct_keys_make_two_tasks(app):
    first, _ = queue.submit({"type": "noop", "idempotency_key": "a"})
    second, _ = queue.submit({"type": "noop", "idempotency_key": "b"})

    assert first.id != second.id
    assert count_rows("tasks") == 2


def test_submit_delay_sets_future_run_at(app, now):
    task = _submit(now=now, delay_seconds=60)

    task = _reload(task.id)
    assert task.run_at == now + timedelta(seconds=60)
    assert task.created_at == now
    assert "due at" in _events(task.id)[0].message


def test_claim_skips_task_until_due(app, now):
    task = _submit(now=now, delay_seconds=60)

    early = queue.claim(WORKER, 10, now=now + timedelta(seconds=59))
    due = queue.claim(WORKER, 10, now=now + timedelta(seconds=60))

    assert early == []
    assert [claim.task_id for claim in due] == [task.id]


def test_submit_naive_now_rejected(app):
    with pytest.raises(StatementError, match="naive datetime"):
        queue.submit({"type": "noop"}, now=datetime(2026, 1, 1, 12, 0))

    assert count_rows("tasks") == 0
    assert count_rows("task_events") == 0


# Claiming


def test_claim_order_priority_then_run_at_then_id(app, now):
    low_early = _submit(now=now)
    high_late = _submit(now=now + timedelta(seconds=2), priority=5)
    low_late = _submit(now=now + timedelta(seconds=1))
    tie_first = _submit(now=now + timedelta(seconds=3))
    tie_second = _submit(now=now + timedelta(seconds=3))
    negative = _submit(now=now, priority=-5)

    claims = queue.claim(WORKER, 10, now=now + timedelta(seconds=10))

    expected = [high_late.id, low_early.id, low_late.id, tie_first.id, tie_second.id, negative.id]
    assert [claim.task_id for claim in claims] == expected


def test_claim_one_at_a_time_follows_same_order(app, now):
    low_early = _submit(now=now)
    high_late = _submit(now=now + timedelta(seconds=2), priority=5)
    low_late = _submit(now=now + timedelta(seconds=1))
    tie_first = _submit(now=now + timedelta(seconds=3))
    tie_second = _submit(now=now + timedelta(seconds=3))

    later = now + timedelta(seconds=10)
    order = [queue.claim(WORKER, 1, now=later)[0].task_id for _ in range(5)]

    assert order == [high_late.id, low_early.id, low_late.id, tie_first.id, tie_second.id]
    assert queue.claim(WORKER, 1, now=later) == []


def test_claim_respects_limit(app, now):
    for _ in range(3):
        _submit(now=now)

    claims = queue.claim(WORKER, 2, now=now)

    assert len(claims) == 2
    assert count_rows("tasks") == 3
    assert len(queue.claim(WORKER, 2, now=now)) == 1


def test_claim_zero_limit_claims_nothing(app, now):
    task = _submit(now=now)

    assert queue.claim(WORKER, 0, now=now) == []
    assert _kinds(task.id) == ["submitted"]


def test_claim_filters_by_queue(app, now):
    default = _submit(now=now)
    mail = _submit(now=now, queue="mail")

    claims = queue.claim(WORKER, 10, queues=["mail"], now=now)

    assert [claim.task_id for claim in claims] == [mail.id]
    assert _reload(default.id).status == TaskStatus.PENDING


def test_claim_sets_lease_fields(app, now):
    task = _submit(now=now, type="sleep", params={"seconds": 3}, max_attempts=4,
                   timeout_seconds=9)
    claimed_at = now + timedelta(seconds=1)

    claim = _claim_one(claimed_at)

    task = _reload(task.id)
    assert task.status == TaskStatus.PROCESSING
    assert task.locked_by == WORKER
    assert task.lease_expires_at == claimed_at + timedelta(seconds=app.config["LEASE_SECONDS"])
    assert task.attempts == 1
    assert task.started_at == claimed_at
    assert task.progress == 0
    assert claim.task_id == task.id
    assert claim.type == "sleep"
    assert claim.params == {"seconds": 3.0}
    assert claim.attempt == 1
    assert claim.max_attempts == 4
    assert claim.timeout_seconds == 9
    assert claim.worker_id == WORKER


def test_claim_writes_started_event(app, now):
    task = _submit(now=now)

    _claim_one(now)

    started = _events(task.id)[-1]
    assert started.kind == "started"
    assert started.attempt == 1
    assert started.worker_id == WORKER
    assert started.level == "info"
    assert started.message == "Attempt 1 of 3 started"


def test_claim_writes_one_started_event_per_task(app, now):
    first = _submit(now=now)
    second = _submit(now=now)

    queue.claim(WORKER, 10, now=now)

    assert _kinds(first.id) == ["submitted", "started"]
    assert _kinds(second.id) == ["submitted", "started"]


def test_claim_by_second_worker_gets_nothing(app, now):
    task = _submit(now=now)
    _claim_one(now)

    assert queue.claim(OTHER_WORKER, 10, now=now + timedelta(seconds=1)) == []
    assert _reload(task.id).locked_by == WORKER
    assert _kinds(task.id) == ["submitted", "started"]


# Succeeding


def test_succeed_stores_result(app, now):
    task = _submit(now=now)
    claim = _claim_one(now)
    finished = now + timedelta(seconds=2)

    queue.succeed(claim, {"answer": 42, "items": [1, "two"]}, now=finished)

    task = _reload(task.id)
    assert task.status == TaskStatus.SUCCEEDED
    assert task.result == {"answer": 42, "items": [1, "two"]}
    assert task.finished_at == finished
    assert task.locked_by is None
    assert task.lease_expires_at is None
    assert task.progress == 100
    assert task.duration_seconds == 2


def test_succeed_writes_succeeded_event(app, now):
    task = _submit(now=now)
    claim = _claim_one(now)

    queue.succeed(claim, None, now=now)

    event = _events(task.id)[-1]
    assert event.kind == "succeeded"
    assert event.attempt == 1
    assert event.worker_id == WORKER
    assert event.message == "Attempt 1 succeeded"


def test_succeed_none_result_stored_as_null(app, now, dialect):
    task = _submit(now=now)
    queue.succeed(_claim_one(now), None, now=now)

    raw = db.session.execute(text("SELECT result FROM tasks WHERE id = :id"), {"id": task.id})
    assert raw.scalar_one() is None
    assert _reload(task.id).status == TaskStatus.SUCCEEDED


@pytest.mark.parametrize(
    "change",
    [{"worker_id": OTHER_WORKER}, {"attempt": 2}, {"attempt": 0}],
    ids=["other worker", "later attempt", "earlier attempt"],
)
def test_succeed_stale_claim_raises_lease_lost(app, now, change):
    task = _submit(now=now)
    claim = _claim_one(now)

    with pytest.raises(LeaseLost) as raised:
        queue.succeed(replace(claim, **change), {"late": True}, now=now)

    task = _reload(task.id)
    assert raised.value.task_id == task.id
    assert f"task {task.id}" in str(raised.value)
    assert task.status == TaskStatus.PROCESSING
    assert task.result is None
    assert task.finished_at is None
    assert task.locked_by == WORKER
    assert _kinds(task.id) == ["submitted", "started"]


def test_succeed_twice_raises_lease_lost(app, now):
    task = _submit(now=now)
    claim = _claim_one(now)
    queue.succeed(claim, 1, now=now)

    with pytest.raises(LeaseLost):
        queue.succeed(claim, 2, now=now)

    assert _reload(task.id).result == 1
    assert _kinds(task.id) == ["submitted", "started", "succeeded"]


@pytest.mark.parametrize(
    "result",
    [{1, 2}, object(), float("nan"), {"nested": [float("inf")]}, {("a", "b"): 1}],
    ids=["set", "object", "nan", "infinity", "tuple key"],
)
def test_succeed_non_json_result_raises(app, now, result):
    task = _submit(now=now)
    claim = _claim_one(now)

    with pytest.raises(InvalidResult, match="not JSON"):
        queue.succeed(claim, result, now=now)

    task = _reload(task.id)
    assert task.status == TaskStatus.PROCESSING
    assert task.result is None
    assert _kinds(task.id) == ["submitted", "started"]


def test_succeed_oversized_result_raises(app, now):
    app.config["MAX_RESULT_BYTES"] = 100
    task = _submit(now=now)
    claim = _claim_one(now)

    with pytest.raises(InvalidResult, match="MAX_RESULT_BYTES") as raised:
        queue.succeed(claim, "x" * 99, now=now)

    assert "101 bytes" in str(raised.value)
    assert "the limit is 100" in str(raised.value)
    assert _reload(task.id).status == TaskStatus.PROCESSING


def test_succeed_result_at_max_bytes_is_stored(app, now):
    app.config["MAX_RESULT_BYTES"] = 100
    task = _submit(now=now)

    queue.succeed(_claim_one(now), "x" * 98, now=now)  # 98 characters and 2 quotes

    assert _reload(task.id).result == "x" * 98


# Failing


def test_fail_with_attempts_left_schedules_retry(app, now, slow_backoff):
    task = _submit(now=now)
    claim = _claim_one(now)
    failed_at = now + timedelta(seconds=1)

    status = queue.fail(claim, "RuntimeError: boom", "Traceback: boom", now=failed_at)

    task = _reload(task.id)
    assert status == TaskStatus.RETRYING
    assert task.status == TaskStatus.RETRYING
    assert 5 <= _seconds(task.run_at - failed_at) <= 10
    assert task.attempts == 1
    assert task.last_error == "RuntimeError: boom"
    assert task.last_traceback == "Traceback: boom"
    assert task.locked_by is None
    assert task.lease_expires_at is None
    assert task.finished_at is None


def test_fail_with_attempts_left_writes_event(app, now, slow_backoff):
    task = _submit(now=now)
    queue.fail(_claim_one(now), "RuntimeError: boom", now=now)

    event = _events(task.id)[-1]
    assert event.kind == "retry_scheduled"
    assert event.level == "warning"
    assert event.attempt == 1
    assert event.worker_id == WORKER
    assert event.message.startswith("Attempt 1 of 3 failed: RuntimeError: boom. Retrying in ")


def test_fail_backoff_doubles_then_caps(app, now, slow_backoff):
    task = _submit(now=now, max_attempts=4)
    queue.fail(_claim_one(now), "RuntimeError: one", now=now)

    second_start = _reload(task.id).run_at
    queue.fail(_claim_one(second_start), "RuntimeError: two", now=second_start)
    third_start = _reload(task.id).run_at

    # Attempt 2 waits base * 2 = 20 s, capped at 15 s, then jittered to [7.5, 15].
    assert 7.5 <= _seconds(third_start - second_start) <= 15
    assert _reload(task.id).attempts == 2


def test_fail_retry_not_claimable_before_run_at(app, now, slow_backoff):
    task = _submit(now=now)
    queue.fail(_claim_one(now), "RuntimeError: boom", now=now)
    run_at = _reload(task.id).run_at

    early = queue.claim(WORKER, 1, now=run_at - timedelta(milliseconds=1))
    due = queue.claim(WORKER, 1, now=run_at)

    assert early == []
    assert [claim.task_id for claim in due] == [task.id]
    assert due[0].attempt == 2


def test_fail_last_attempt_marks_failed(app, now):
    task = _submit(now=now, max_attempts=1)
    claim = _claim_one(now)
    failed_at = now + timedelta(seconds=1)

    status = queue.fail(claim, "RuntimeError: boom", now=failed_at)

    task = _reload(task.id)
    assert status == TaskStatus.FAILED
    assert task.status == TaskStatus.FAILED
    assert task.finished_at == failed_at
    assert task.last_error == "RuntimeError: boom"
    assert task.locked_by is None
    assert task.lease_expires_at is None


def test_fail_last_attempt_writes_failed_event(app, now):
    task = _submit(now=now, max_attempts=1)
    queue.fail(_claim_one(now), "RuntimeError: boom", now=now)

    event = _events(task.id)[-1]
    assert event.kind == "failed"
    assert event.level == "error"
    assert event.message == "Attempt 1 of 1 failed: RuntimeError: boom. No attempts left."


def test_fail_not_retryable_marks_failed_at_once(app, now):
    task = _submit(now=now, max_attempts=3)
    claim = _claim_one(now)

    status = queue.fail(claim, "PermanentError: bad input", retryable=False, now=now)

    task = _reload(task.id)
    assert status == TaskStatus.FAILED
    assert task.attempts == 1
    assert task.max_attempts == 3
    assert task.finished_at == now
    assert _events(task.id)[-1].message.endswith("The error is not retryable.")


@pytest.mark.parametrize("change", [{"worker_id": OTHER_WORKER}, {"attempt": 2}])
def test_fail_stale_claim_raises_lease_lost(app, now, change):
    task = _submit(now=now)
    claim = _claim_one(now)

    with pytest.raises(LeaseLost):
        queue.fail(replace(claim, **change), "RuntimeError: late", now=now)

    task = _reload(task.id)
    assert task.status == TaskStatus.PROCESSING
    assert task.last_error is None
    assert _kinds(task.id) == ["submitted", "started"]


def test_retry_delay_range_per_attempt():
    low = type("Low", (), {"uniform": staticmethod(lambda a, b: a)})()
    high = type("High", (), {"uniform": staticmethod(lambda a, b: b)})()

    assert retry_delay(1, base=2, cap=100, rng=low) == 1
    assert retry_delay(1, base=2, cap=100, rng=high) == 2
    assert retry_delay(3, base=2, cap=100, rng=high) == 8
    assert retry_delay(3, base=2, cap=5, rng=high) == 5
    assert retry_delay(3, base=2, cap=5, rng=low) == 2.5


def test_retry_delay_huge_attempt_stays_at_cap():
    assert retry_delay(10_000, base=2, cap=60, rng=random.Random(1)) <= 60


def test_retry_delay_within_half_and_full_delay():
    rng = random.Random(7)
    for attempt in range(1, 8):
        delay = min(30, 1.5 * 2 ** (attempt - 1))
        value = retry_delay(attempt, base=1.5, cap=30, rng=rng)
        assert delay / 2 <= value <= delay, attempt


# Cancelling


@pytest.mark.parametrize("from_status", ["PENDING", "RETRYING"])
def test_cancel_waiting_task_becomes_cancelled(app, now, from_status):
    task = _submit(now=now)
    if from_status == "RETRYING":
        queue.fail(_claim_one(now), "RuntimeError: boom", now=now)
    cancelled_at = now + timedelta(seconds=1)

    returned = queue.cancel(task.id, source="form", now=cancelled_at)

    task = _reload(task.id)
    assert returned.status == TaskStatus.CANCELLED
    assert task.status == TaskStatus.CANCELLED
    assert task.finished_at == cancelled_at
    assert _kinds(task.id)[-1] == "cancelled"
    assert _events(task.id)[-1].message == "Cancelled by a person from form"
    assert queue.claim(WORKER, 10, now=now + timedelta(hours=1)) == []


def test_cancel_pending_while_worker_claims(app, make_app, monkeypatch):
    # A second application claims between cancel's status check and its UPDATE.
    # Cancel locks the row first, so the claim skips it (PostgreSQL) or waits
    # for the cancel to commit (SQLite), and the cancel wins on both.
    task = _submit()
    other_app = make_app()
    claims = []
    check = Task.cancel

    def claim_in_between():
        with other_app.app_context():
            claims.extend(queue.claim(OTHER_WORKER, 10))
            db.session.remove()

    def cancel_check_then_race(self):
        target = check(self)
        racer = threading.Thread(target=claim_in_between)
        racer.start()
        racer.join(timeout=0.5)  # on SQLite it waits for the write lock until cancel commits
        threads.append(racer)
        return target

    threads = []
    monkeypatch.setattr(Task, "cancel", cancel_check_then_race)
    queue.cancel(task.id)
    monkeypatch.undo()
    for racer in threads:
        racer.join(timeout=10)

    assert _reload(task.id).status == TaskStatus.CANCELLED
    assert claims == []
    assert _kinds(task.id) == ["submitted", "cancelled"]


def test_cancel_during_fail_is_not_lost(app, make_app, monkeypatch):
    # A person cancels while the worker records a failed attempt. Whichever
    # transaction commits first, the task must end CANCELLED: the request is
    # never dropped.
    task = _submit()
    claim = _claim_one(utcnow())
    other_app = make_app()
    decide = queue._outcome_of_failed_attempt

    def cancel_from_other_app():
        with other_app.app_context():
            queue.cancel(task.id, source="race")
            db.session.remove()

    def decide_while_cancelling(**kwargs):
        racer = threading.Thread(target=cancel_from_other_app)
        racer.start()
        racer.join(timeout=0.5)  # it waits for the row or the write lock until fail commits
        threads.append(racer)
        return decide(**kwargs)

    threads = []
    monkeypatch.setattr(queue, "_outcome_of_failed_attempt", decide_while_cancelling)
    queue.fail(claim, "RuntimeError: boom")
    monkeypatch.undo()
    for racer in threads:
        racer.join(timeout=10)

    task = _reload(task.id)
    assert task.status == TaskStatus.CANCELLED
    assert _kinds(task.id)[-1] == "cancelled"


def test_cancel_processing_requests_stop(app, now):
    task = _submit(now=now)
    _claim_one(now)

    returned = queue.cancel(task.id, now=now)

    task = _reload(task.id)
    assert returned.cancel_requested is True
    assert task.status == TaskStatus.PROCESSING
    assert task.cancel_requested is True
    assert task.locked_by == WORKER
    assert task.finished_at is None
    assert task.can_cancel is False


def test_cancel_processing_writes_log_event(app, now):
    task = _submit(now=now)
    _claim_one(now)

    queue.cancel(task.id, now=now)

    event = _events(task.id)[-1]
    assert event.kind == "log"
    assert event.level == "warning"
    assert event.attempt == 1
    assert "Cancellation requested from code" in event.message


def test_cancel_processing_signals_once(app, now):
    task = _submit(now=now)
    _claim_one(now)
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs["task_id"])

    signals.cancel_requested.connect(receiver, sender=app)
    try:
        queue.cancel(task.id, now=now)
        queue.cancel(task.id, now=now)
    finally:
        signals.cancel_requested.disconnect(receiver, sender=app)

    assert received == [task.id]


def test_cancel_processing_twice_changes_nothing(app, now):
    task = _submit(now=now)
    _claim_one(now)
    queue.cancel(task.id, now=now)

    again = queue.cancel(task.id, now=now + timedelta(seconds=1))

    assert again.status == TaskStatus.PROCESSING
    assert again.cancel_requested is True
    assert _kinds(task.id) == ["submitted", "started", "log"]


def test_fail_after_cancel_request_marks_cancelled(app, now):
    task = _submit(now=now)
    claim = _claim_one(now)
    queue.cancel(task.id, now=now)
    stopped_at = now + timedelta(seconds=1)

    status = queue.fail(claim, "TaskCancelled: stopped", now=stopped_at)

    task = _reload(task.id)
    assert status == TaskStatus.CANCELLED
    assert task.status == TaskStatus.CANCELLED
    assert task.finished_at == stopped_at
    assert task.locked_by is None
    assert task.last_error == "TaskCancelled: stopped"
    assert _kinds(task.id)[-1] == "cancelled"
    assert _events(task.id)[-1].message.startswith("Cancelled by a person while attempt 1 of")


def test_succeed_after_cancel_request_still_succeeds(app, now):
    task = _submit(now=now)
    claim = _claim_one(now)
    queue.cancel(task.id, now=now)

    queue.succeed(claim, "done anyway", now=now)

    assert _reload(task.id).status == TaskStatus.SUCCEEDED


def _finish(task, outcome, now):
    """Bring a fresh task to SUCCEEDED, FAILED or CANCELLED."""
    if outcome == "CANCELLED":
        queue.cancel(task.id, now=now)
        return
    claim = _claim_one(now)
    if outcome == "SUCCEEDED":
        queue.succeed(claim, None, now=now)
    else:
        queue.fail(claim, "RuntimeError: boom", retryable=False, now=now)


@pytest.mark.parametrize("final", ["SUCCEEDED", "FAILED", "CANCELLED"])
def test_cancel_terminal_task_raises_invalid_transition(app, now, final):
    task = _submit(now=now)
    _finish(task, final, now)
    kinds_before = _kinds(task.id)

    with pytest.raises(InvalidTransition) as raised:
        queue.cancel(task.id, now=now)

    assert raised.value.status == final
    assert raised.value.allowed == ["PENDING", "PROCESSING", "RETRYING"]
    assert f"cannot cancel task {task.id}" in str(raised.value)
    assert _reload(task.id).status == final
    assert _kinds(task.id) == kinds_before


def test_cancel_unknown_task_raises_not_found(app):
    with pytest.raises(TaskNotFound, match="task 404 not found"):
        queue.cancel(404)


# Retrying by hand


def test_retry_failed_task_requeues_it(app, now):
    task = _submit(now=now, max_attempts=1)
    queue.fail(_claim_one(now), "RuntimeError: boom", now=now)
    retried_at = now + timedelta(seconds=5)

    returned = queue.retry(task.id, source="form", now=retried_at)

    task = _reload(task.id)
    assert returned.status == TaskStatus.PENDING
    assert task.status == TaskStatus.PENDING
    assert task.attempts == 1
    assert task.max_attempts == 2
    assert task.run_at == retried_at
    assert task.finished_at is None
    assert task.cancel_requested is False
    assert task.progress == 0


def test_retry_writes_requeued_event(app, now):
    task = _submit(now=now, max_attempts=1)
    queue.fail(_claim_one(now), "RuntimeError: boom", now=now)

    queue.retry(task.id, source="form", now=now)

    event = _events(task.id)[-1]
    assert event.kind == "requeued"
    assert event.level == "info"
    assert event.attempt == 1
    assert event.message == "Retried by a person from form; attempt 2 is due now"


def test_retry_failed_task_runs_one_more_attempt(app, now):
    task = _submit(now=now, max_attempts=1)
    queue.fail(_claim_one(now), "RuntimeError: boom", now=now)
    queue.retry(task.id, now=now)

    claim = _claim_one(now)
    queue.succeed(claim, "second time lucky", now=now)

    assert claim.attempt == 2
    assert claim.max_attempts == 2
    assert _reload(task.id).status == TaskStatus.SUCCEEDED


def test_retry_keeps_max_attempts_when_attempts_remain(app, now):
    task = _submit(now=now, max_attempts=3)
    queue.fail(_claim_one(now), "PermanentError: bad", retryable=False, now=now)

    queue.retry(task.id, now=now)

    task = _reload(task.id)
    assert task.max_attempts == 3
    assert task.attempts == 1


def test_retry_cancelled_task_requeues_it(app, now):
    task = _submit(now=now)
    queue.cancel(task.id, now=now)

    queue.retry(task.id, now=now)

    task = _reload(task.id)
    assert task.status == TaskStatus.PENDING
    assert task.finished_at is None
    assert task.max_attempts == 3
    assert _kinds(task.id) == ["submitted", "cancelled", "requeued"]


def test_retry_clears_cancel_request(app, now):
    task = _submit(now=now, max_attempts=1)
    claim = _claim_one(now)
    queue.cancel(task.id, now=now)
    queue.fail(claim, "TaskCancelled: stopped", now=now)

    queue.retry(task.id, now=now)

    task = _reload(task.id)
    assert task.status == TaskStatus.PENDING
    assert task.cancel_requested is False
    assert task.max_attempts == 2


def test_retry_sends_task_submitted_signal(app, now):
    task = _submit(now=now)
    queue.cancel(task.id, now=now)
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    signals.task_submitted.connect(receiver, sender=app)
    try:
        queue.retry(task.id, now=now)
    finally:
        signals.task_submitted.disconnect(receiver, sender=app)

    assert received == [{"task_id": task.id, "due_now": True, "queue": "default"}]


@pytest.mark.parametrize("current", ["PENDING", "PROCESSING", "RETRYING", "SUCCEEDED"])
def test_retry_other_status_raises(app, now, current):
    task = _submit(now=now)
    if current != "PENDING":
        claim = _claim_one(now)
        if current == "RETRYING":
            queue.fail(claim, "RuntimeError: boom", now=now)
        elif current == "SUCCEEDED":
            queue.succeed(claim, None, now=now)
    kinds_before = _kinds(task.id)

    with pytest.raises(InvalidTransition) as raised:
        queue.retry(task.id, now=now)

    assert raised.value.status == current
    assert raised.value.allowed == ["CANCELLED", "FAILED"]
    assert f"cannot retry task {task.id}" in str(raised.value)
    assert _reload(task.id).status == current
    assert _kinds(task.id) == kinds_before


def test_retry_unknown_task_raises_not_found(app):
    with pytest.raises(TaskNotFound):
        queue.retry(404)


def test_retry_after_attempt_limit_raises(app, now):
    task = _submit(now=now)
    db.session.execute(
        update(tasks_table).where(tasks_table.c.id == task.id)
        .values(status="FAILED", attempts=100, max_attempts=100, finished_at=now)
    )
    db.session.commit()

    with pytest.raises(RetryLimitReached, match="maximum of 100 attempts"):
        queue.retry(task.id, now=now)

    assert _reload(task.id).status == TaskStatus.FAILED


# Lease recovery


def test_recover_expired_leases_ignores_live_lease(app, now):
    task = _submit(now=now)
    _claim_one(now)
    lease = app.config["LEASE_SECONDS"]

    recovered = queue.recover_expired_leases(now=now + timedelta(seconds=lease - 1))

    assert recovered == 0
    assert _reload(task.id).status == TaskStatus.PROCESSING


def test_recovery_with_nothing_expired_skips_write_lock(app, dialect, now):
    if dialect != "sqlite":
        pytest.skip("PostgreSQL has no database-wide write lock")
    _submit(now=now)
    _claim_one(now)
    # Another writer holds SQLite's write lock, and this process would wait
    # only 0.1 s for it.
    db.session.remove()
    outsider = db.engine.raw_connection()
    outsider.driver_connection.execute("BEGIN IMMEDIATE")
    try:
        db.session.connection().exec_driver_sql("PRAGMA busy_timeout=100")
        db.session.commit()

        recovered = queue.recover_expired_leases(now=now)
    finally:
        outsider.driver_connection.execute("ROLLBACK")
        outsider.close()

    assert recovered == 0


def test_recover_expired_lease_schedules_retry(app, now):
    task = _submit(now=now)
    _claim_one(now)
    later = now + timedelta(seconds=app.config["LEASE_SECONDS"] + 1)

    recovered = queue.recover_expired_leases(now=later)

    task = _reload(task.id)
    assert recovered == 1
    assert task.status == TaskStatus.RETRYING
    assert task.last_error.startswith("WorkerLost")
    assert WORKER in task.last_error
    assert task.locked_by is None
    assert task.lease_expires_at is None
    assert task.run_at >= later


def test_recover_expired_lease_writes_events(app, now):
    task = _submit(now=now)
    _claim_one(now)

    queue.recover_expired_leases(now=now + timedelta(hours=1))

    lease_expired, retry_scheduled = _events(task.id)[-2:]
    assert lease_expired.kind == "lease_expired"
    assert lease_expired.level == "warning"
    assert lease_expired.worker_id == WORKER
    assert lease_expired.attempt == 1
    assert retry_scheduled.kind == "retry_scheduled"
    assert "WorkerLost" in retry_scheduled.message


def test_recover_last_attempt_fails_task(app, now):
    task = _submit(now=now, max_attempts=1)
    _claim_one(now)
    later = now + timedelta(hours=1)

    queue.recover_expired_leases(now=later)

    task = _reload(task.id)
    assert task.status == TaskStatus.FAILED
    assert task.finished_at == later
    assert task.last_error.startswith("WorkerLost")
    assert _kinds(task.id)[-2:] == ["lease_expired", "failed"]


def test_recover_expired_lease_honours_cancel(app, now):
    task = _submit(now=now)
    _claim_one(now)
    queue.cancel(task.id, now=now)

    queue.recover_expired_leases(now=now + timedelta(hours=1))

    assert _reload(task.id).status == TaskStatus.CANCELLED
    assert _kinds(task.id)[-2:] == ["lease_expired", "cancelled"]


def test_late_outcome_after_recovery_raises_lease_lost(app, now):
    task = _submit(now=now)
    claim = _claim_one(now)
    queue.recover_expired_leases(now=now + timedelta(hours=1))
    kinds_before = _kinds(task.id)

    with pytest.raises(LeaseLost):
        queue.succeed(claim, "late", now=now + timedelta(hours=1))
    with pytest.raises(LeaseLost):
        queue.fail(claim, "RuntimeError: late", now=now + timedelta(hours=1))

    task = _reload(task.id)
    assert task.status == TaskStatus.RETRYING
    assert task.result is None
    assert _kinds(task.id) == kinds_before


def test_late_outcome_after_reclaim_raises(app, now):
    task = _submit(now=now)
    old_claim = _claim_one(now)
    later = now + timedelta(hours=1)
    queue.recover_expired_leases(now=later)
    new_claim = _claim_one(later + timedelta(minutes=1))

    with pytest.raises(LeaseLost):
        queue.succeed(old_claim, "late", now=later)

    assert new_claim.attempt == 2
    assert _reload(task.id).status == TaskStatus.PROCESSING


def test_succeed_many_stores_batch_in_order(app, now):
    tasks = [_submit(now=now) for _ in range(3)]
    claims = queue.claim(WORKER, 3, now=now)
    results = [{"n": 1}, "two", None]

    lost = queue.succeed_many(zip(claims, results), now=now + timedelta(seconds=1))

    stored = [_reload(task.id) for task in tasks]
    assert lost == []
    assert [task.status for task in stored] == [TaskStatus.SUCCEEDED] * 3
    assert [task.result for task in stored] == results
    assert [task.finished_at for task in stored] == [now + timedelta(seconds=1)] * 3
    assert [task.locked_by for task in stored] == [None] * 3
    assert [_kinds(task.id) for task in tasks] == [["submitted", "started", "succeeded"]] * 3


def test_succeed_many_rejects_lost_attempt(app, now):
    # The lease of attempt 1 ran out and the same worker claimed attempt 2;
    # both outcomes reach one batch. Only attempt 2 may succeed.
    task = _submit(now=now)
    old_claim = _claim_one(now)
    later = now + timedelta(hours=1)
    queue.recover_expired_leases(now=later)
    new_claim = _claim_one(later + timedelta(minutes=1))

    lost = queue.succeed_many([(old_claim, "late"), (new_claim, "fresh")],
                              now=later + timedelta(minutes=2))

    stored = _reload(task.id)
    succeeded = [event for event in _events(task.id) if event.kind == "succeeded"]
    assert lost == [old_claim]
    assert stored.status == TaskStatus.SUCCEEDED
    assert stored.result == "fresh"
    assert [event.attempt for event in succeeded] == [2]


def test_succeed_many_invalid_result_writes_nothing(app, now):
    task = _submit(now=now)
    other = _submit(now=now)
    first, second = queue.claim(WORKER, 2, now=now)

    with pytest.raises(InvalidResult):
        queue.succeed_many([(first, "fine"), (second, {"not json": {1, 2}})], now=now)

    assert _reload(task.id).status == TaskStatus.PROCESSING
    assert _reload(other.id).status == TaskStatus.PROCESSING
    assert _kinds(task.id) == ["submitted", "started"]


def test_fail_many_returns_status_per_attempt(app, now, slow_backoff):
    retried = _submit(now=now, max_attempts=3)
    failed = _submit(now=now, max_attempts=3)
    stale = _submit(now=now)
    claims = queue.claim(WORKER, 3, now=now)
    by_task = {claim.task_id: claim for claim in claims}

    statuses = queue.fail_many([
        queue.AttemptFailure(by_task[retried.id], "RuntimeError: flaky"),
        queue.AttemptFailure(by_task[failed.id], "ValueError: bad input", retryable=False),
        queue.AttemptFailure(replace(by_task[stale.id], worker_id=OTHER_WORKER), "Late: lost"),
    ], now=now)

    assert statuses == [TaskStatus.RETRYING, TaskStatus.FAILED, None]
    assert _reload(retried.id).last_error == "RuntimeError: flaky"
    assert _reload(failed.id).finished_at == now
    assert _reload(stale.id).status == TaskStatus.PROCESSING
    assert _kinds(retried.id) == ["submitted", "started", "retry_scheduled"]
    assert _kinds(failed.id) == ["submitted", "started", "failed"]
    assert _kinds(stale.id) == ["submitted", "started"]


def test_recover_expired_leases_respects_limit(app, now):
    for _ in range(3):
        _submit(now=now)
    queue.claim(WORKER, 3, now=now)

    first = queue.recover_expired_leases(now=now + timedelta(hours=1), limit=2)
    second = queue.recover_expired_leases(now=now + timedelta(hours=1), limit=2)

    assert first == 2
    assert second == 1


# Heartbeats, progress and logs


def test_extend_leases_renews_held_attempts(app, now):
    first = _submit(now=now)
    second = _submit(now=now)
    claims = queue.claim(WORKER, 2, now=now)
    beat = now + timedelta(seconds=10)

    held = queue.extend_leases(WORKER, claims, now=beat)

    lease = timedelta(seconds=app.config["LEASE_SECONDS"])
    assert held == {first.id: False, second.id: False}
    assert _reload(first.id).lease_expires_at == beat + lease
    assert _reload(second.id).lease_expires_at == beat + lease


def test_extend_leases_returns_cancel_flags(app, now):
    first = _submit(now=now)
    second = _submit(now=now)
    claims = queue.claim(WORKER, 2, now=now)
    queue.cancel(second.id, now=now)

    held = queue.extend_leases(WORKER, claims, now=now)

    assert held == {first.id: False, second.id: True}


def test_extend_leases_omits_lost_attempts(app, now):
    lost = _submit(now=now)
    kept = _submit(now=now)
    claims = queue.claim(WORKER, 2, now=now)
    lost_claim = next(c for c in claims if c.task_id == lost.id)
    kept_claim = next(c for c in claims if c.task_id == kept.id)
    lease = app.config["LEASE_SECONDS"]
    queue.extend_leases(WORKER, [kept_claim], now=now + timedelta(seconds=lease / 2))
    queue.recover_expired_leases(now=now + timedelta(seconds=lease + 1))

    held = queue.extend_leases(WORKER, claims, now=now + timedelta(seconds=lease + 2))

    assert held == {kept.id: False}
    assert _reload(lost.id).status == TaskStatus.RETRYING
    assert _reload(lost.id).lease_expires_at is None
    assert lost_claim.task_id not in held


def test_extend_leases_omits_other_workers_and_stale_attempts(app, now):
    _submit(now=now)
    claim = _claim_one(now)

    assert queue.extend_leases(OTHER_WORKER, [claim], now=now) == {}
    assert queue.extend_leases(WORKER, [replace(claim, attempt=5)], now=now) == {}


def test_extend_leases_with_no_claims_returns_empty(app):
    assert queue.extend_leases(WORKER, []) == {}


@pytest.mark.parametrize(
    "percent, stored",
    [(-5, 0), (0, 0), (42.7, 42), (100, 100), (150, 100)],
)
def test_report_progress_clamps_to_0_100(app, now, percent, stored):
    task = _submit(now=now)
    claim = _claim_one(now)

    cancel = queue.report_progress(claim, percent, "halfway")

    task = _reload(task.id)
    assert cancel is False
    assert task.progress == stored
    assert task.progress_message == "halfway"


def test_report_progress_truncates_message(app, now):
    task = _submit(now=now)

    queue.report_progress(_claim_one(now), 10, "m" * 500)

    assert _reload(task.id).progress_message == "m" * 200


def test_report_progress_returns_cancel_request(app, now):
    task = _submit(now=now)
    claim = _claim_one(now)
    queue.cancel(task.id, now=now)

    assert queue.report_progress(claim, 50) is True


def test_report_progress_not_held_raises_lease_lost(app, now):
    task = _submit(now=now)
    claim = _claim_one(now)

    with pytest.raises(LeaseLost):
        queue.report_progress(replace(claim, worker_id=OTHER_WORKER), 50)
    queue.succeed(claim, None, now=now)
    with pytest.raises(LeaseLost):
        queue.report_progress(claim, 50)

    assert _reload(task.id).progress == 100


def test_claim_resets_progress_of_retried_task(app, now):
    task = _submit(now=now)
    claim = _claim_one(now)
    queue.report_progress(claim, 70, "most of it")
    queue.fail(claim, "RuntimeError: boom", now=now)

    _claim_one(now + timedelta(hours=1))

    task = _reload(task.id)
    assert task.progress == 0
    assert task.progress_message is None


def test_write_log_stores_log_event(app, now):
    task = _submit(now=now)

    queue.write_log(task.id, "disk almost full", level="warning", attempt=1,
                    worker_id=WORKER, now=now)

    event = _events(task.id)[-1]
    assert event.kind == "log"
    assert event.level == "warning"
    assert event.message == "disk almost full"
    assert event.attempt == 1
    assert event.worker_id == WORKER
    assert event.created_at == now


def test_write_log_level_is_case_insensitive(app):
    task = _submit()

    queue.write_log(task.id, "loud", level="ERROR")

    assert _events(task.id)[-1].level == "error"


def test_write_log_default_level_is_info(app):
    task = _submit()

    queue.write_log(task.id, "hello")

    assert _events(task.id)[-1].level == "info"


def test_write_log_unknown_level_writes_nothing(app):
    task = _submit()

    with pytest.raises(ValueError):
        queue.write_log(task.id, "hello", level="fatal")

    assert _kinds(task.id) == ["submitted"]


def test_write_log_truncates_long_message(app):
    task = _submit()

    queue.write_log(task.id, "y" * 20_000)

    assert len(_events(task.id)[-1].message) == queue.MAX_MESSAGE_LENGTH


# Sequences of events


def test_event_sequence_success(app, now):
    task = _submit(now=now)
    queue.succeed(_claim_one(now), {"ok": True}, now=now)

    events = _events(task.id)
    assert [e.kind for e in events] == ["submitted", "started", "succeeded"]
    assert [e.attempt for e in events] == [0, 1, 1]


def test_event_sequence_retry_then_success(app, now):
    task = _submit(now=now)
    queue.fail(_claim_one(now), "RuntimeError: once", now=now)
    later = now + timedelta(minutes=1)
    queue.succeed(_claim_one(later), "fine", now=later)

    events = _events(task.id)
    assert [e.kind for e in events] == [
        "submitted", "started", "retry_scheduled", "started", "succeeded",
    ]
    assert [e.attempt for e in events] == [0, 1, 1, 2, 2]
    assert _reload(task.id).status == TaskStatus.SUCCEEDED


def test_event_sequence_exhausted_retries(app, now):
    task = _submit(now=now, max_attempts=3)
    moment = now
    for attempt in range(1, 4):
        moment += timedelta(minutes=1)
        queue.fail(_claim_one(moment), f"RuntimeError: attempt {attempt}", now=moment)

    events = _events(task.id)
    assert [e.kind for e in events] == [
        "submitted",
        "started", "retry_scheduled",
        "started", "retry_scheduled",
        "started", "failed",
    ]
    assert [e.attempt for e in events] == [0, 1, 1, 2, 2, 3, 3]
    assert _reload(task.id).status == TaskStatus.FAILED
    assert _reload(task.id).last_error == "RuntimeError: attempt 3"


def test_event_sequence_cancel_while_waiting(app, now):
    task = _submit(now=now)
    queue.cancel(task.id, now=now)

    assert _kinds(task.id) == ["submitted", "cancelled"]


def test_event_sequence_cancel_while_running(app, now):
    task = _submit(now=now)
    claim = _claim_one(now)
    queue.cancel(task.id, now=now)
    queue.fail(claim, "TaskCancelled: stopped", now=now)

    assert _kinds(task.id) == ["submitted", "started", "log", "cancelled"]


def test_event_sequence_lease_recovery(app, now):
    task = _submit(now=now)
    _claim_one(now, worker="dead-worker")
    later = now + timedelta(hours=1)
    queue.recover_expired_leases(now=later)
    rescued_at = later + timedelta(minutes=1)
    queue.succeed(_claim_one(rescued_at), "rescued", now=rescued_at)

    events = _events(task.id)
    assert [e.kind for e in events] == [
        "submitted", "started", "lease_expired", "retry_scheduled", "started", "succeeded",
    ]
    assert [e.worker_id for e in events] == [
        None, "dead-worker", "dead-worker", "dead-worker", WORKER, WORKER,
    ]
    assert [e.attempt for e in events] == [0, 1, 1, 1, 2, 2]


def test_event_sequence_manual_retry(app, now):
    task = _submit(now=now, max_attempts=1)
    queue.fail(_claim_one(now), "RuntimeError: boom", now=now)
    queue.retry(task.id, now=now)
    queue.succeed(_claim_one(now), None, now=now)

    assert _kinds(task.id) == [
        "submitted", "started", "failed", "requeued", "started", "succeeded",
    ]


# Invariants the schema enforces


def _task_values(created: datetime) -> dict:
    return dict(
        type="noop", params={}, queue="default", status="PENDING", priority=0, attempts=0,
        max_attempts=3, timeout_seconds=10.0, progress=0, cancel_requested=False,
        created_at=created, run_at=created,
    )


def _plus(seconds: float):
    return lambda created: created + timedelta(seconds=seconds)


# (constraint, case, values as a function of the task's created_at)
TASK_CHECKS = [
    ("ck_tasks_status_valid", "unknown status", lambda c: {"status": "DONE"}),
    ("ck_tasks_status_valid", "lower case status", lambda c: {"status": "pending"}),
    ("ck_tasks_attempts_range", "negative attempts", lambda c: {"attempts": -1}),
    ("ck_tasks_attempts_range", "attempts above max", lambda c: {"attempts": 4}),
    ("ck_tasks_attempts_range", "zero max attempts", lambda c: {"max_attempts": 0}),
    ("ck_tasks_attempts_range", "max attempts above limit",
     lambda c: {"max_attempts": 101, "attempts": 0}),
    ("ck_tasks_lease_only_processing", "locked while pending", lambda c: {"locked_by": "w"}),
    ("ck_tasks_lease_only_processing", "lease while pending",
     lambda c: {"lease_expires_at": _plus(30)(c)}),
    ("ck_tasks_lease_only_processing", "processing without lock or lease",
     lambda c: {"status": "PROCESSING"}),
    ("ck_tasks_lease_only_processing", "processing without lock",
     lambda c: {"status": "PROCESSING", "lease_expires_at": _plus(30)(c)}),
    ("ck_tasks_lease_only_processing", "processing without lease",
     lambda c: {"status": "PROCESSING", "locked_by": "w"}),
    ("ck_tasks_lease_only_processing", "lock kept after success",
     lambda c: {"status": "SUCCEEDED", "finished_at": _plus(1)(c), "locked_by": "w",
                "lease_expires_at": _plus(30)(c)}),
    ("ck_tasks_finished_only_terminal", "finished while pending",
     lambda c: {"finished_at": _plus(1)(c)}),
    ("ck_tasks_finished_only_terminal", "finished while retrying",
     lambda c: {"status": "RETRYING", "finished_at": _plus(1)(c)}),
    ("ck_tasks_finished_only_terminal", "succeeded without finish time",
     lambda c: {"status": "SUCCEEDED"}),
    ("ck_tasks_finished_only_terminal", "failed without finish time",
     lambda c: {"status": "FAILED"}),
    ("ck_tasks_finished_only_terminal", "cancelled without finish time",
     lambda c: {"status": "CANCELLED"}),
    ("ck_tasks_result_only_succeeded", "result while pending", lambda c: {"result": {"a": 1}}),
    ("ck_tasks_result_only_succeeded", "result when failed",
     lambda c: {"status": "FAILED", "finished_at": _plus(1)(c), "result": {"a": 1}}),
    ("ck_tasks_timestamps_ordered", "started before created",
     lambda c: {"started_at": _plus(-1)(c)}),
    ("ck_tasks_timestamps_ordered", "finished before created",
     lambda c: {"status": "CANCELLED", "finished_at": _plus(-1)(c)}),
    ("ck_tasks_timestamps_ordered", "finished before started",
     lambda c: {"status": "CANCELLED", "started_at": _plus(10)(c), "finished_at": _plus(5)(c)}),
    ("ck_tasks_progress_range", "negative progress", lambda c: {"progress": -1}),
    ("ck_tasks_progress_range", "progress above 100", lambda c: {"progress": 101}),
    ("ck_tasks_priority_range", "priority below -100", lambda c: {"priority": -101}),
    ("ck_tasks_priority_range", "priority above 100", lambda c: {"priority": 101}),
    ("ck_tasks_timeout_positive", "zero timeout", lambda c: {"timeout_seconds": 0}),
    ("ck_tasks_timeout_positive", "negative timeout", lambda c: {"timeout_seconds": -1.5}),
]


@pytest.mark.parametrize(
    "constraint, case, values", TASK_CHECKS, ids=[case for _, case, _ in TASK_CHECKS]
)
def test_schema_check_rejects_update(app, now, constraint, case, values):
    task = _submit(now=now)
    statement = update(tasks_table).where(tasks_table.c.id == task.id).values(**values(now))

    with pytest.raises(IntegrityError) as raised:
        db.session.execute(statement)
        db.session.commit()
    db.session.rollback()

    assert constraint in str(raised.value)
    assert _reload(task.id).status == TaskStatus.PENDING
    assert _reload(task.id).created_at == now


def test_schema_check_accepts_boundary_values(app, now):
    task = _submit(now=now)

    db.session.execute(
        update(tasks_table).where(tasks_table.c.id == task.id)
        .values(priority=100, progress=100, attempts=100, max_attempts=100,
                timeout_seconds=0.001, started_at=now)
    )
    db.session.commit()
    db.session.execute(
        update(tasks_table).where(tasks_table.c.id == task.id)
        .values(priority=-100, progress=0, status="SUCCEEDED", finished_at=now, result=[1])
    )
    db.session.commit()

    task = _reload(task.id)
    assert task.priority == -100
    assert task.result == [1]


@pytest.mark.parametrize(
    "constraint, column, value",
    [
        ("ck_task_events_kind_valid", "kind", "exploded"),
        ("ck_task_events_kind_valid", "kind", "SUBMITTED"),
        ("ck_task_events_level_valid", "level", "fatal"),
    ],
)
def test_schema_check_rejects_event(app, now, constraint, column, value):
    task = _submit(now=now)
    row = {"task_id": task.id, "kind": "log", "level": "info", "attempt": 0,
           "message": "x", "created_at": now, column: value}

    with pytest.raises(IntegrityError) as raised:
        db.session.execute(insert(events_table).values(**row))
        db.session.commit()
    db.session.rollback()

    assert constraint in str(raised.value)
    assert _kinds(task.id) == ["submitted"]


def test_schema_event_needs_existing_task(app, now):
    with pytest.raises(IntegrityError):
        db.session.execute(insert(events_table).values(
            task_id=999_999, kind="log", level="info", attempt=0, message="x", created_at=now))
        db.session.commit()
    db.session.rollback()

    assert count_rows("task_events") == 0


def test_schema_events_deleted_with_their_task(app, now):
    task = _submit(now=now)

    db.session.execute(tasks_table.delete().where(tasks_table.c.id == task.id))
    db.session.commit()

    assert count_rows("task_events") == 0


def test_schema_idempotency_key_unique(app, now):
    _submit(now=now, idempotency_key="same")

    with pytest.raises(IntegrityError) as raised:
        db.session.execute(insert(tasks_table).values(
            **_task_values(now), idempotency_key="same"))
        db.session.commit()
    db.session.rollback()

    assert "idempotency_key" in str(raised.value)
    assert count_rows("tasks") == 1


def test_schema_allows_many_keyless_tasks(app, now):
    db.session.execute(insert(tasks_table), [_task_values(now), _task_values(now)])
    db.session.commit()

    assert count_rows("tasks") == 2


# Timestamps


def test_timestamps_come_back_aware_utc(app):
    submitted = datetime(2026, 3, 1, 14, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))

    task = _reload(_submit(now=submitted).id)

    assert task.created_at == submitted
    assert task.created_at.tzinfo == UTC
    assert task.created_at.hour == 12
    assert task.created_at.microsecond == 123456
    assert task.run_at.tzinfo == UTC


def test_timestamps_aware_in_core_rows(app, now):
    task = _submit(now=now)
    _claim_one(now)

    row = db.session.execute(
        select(tasks_table.c.created_at, tasks_table.c.started_at, tasks_table.c.lease_expires_at)
        .where(tasks_table.c.id == task.id)
    ).one()

    for value in row:
        assert value.tzinfo == UTC
    assert row.started_at == now


def test_timestamps_of_events_aware_utc(app):
    task = _submit()

    assert _events(task.id)[0].created_at.tzinfo == UTC


def test_timestamps_stored_as_utc(app, dialect):
    submitted = datetime(2026, 3, 1, 14, 30, 5, tzinfo=timezone(timedelta(hours=2)))
    task = _submit(now=submitted)

    raw = db.session.execute(
        text("SELECT created_at FROM tasks WHERE id = :id"), {"id": task.id}
    ).scalar_one()

    if dialect == "sqlite":
        assert raw == "2026-03-01 12:30:05.000000"
    else:
        assert raw == datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)


def test_timestamps_naive_datetime_rejected(app, now):
    task = _submit(now=now)

    with pytest.raises(StatementError, match="naive datetime") as raised:
        db.session.execute(
            update(tasks_table).where(tasks_table.c.id == task.id)
            .values(run_at=datetime(2026, 1, 1, 12, 0))
        )
    db.session.rollback()

    assert isinstance(raised.value.orig, ValueError)
    assert _reload(task.id).run_at == now


def test_task_to_dict_timestamps_have_offset(app):
    submitted = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    data = _reload(_submit(now=submitted).id).to_dict()

    assert data["created_at"] == "2026-03-01T12:00:00+00:00"
    assert data["started_at"] is None
    assert data["status"] == "PENDING"



# The clock that decides leases


@pytest.fixture
def fast_host_clock(monkeypatch):
    """Make this host's clock run an hour ahead of the database server's."""
    ahead = utcnow() + timedelta(hours=1)
    monkeypatch.setattr("app.tasks.session.utcnow", lambda: ahead)
    return ahead


def test_clock_postgres_stamps_with_database_time(app, dialect, fast_host_clock):
    if dialect != "postgresql":
        pytest.skip("SQLite runs on one host and uses its clock")

    task = _submit()

    assert task.created_at < fast_host_clock - timedelta(minutes=30)


def test_clock_postgres_host_ahead_cannot_steal_live_lease(app, dialect, fast_host_clock):
    if dialect != "postgresql":
        pytest.skip("SQLite runs on one host and uses its clock")
    task = _submit()
    queue.claim("w1", 1)

    recovered = queue.recover_expired_leases()

    assert recovered == 0
    assert _reload(task.id).status == TaskStatus.PROCESSING


def test_clock_sqlite_uses_host_time(app, dialect, fast_host_clock):
    if dialect != "sqlite":
        pytest.skip("PostgreSQL uses the database server's clock")

    task = _submit()

    assert task.created_at == fast_host_clock
