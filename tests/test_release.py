"""Giving unfinished attempts back to the queue: queue.release and a stopping worker.

Each test runs on SQLite and on PostgreSQL. Handlers that block wait on an
Event the test sets; the fixed sleeps below are the grace periods and lease
lengths under test.
"""

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from app.extensions import db
from app.tasks import LeaseLost, Task, TaskStatus, TaskType, queries, queue
from app.worker import Worker
from conftest import wait_for

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
def gates():
    """Make Events for blocking handlers to wait on. The fixture sets them all at the end."""
    created = []

    def make() -> threading.Event:
        gate = threading.Event()
        created.append(gate)
        return gate

    yield make
    for gate in created:
        gate.set()


@pytest.fixture
def workers():
    """Track workers started by one test and stop any that are still running at its end."""
    started = []

    def start(app, **options) -> Worker:
        worker = Worker(app, **options)
        started.append(worker)
        worker.start()
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=1)


def _submit(**fields) -> int:
    task, _ = queue.submit({"type": "noop", **fields})
    return task.id


def _reload(task_id) -> Task:
    db.session.rollback()
    task = db.session.get(Task, task_id, populate_existing=True)
    db.session.expunge(task)
    return task


def _events(task_id):
    db.session.rollback()
    return queries.task_events(task_id)


def _kinds(task_id) -> list[str]:
    return [event.kind for event in _events(task_id)]


def _wait_for_status(task_id, statuses, timeout=10.0) -> Task:
    statuses = {statuses} if isinstance(statuses, str) else set(statuses)

    def reached():
        task = _reload(task_id)
        return task if task.status in statuses else None

    reached.__doc__ = f"task {task_id} reaches {', '.join(sorted(statuses))}"
    return wait_for(reached, timeout=timeout)


def _expire_lease(task_id) -> None:
    table = Task.__table__
    db.session.execute(
        update(table).where(table.c.id == task_id).values(lease_expires_at=LONG_AGO)
    )
    db.session.commit()


# queue.release


def test_release_returns_attempt_to_pending(app):
    task_id = _submit()
    [claim] = queue.claim("worker-a", 1)

    released = queue.release([claim], reason="the test stops it")

    task = _reload(task_id)
    events = _events(task_id)
    requeued = events[-1]
    assert released == 1
    assert task.status == TaskStatus.PENDING
    assert task.attempts == 0
    assert task.locked_by is None
    assert task.lease_expires_at is None
    assert task.finished_at is None
    assert task.progress == 0
    assert task.run_at >= task.created_at
    assert [event.kind for event in events] == ["submitted", "started", "requeued"]
    assert requeued.worker_id == "worker-a"
    assert requeued.attempt == 1
    assert requeued.level == "warning"
    assert "worker-a" in requeued.message
    assert "the test stops it" in requeued.message


def test_release_leaves_attempt_uncounted(app):
    task_id = _submit(max_attempts=1)
    [first] = queue.claim("worker-a", 1)
    queue.release([first], reason="stopping")

    [second] = queue.claim("worker-b", 1)
    queue.succeed(second, "done")

    task = _reload(task_id)
    events = _events(task_id)
    assert second.task_id == task_id
    assert second.attempt == 1
    assert task.status == TaskStatus.SUCCEEDED
    assert task.attempts == 1
    assert task.max_attempts == 1
    assert [event.kind for event in events] == [
        "submitted", "started", "requeued", "started", "succeeded",
    ]
    assert [event.worker_id for event in events if event.kind == "started"] == [
        "worker-a", "worker-b",
    ]


def test_release_rejects_late_outcome(app):
    task_id = _submit()
    [claim] = queue.claim("worker-a", 1)
    queue.release([claim], reason="stopping")

    with pytest.raises(LeaseLost):
        queue.succeed(claim, "late")
    with pytest.raises(LeaseLost):
        queue.fail(claim, "RuntimeError: late")

    assert queue.extend_leases("worker-a", [claim]) == {}
    assert _reload(task_id).status == TaskStatus.PENDING
    assert _kinds(task_id) == ["submitted", "started", "requeued"]


def _lose_by_success(claim):
    queue.succeed(claim, "done")


def _lose_by_failure(claim):
    queue.fail(claim, "RuntimeError: broken")


def _lose_by_lease_expiry(claim):
    _expire_lease(claim.task_id)
    assert queue.recover_expired_leases() == 1


def _lose_to_other_worker(claim):
    _lose_by_lease_expiry(claim)
    db.session.execute(
        update(Task.__table__).where(Task.__table__.c.id == claim.task_id)
        .values(run_at=LONG_AGO)
    )
    db.session.commit()
    [other] = queue.claim("worker-b", 1)
    assert other.task_id == claim.task_id


def _lose_by_release(claim):
    assert queue.release([claim], reason="first release") == 1


@pytest.mark.parametrize(
    "lose, status, holder",
    [
        (_lose_by_success, TaskStatus.SUCCEEDED, None),
        (_lose_by_failure, TaskStatus.RETRYING, None),
        (_lose_by_lease_expiry, TaskStatus.RETRYING, None),
        (_lose_to_other_worker, TaskStatus.PROCESSING, "worker-b"),
        (_lose_by_release, TaskStatus.PENDING, None),
    ],
    ids=["succeeded", "failed", "lease-expired", "reclaimed", "released-before"],
)
def test_release_skips_claim_no_longer_held(app, lose, status, holder):
    task_id = _submit()
    [claim] = queue.claim("worker-a", 1)
    lose(claim)
    kinds_before = _kinds(task_id)

    released = queue.release([claim], reason="stopping")

    task = _reload(task_id)
    assert released == 0
    assert task.status == status
    assert task.locked_by == holder
    assert _kinds(task_id) == kinds_before


def test_release_counts_only_held_claims(app):
    held_id = _submit()
    lost_id = _submit()
    claims = queue.claim("worker-a", 2)
    lost = next(claim for claim in claims if claim.task_id == lost_id)
    queue.succeed(lost, "done")

    released = queue.release(claims, reason="stopping")

    assert released == 1
    assert _reload(held_id).status == TaskStatus.PENDING
    assert _reload(lost_id).status == TaskStatus.SUCCEEDED
    assert _kinds(held_id)[-1] == "requeued"
    assert "requeued" not in _kinds(lost_id)


def test_release_of_nothing(app):
    assert queue.release([], reason="stopping") == 0


def test_release_ends_cancel_requested_task(app):
    task_id = _submit()
    [claim] = queue.claim("worker-a", 1)
    queue.cancel(task_id, source="test")

    released = queue.release([claim], reason="stopping")

    task = _reload(task_id)
    events = _events(task_id)
    assert released == 1
    assert task.status == TaskStatus.CANCELLED
    assert task.finished_at is not None
    assert task.locked_by is None
    assert [event.kind for event in events] == ["submitted", "started", "log", "cancelled"]
    assert events[-1].worker_id == "worker-a"
    assert queue.claim("worker-b", 1) == []


# A stopping worker


def test_worker_stop_releases_attempt_past_grace(app, workers, register_type, gates, caplog):
    caplog.set_level(logging.INFO, logger="app")
    proceed = gates()
    returned = gates()

    def stubborn(ctx):
        try:
            proceed.wait(30)
            return "finished after the worker stopped"
        finally:
            returned.set()

    register_type(TaskType("stubborn", handler=stubborn))
    task_id = _submit(type="stubborn")
    worker = workers(app)
    _wait_for_status(task_id, "PROCESSING")

    began = time.monotonic()
    worker.stop(timeout=0.5)
    stop_seconds = time.monotonic() - began
    released = _reload(task_id)
    events = _events(task_id)
    proceed.set()
    assert returned.wait(5)
    # The worker either drops the late result or has it rejected; both leave a warning.
    wait_for(lambda: any(getattr(record, "event", None) in {"late_outcome", "lease_lost"}
                         for record in caplog.records), timeout=5)

    assert 0.5 <= stop_seconds < 3
    assert released.status == TaskStatus.PENDING
    assert released.attempts == 0
    assert released.locked_by is None
    assert [event.kind for event in events] == ["submitted", "started", "requeued"]
    assert events[-1].worker_id == worker.id
    assert worker.id in events[-1].message
    assert worker.running_count == 0
    assert _reload(task_id).status == TaskStatus.PENDING
    assert _reload(task_id).result is None
    assert _kinds(task_id) == ["submitted", "started", "requeued"]


def test_worker_stop_releases_cooperative_sleep(app, workers):
    # The built-in sleep handler stops as soon as it is asked to, and then
    # raises TaskCancelled. The release must win over recording that failure.
    task_ids = [_submit(type="sleep", params={"seconds": 30}) for _ in range(4)]
    worker = workers(app, concurrency=4)
    for task_id in task_ids:
        _wait_for_status(task_id, "PROCESSING")

    worker.stop(timeout=0.2)
    time.sleep(0.3)

    tasks = [_reload(task_id) for task_id in task_ids]
    assert [task.status for task in tasks] == [TaskStatus.PENDING] * 4
    assert [task.attempts for task in tasks] == [0] * 4
    assert [task.last_error for task in tasks] == [None] * 4
    # The sleep handler's own log lines aside.
    assert [[kind for kind in _kinds(task_id) if kind != "log"] for task_id in task_ids] == [
        ["submitted", "started", "requeued"]
    ] * 4


def test_worker_stop_records_attempt_within_grace(app, workers, register_type):
    seen = {}

    def brief(ctx):
        time.sleep(0.4)
        seen["asked_to_stop"] = ctx.cancelled
        return "done"

    register_type(TaskType("brief", handler=brief))
    task_id = _submit(type="brief")
    worker = workers(app)
    _wait_for_status(task_id, "PROCESSING")

    began = time.monotonic()
    worker.stop(timeout=5)
    stop_seconds = time.monotonic() - began

    task = _reload(task_id)
    assert stop_seconds < 3
    assert task.status == TaskStatus.SUCCEEDED
    assert task.result == "done"
    assert task.attempts == 1
    assert seen == {"asked_to_stop": False}
    assert _kinds(task_id) == ["submitted", "started", "succeeded"]


def test_worker_heartbeats_during_grace(make_app, workers, register_type, gates):
    lease_seconds = 1
    short_lease = make_app(LEASE_SECONDS=lease_seconds, HEARTBEAT_INTERVAL=0.2)
    proceed = gates()
    register_type(TaskType("held", handler=lambda ctx: proceed.wait(30) and "done"))

    with short_lease.app_context():
        task_id = _submit(type="held")
        worker = workers(short_lease)
        started_at = _wait_for_status(task_id, "PROCESSING").started_at
        stopper = threading.Thread(target=worker.stop, kwargs={"timeout": 10})
        stopper.start()
        wait_for(lambda: worker._stopping.is_set(), timeout=5)
        late_id = _submit()

        time.sleep(2 * lease_seconds)
        during_grace = _reload(task_id)
        recovered = queue.recover_expired_leases()
        proceed.set()
        stopper.join(10)

        task = _reload(task_id)
        assert not stopper.is_alive()
        assert during_grace.status == TaskStatus.PROCESSING
        assert during_grace.lease_expires_at > started_at + timedelta(seconds=lease_seconds)
        assert recovered == 0
        assert task.status == TaskStatus.SUCCEEDED
        assert task.attempts == 1
        assert _kinds(task_id) == ["submitted", "started", "succeeded"]
        assert _reload(late_id).status == TaskStatus.PENDING
