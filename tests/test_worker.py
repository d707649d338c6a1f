"""The worker, run in-process on SQLite and PostgreSQL, and the embedded-worker decision.

Workers start with the short intervals of BASE_CONFIG and are always stopped
by the `start_worker` fixture. Handlers that block wait on an Event that the
test releases, never on a fixed sleep.
"""

import threading
import time
from collections import Counter
from datetime import timedelta

import click
import pytest
from sqlalchemy import func, select, update

from app import create_app
from app.extensions import db
from app.tasks import (
    LeaseLost,
    PermanentError,
    Task,
    TaskEvent,
    TaskStatus,
    TaskType,
    queries,
    queue,
)
from app.tasks.registry import Param
from app.tasks.timeutil import utcnow
from app.worker import Worker
from app.worker.embedded import should_run_embedded_worker, start_embedded_worker_if_serving
from conftest import BASE_CONFIG, wait_for

FINAL = {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED}


@pytest.fixture
def start_worker(make_app):
    """Start workers for one test and stop them before its applications are disposed of."""
    workers = []

    def start(app, **options):
        worker = Worker(app, **options)
        workers.append(worker)
        worker.start()
        return worker

    yield start
    for worker in workers:
        worker.stop(timeout=5)


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


def _submit(**fields) -> int:
    task, _ = queue.submit({"type": "noop", **fields})
    return task.id


def _reload(task_id) -> Task:
    """Load the task as stored now, detached, so later loads do not change it."""
    db.session.rollback()
    task = db.session.get(Task, task_id, populate_existing=True)
    db.session.expunge(task)
    return task


def _events(task_id) -> list[TaskEvent]:
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


def _wait_until_final(task_id, timeout=10.0) -> Task:
    return _wait_for_status(task_id, FINAL, timeout=timeout)


# Built-in task types


def test_worker_runs_word_count(app, start_worker):
    task_id = _submit(type="word_count", params={"text": "one two\nthree"})
    worker = start_worker(app)

    task = _wait_until_final(task_id)

    assert task.status == TaskStatus.SUCCEEDED
    assert task.result == {"words": 3, "lines": 2, "characters": 13}
    assert task.attempts == 1
    assert task.progress == 100
    assert task.started_at >= task.created_at
    assert task.finished_at >= task.started_at
    assert _kinds(task_id) == ["submitted", "started", "log", "succeeded"]
    log_event = _events(task_id)[2]
    assert log_event.message == "Counted 3 words in 2 lines"
    assert log_event.worker_id == worker.id
    assert log_event.attempt == 1


def test_worker_fail_task_uses_every_attempt(app, start_worker):
    task_id = _submit(type="fail", params={"message": "no luck"}, max_attempts=3)
    start_worker(app)

    task = _wait_until_final(task_id)

    events = _events(task_id)
    outcome_kinds = [e.kind for e in events if e.kind != "log"]
    assert task.status == TaskStatus.FAILED
    assert task.attempts == 3
    assert task.last_error == "RuntimeError: no luck"
    assert "RuntimeError: no luck" in task.last_traceback
    assert outcome_kinds == [
        "submitted",
        "started", "retry_scheduled",
        "started", "retry_scheduled",
        "started", "failed",
    ]
    assert [e.attempt for e in events if e.kind == "started"] == [1, 2, 3]
    assert [e.message for e in events if e.kind == "log"] == [
        f"Attempt {n} of 3 is about to raise" for n in (1, 2, 3)
    ]
    assert {e.level for e in events if e.kind == "log"} == {"warning"}


def test_worker_stores_error_with_nul_character(app, start_worker):
    task_id = _submit(type="fail", params={"message": "before\x00after"}, max_attempts=1)
    start_worker(app)

    task = _wait_until_final(task_id)

    failed = [event for event in _events(task_id) if event.kind == "failed"]
    assert task.status == TaskStatus.FAILED
    assert task.last_error == "RuntimeError: before\ufffdafter"
    assert "before\ufffdafter" in task.last_traceback
    assert len(failed) == 1
    assert "before\ufffdafter" in failed[0].message


def test_worker_stores_log_progress_result_with_nul(app, start_worker, register_type):
    def nul(ctx):
        ctx.log("log\x00line")
        ctx.progress(50, "half\x00way")
        return "result\x00text"

    register_type(TaskType("nul", handler=nul))
    task_id = _submit(type="nul")
    start_worker(app)

    task = _wait_until_final(task_id)

    logs = [event.message for event in _events(task_id) if event.kind == "log"]
    assert task.status == TaskStatus.SUCCEEDED
    assert task.result == "result\x00text"
    assert task.progress_message == "half\ufffdway"
    assert logs == ["log\ufffdline"]


def test_worker_stores_lone_surrogates_as_replacement(app, start_worker, register_type):
    def broken_text(ctx):
        ctx.log("log\ud800line")
        ctx.progress(50, "half\udc00way")
        raise RuntimeError("bad \udfff text")

    register_type(TaskType("broken_text", handler=broken_text))
    task_id = _submit(type="broken_text", max_attempts=1)
    start_worker(app)

    task = _wait_until_final(task_id)

    logs = [event.message for event in _events(task_id) if event.kind == "log"]
    assert task.status == TaskStatus.FAILED
    assert task.last_error == "RuntimeError: bad \ufffd text"
    assert "bad \ufffd text" in task.last_traceback
    assert task.progress_message == "half\ufffdway"
    assert logs == ["log\ufffdline"]


def test_worker_fails_result_with_lone_surrogate(app, start_worker, register_type):
    register_type(TaskType("broken_result", handler=lambda ctx: {"text": "a\ud800b"}))
    task_id = _submit(type="broken_result", max_attempts=1)
    start_worker(app)

    task = _wait_until_final(task_id)

    assert task.status == TaskStatus.FAILED
    assert task.result is None
    assert "lone surrogate" in task.last_error


def test_worker_keeps_result_with_emoji(app, start_worker, register_type):
    register_type(TaskType("emoji_result", handler=lambda ctx: {"text": "done \U0001F600"}))
    task_id = _submit(type="emoji_result")
    start_worker(app)

    task = _wait_until_final(task_id)

    assert task.status == TaskStatus.SUCCEEDED
    assert task.result == {"text": "done \U0001F600"}


def test_worker_flaky_never_failing_succeeds(app, start_worker):
    task_id = _submit(type="flaky", params={"failure_rate": 0})
    start_worker(app)

    task = _wait_until_final(task_id)

    assert task.status == TaskStatus.SUCCEEDED
    assert task.result == {"attempt": 1}
    assert task.attempts == 1


def test_worker_flaky_always_failing_fails(app, start_worker):
    task_id = _submit(type="flaky", params={"failure_rate": 1}, max_attempts=2)
    start_worker(app)

    task = _wait_until_final(task_id)

    assert task.status == TaskStatus.FAILED
    assert task.attempts == 2
    assert task.last_error == "RuntimeError: flaky task failed (failure rate 1)"


def test_worker_sleep_task_succeeds_with_progress(app, start_worker):
    task_id = _submit(type="sleep", params={"seconds": 0.2})
    start_worker(app)

    task = _wait_until_final(task_id)

    assert task.status == TaskStatus.SUCCEEDED
    assert task.result == {"slept_seconds": 0.2}
    assert task.progress == 100


def test_worker_sleep_task_writes_log_lines(app, start_worker):
    task_id = _submit(type="sleep", params={"seconds": 1.2})
    start_worker(app)

    _wait_until_final(task_id)
    lines = [event.message for event in queries.task_events(task_id) if event.kind == "log"]

    assert lines[0] == "Sleeping for 1.2 s"
    assert len(lines) >= 3
    assert all(line.startswith("Slept ") for line in lines[1:])


# Custom handlers


def test_worker_permanent_error_fails_at_once(app, start_worker, register_type):
    def reject(ctx):
        raise PermanentError("the input file is corrupt")

    register_type(TaskType("reject", handler=reject))
    task_id = _submit(type="reject", max_attempts=3)
    start_worker(app)

    task = _wait_until_final(task_id)

    assert task.status == TaskStatus.FAILED
    assert task.attempts == 1
    assert task.max_attempts == 3
    assert task.last_error == "PermanentError: the input file is corrupt"
    assert _kinds(task_id) == ["submitted", "started", "failed"]
    assert _events(task_id)[-1].message.endswith("The error is not retryable.")


def test_worker_non_json_result_fails_and_goes_on(app, start_worker, register_type):
    register_type(TaskType("returns_set", handler=lambda ctx: {1, 2, 3}))
    bad_id = _submit(type="returns_set")
    next_id = _submit(type="noop")
    start_worker(app, concurrency=1)

    bad = _wait_until_final(bad_id)
    following = _wait_until_final(next_id)

    assert bad.status == TaskStatus.FAILED
    assert bad.last_error.startswith("InvalidResult: ")
    assert "not JSON" in bad.last_error
    assert bad.result is None
    assert bad.attempts == 1
    assert following.status == TaskStatus.SUCCEEDED


def test_worker_timeout_frees_slot(app, start_worker, register_type, gates):
    release = gates()
    handler_done = gates()
    seen = {}

    def hang(ctx):
        try:
            release.wait(30)
            seen["cancelled"] = ctx.cancelled
            seen["stop_reason"] = ctx.stop_reason
        finally:
            handler_done.set()

    register_type(TaskType("hang", handler=hang))
    hung_id = _submit(type="hang", timeout_seconds=0.3, max_attempts=1)
    start_worker(app, concurrency=1)
    _wait_for_status(hung_id, "PROCESSING")

    other_id = _submit(type="noop")
    hung = _wait_until_final(hung_id)
    other = _wait_until_final(other_id)
    handler_was_blocked = not handler_done.is_set()
    release.set()
    handler_done.wait(5)

    assert hung.status == TaskStatus.FAILED
    assert hung.last_error == "TaskTimeout: timed out after 0.3 s"
    assert other.status == TaskStatus.SUCCEEDED
    assert handler_was_blocked
    assert seen["cancelled"] is True
    assert seen["stop_reason"] == "the attempt timed out"


def test_worker_timeout_then_retry_succeeds(app, start_worker, register_type, gates):
    release = gates()
    calls = []

    def hang_once(ctx):
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            release.wait(30)
        return "second attempt"

    register_type(TaskType("hang_once", handler=hang_once))
    task_id = _submit(type="hang_once", timeout_seconds=0.3, max_attempts=2)
    start_worker(app)

    task = _wait_until_final(task_id)

    assert task.status == TaskStatus.SUCCEEDED
    assert task.result == "second attempt"
    assert calls == [1, 2]
    assert _kinds(task_id) == ["submitted", "started", "retry_scheduled", "started", "succeeded"]
    assert "TaskTimeout" in _events(task_id)[2].message


def test_worker_cancel_running_sleep_task(app, start_worker):
    task_id = _submit(type="sleep", params={"seconds": 30})
    start_worker(app)
    _wait_for_status(task_id, "PROCESSING")

    requested = time.monotonic()
    queue.cancel(task_id, source="test")
    task = _wait_until_final(task_id, timeout=5)
    elapsed = time.monotonic() - requested

    assert task.status == TaskStatus.CANCELLED
    assert elapsed < 2
    assert task.last_error.startswith("TaskCancelled: cancelled after ")
    assert task.last_traceback is None
    assert task.finished_at is not None
    assert task.locked_by is None
    # Two log lines: the handler's first line and the cancel request, in either order.
    kinds = _kinds(task_id)
    assert [kind for kind in kinds if kind != "log"] == ["submitted", "started", "cancelled"]
    assert kinds.count("log") == 2


def test_worker_handler_sees_cancel_flag(app, start_worker, register_type, gates):
    started = gates()
    seen = []

    def watch(ctx):
        started.set()
        stopped = ctx.wait(10)
        seen.append((stopped, ctx.cancelled, ctx.stop_reason))
        ctx.check_cancelled()
        return "not reached"

    register_type(TaskType("watch", handler=watch))
    task_id = _submit(type="watch")
    start_worker(app)
    assert started.wait(5)

    queue.cancel(task_id)
    task = _wait_until_final(task_id, timeout=5)

    assert seen == [(True, True, "cancelled by a person")]
    assert task.status == TaskStatus.CANCELLED
    assert task.last_error == "TaskCancelled: cancelled by a person"


def test_worker_stores_progress_and_log_lines(app, start_worker, register_type, gates):
    reported = gates()
    release = gates()

    def report(ctx):
        ctx.progress(50, "half way")
        ctx.log("checked the input", level="warning")
        ctx.log("debug detail", level="debug")
        reported.set()
        release.wait(10)
        return "done"

    register_type(TaskType("report", handler=report))
    task_id = _submit(type="report")
    worker = start_worker(app)
    assert reported.wait(5)

    running = _reload(task_id)
    release.set()
    finished = _wait_until_final(task_id)

    logs = [e for e in _events(task_id) if e.kind == "log"]
    assert running.status == TaskStatus.PROCESSING
    assert running.progress == 50
    assert running.progress_message == "half way"
    assert finished.status == TaskStatus.SUCCEEDED
    assert finished.progress == 100
    assert [(e.message, e.level) for e in logs] == [
        ("checked the input", "warning"),
        ("debug detail", "debug"),
    ]
    assert {e.attempt for e in logs} == {1}
    assert {e.worker_id for e in logs} == {worker.id}


def test_worker_unknown_type_fails_at_once(app, start_worker, register_type):
    register_type(TaskType("vanishing", handler=lambda ctx: None))
    task_id = _submit(type="vanishing", max_attempts=3)
    queue.registry.unregister("vanishing")
    start_worker(app)

    task = _wait_until_final(task_id)

    assert task.status == TaskStatus.FAILED
    assert task.attempts == 1
    assert task.last_error.startswith("UnknownTaskType: no handler is registered for 'vanishing'")
    assert "TASK_MODULES" in task.last_error
    assert _kinds(task_id) == ["submitted", "started", "failed"]


def test_worker_handler_gets_params_and_context(app, start_worker, register_type):
    seen = {}

    def greet(ctx, name, times):
        seen.update(task_id=ctx.task_id, attempt=ctx.attempt, max_attempts=ctx.max_attempts)
        return " ".join([f"hello {name}"] * times)

    register_type(TaskType("greet", handler=greet,
                           params={"name": Param(str), "times": Param(int, default=1)}))
    task_id = _submit(type="greet", params={"name": "Ada", "times": "2"}, max_attempts=4)
    start_worker(app)

    task = _wait_until_final(task_id)

    assert task.result == "hello Ada hello Ada"
    assert seen == {"task_id": task_id, "attempt": 1, "max_attempts": 4}


def test_worker_serves_only_its_queues(app, start_worker):
    mail_id = _submit(queue="mail")
    other_id = _submit(queue="reports")
    start_worker(app, queues=["mail"])

    mail = _wait_until_final(mail_id)

    assert mail.status == TaskStatus.SUCCEEDED
    assert _reload(other_id).status == TaskStatus.PENDING


def test_worker_leaves_scheduled_task_until_due(app, start_worker):
    task_id = _submit(delay_seconds=0.5)
    start_worker(app)

    task = _wait_until_final(task_id, timeout=5)

    assert task.status == TaskStatus.SUCCEEDED
    assert task.started_at >= task.run_at


# Wake-ups, several workers, leases


def test_worker_wakes_on_submit(app, start_worker, monkeypatch):
    polls_done = []
    real_claim = queue.claim

    def recording_claim(*args, **kwargs):
        claims = real_claim(*args, **kwargs)
        polls_done.append(time.monotonic())
        return claims

    monkeypatch.setattr(queue, "claim", recording_claim)
    start_worker(app, poll_interval=5)
    wait_for(lambda: polls_done, timeout=5)
    next_poll = polls_done[0] + 5

    task_id = _submit()
    _wait_for_status(task_id, {"PROCESSING", "SUCCEEDED"}, timeout=1)

    assert time.monotonic() < next_poll


def test_two_workers_run_each_task_once(app, make_app, start_worker, register_type):
    runs = []
    lock = threading.Lock()

    def record(ctx):
        with lock:
            runs.append((ctx.task_id, ctx.worker_id))
        # Long enough that the first worker is still busy when the second starts.
        time.sleep(0.005)

    register_type(TaskType("record", handler=record))
    task_ids = [_submit(type="record") for _ in range(200)]
    first = start_worker(app, concurrency=4)
    second = start_worker(make_app(), concurrency=4)

    def all_done():
        db.session.rollback()
        return db.session.scalar(
            select(func.count()).select_from(Task).where(Task.status.in_(list(FINAL)))
        ) == len(task_ids)

    wait_for(all_done, timeout=60)

    db.session.rollback()
    statuses = Counter(db.session.scalars(select(Task.status)))
    started = Counter(
        db.session.scalars(select(TaskEvent.task_id).where(TaskEvent.kind == "started"))
    )
    runs_per_task = Counter(task_id for task_id, _ in runs)
    workers_used = {worker_id for _, worker_id in runs}
    assert statuses == {"SUCCEEDED": 200}
    assert len(runs) == 200
    assert set(runs_per_task) == set(task_ids)
    assert set(runs_per_task.values()) == {1}
    assert set(started.values()) == {1}
    assert workers_used == {first.id, second.id}


def test_worker_recovers_lease_of_dead_worker(app, make_app, start_worker):
    task_id = _submit()
    dead_app = make_app(LEASE_SECONDS=0.2, HEARTBEAT_INTERVAL=0.1)
    with dead_app.app_context():
        [dead_claim] = queue.claim("dead-worker", 1)

    live = start_worker(app)
    task = _wait_until_final(task_id, timeout=10)

    events = _events(task_id)
    assert task.status == TaskStatus.SUCCEEDED
    assert task.attempts == 2
    assert [e.kind for e in events] == [
        "submitted", "started", "lease_expired", "retry_scheduled", "started", "succeeded",
    ]
    assert [e.worker_id for e in events] == [
        None, "dead-worker", "dead-worker", "dead-worker", live.id, live.id,
    ]
    assert events[3].message.startswith("Attempt 1 of 3 failed: WorkerLost: ")
    with pytest.raises(LeaseLost):
        queue.succeed(dead_claim, "late result")
    assert _reload(task_id).result is None


def test_worker_reclaim_keeps_new_attempt_tracked(
    make_app, start_worker, register_type, gates, monkeypatch
):
    # Heartbeats are slowed down so that the test alone decides when the lease runs out.
    slow_app = make_app(HEARTBEAT_INTERVAL=20)
    second_started = gates()
    release_second = gates()
    first_done = gates()
    first_seen = []

    def twice(ctx):
        if ctx.attempt == 1:
            first_seen.append(ctx.wait(10))
            first_seen.append(ctx.stop_reason)
            return "late"
        second_started.set()
        release_second.wait(10)
        return "second"

    register_type(TaskType("twice", handler=twice))
    with slow_app.app_context():
        task_id = _submit(type="twice")
        worker = start_worker(slow_app, concurrency=2)
        _wait_for_status(task_id, "PROCESSING")

        # The worker forgets attempt 1 once its outcome was recorded (and
        # rejected), which is when the worker's bookkeeping can be checked.
        forget = worker._forget_claims

        def recording_forget(claims):
            forget(claims)
            if any(claim.attempt == 1 for claim in claims):
                first_done.set()

        monkeypatch.setattr(worker, "_forget_claims", recording_forget)
        monkeypatch.setattr(worker._recorder, "on_done", recording_forget)
        db.session.execute(
            update(Task.__table__).where(Task.__table__.c.id == task_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()

        assert second_started.wait(5)
        assert first_done.wait(5)
        running_while_second_runs = worker.running_count
        release_second.set()
        task = _wait_until_final(task_id)

        assert first_seen == [True, "the lease was lost"]
        assert running_while_second_runs == 1
        assert task.status == TaskStatus.SUCCEEDED
        assert task.result == "second"
        assert task.attempts == 2
        assert _kinds(task_id) == [
            "submitted", "started", "lease_expired", "retry_scheduled", "started", "succeeded",
        ]


def test_worker_heartbeat_keeps_long_task(make_app, start_worker):
    hb_app = make_app(LEASE_SECONDS=1, HEARTBEAT_INTERVAL=0.2)
    with hb_app.app_context():
        task_id = _submit(type="sleep", params={"seconds": 2})
        start_worker(hb_app)
        running = _wait_for_status(task_id, "PROCESSING")
        started_at = running.started_at

        def lease_renewed():
            """the lease reaches past the first LEASE_SECONDS"""
            lease = _reload(task_id).lease_expires_at
            return lease is not None and (lease - started_at).total_seconds() > 1.5

        wait_for(lease_renewed, timeout=5)
        task = _wait_until_final(task_id, timeout=10)

        assert task.status == TaskStatus.SUCCEEDED
        assert task.attempts == 1
        assert task.result == {"slept_seconds": 2.0}
        assert "lease_expired" not in _kinds(task_id)


def test_worker_reuses_handler_threads(app, start_worker, register_type):
    threads = []
    register_type(TaskType("note_thread",
                           handler=lambda ctx: threads.append(threading.get_ident())))
    task_ids = [_submit(type="note_thread") for _ in range(12)]
    start_worker(app, concurrency=2)

    tasks = [_wait_until_final(task_id) for task_id in task_ids]

    assert [task.status for task in tasks] == [TaskStatus.SUCCEEDED] * 12
    assert len(threads) == 12
    assert len(set(threads)) <= 2


def _submit_after_fast_task(count: int, task_type: str) -> list[int]:
    """Submit a no-op, then `count` tasks of `task_type`, due in that order.

    A worker runs the no-op first, alone in its first claim. Its handler
    returns at once, so the worker then claims ahead of its free slots.
    """
    _submit()
    return [_submit(type=task_type) for _ in range(count)]


def _count_processing() -> int:
    db.session.rollback()
    return db.session.scalar(
        select(func.count()).select_from(Task).where(Task.status == TaskStatus.PROCESSING))


@pytest.fixture
def eager_prefetch(monkeypatch):
    """Let a worker prefetch and hold its claims whatever its handlers' durations.

    So a test can keep claims waiting behind a blocked handler: normally a
    handler that runs long stops prefetch, and a claim that waits a second
    goes back to the queue.
    """
    monkeypatch.setattr("app.worker.worker.PREFETCH_MAX_HANDLER_SECONDS", 60.0)
    monkeypatch.setattr("app.worker.worker.PREFETCH_SLOW_HANDLER_SECONDS", 60.0)
    monkeypatch.setattr("app.worker.worker.PREFETCH_TARGET_SECONDS", 6000.0)
    monkeypatch.setattr("app.worker.worker.PREFETCH_MAX_WAIT_SECONDS", 60.0)


def test_worker_prefetch_holds_claims_beyond_slots(app, start_worker, register_type, gates,
                                                   eager_prefetch):
    release = gates()
    register_type(TaskType("gate", handler=lambda ctx: release.wait(10) and "ok"))
    task_ids = _submit_after_fast_task(6, "gate")
    worker = start_worker(app, concurrency=1, prefetch=3)

    # The first claim after the no-op takes 3 or 4 tasks: 4 once the no-op's
    # outcome is stored, 3 while it still waits in the recorder.
    wait_for(lambda: _count_processing() >= 3, timeout=5)
    held = worker.running_count
    processing = _count_processing()
    release.set()
    tasks = [_wait_until_final(task_id) for task_id in task_ids]

    assert held == processing
    assert 3 <= held <= 4
    assert [task.status for task in tasks] == [TaskStatus.SUCCEEDED] * 6
    assert [task.attempts for task in tasks] == [1] * 6


def test_worker_stop_releases_prefetched_claims_at_once(app, start_worker, register_type, gates,
                                                       eager_prefetch):
    release = gates()
    register_type(TaskType("gate", handler=lambda ctx: release.wait(10) and "ok"))
    task_ids = _submit_after_fast_task(4, "gate")
    worker = start_worker(app, concurrency=1, prefetch=3)
    wait_for(lambda: _count_processing() >= 3, timeout=5)
    claimed = [task_id for task_id in task_ids if _reload(task_id).status == "PROCESSING"]

    stopper = threading.Thread(target=worker.stop, kwargs={"timeout": 10})
    stopper.start()
    # The claims that wait for the one handler thread go back before it returns.
    wait_for(lambda: _count_processing() == 1, timeout=5)
    release.set()
    stopper.join(10)

    tasks = [_reload(task_id) for task_id in claimed]
    assert not stopper.is_alive()
    assert Counter(task.status for task in tasks) == {
        TaskStatus.PENDING: len(claimed) - 1, TaskStatus.SUCCEEDED: 1}
    for task in tasks:
        if task.status == TaskStatus.PENDING:
            assert task.attempts == 0
            assert _kinds(task.id) == ["submitted", "started", "requeued"]


def test_worker_gives_back_claims_no_slot_frees_for(app, make_app, start_worker,
                                                    register_type, gates, monkeypatch):
    # Shorter than in production, in the same order: prefetch stops before
    # the waiting claims go back, so the worker does not claim them again.
    monkeypatch.setattr("app.worker.worker.PREFETCH_SLOW_HANDLER_SECONDS", 0.1)
    monkeypatch.setattr("app.worker.worker.PREFETCH_MAX_WAIT_SECONDS", 0.3)
    release = gates()
    ran_by = {}

    def gate(ctx):
        ran_by[ctx.task_id] = ctx.worker_id
        release.wait(10)
        return "ok"

    register_type(TaskType("gate", handler=gate))
    task_ids = _submit_after_fast_task(4, "gate")
    busy = start_worker(app, concurrency=1, prefetch=3)
    wait_for(lambda: ran_by, timeout=5)
    # The slow handler stops prefetch, and the claims waiting behind it go
    # back to the queue, where a second worker finds them.
    idle = start_worker(make_app(), concurrency=3)
    wait_for(lambda: len(ran_by) == 4, timeout=10)
    release.set()
    tasks = [_wait_until_final(task_id) for task_id in task_ids]
    requeued = [task_id for task_id in task_ids[1:] if "requeued" in _kinds(task_id)]

    assert [task.status for task in tasks] == [TaskStatus.SUCCEEDED] * 4
    assert [task.attempts for task in tasks] == [1] * 4
    assert ran_by[task_ids[0]] == busy.id
    assert {ran_by[task_id] for task_id in task_ids[1:]} == {idle.id}
    assert requeued
    for task_id in requeued:
        assert _kinds(task_id) == ["submitted", "started", "requeued", "started", "succeeded"]


def test_worker_cancelled_prefetched_claim_never_runs(app, start_worker, register_type, gates,
                                                     eager_prefetch):
    release = gates()
    ran = []

    def gate(ctx):
        ran.append(ctx.task_id)
        release.wait(10)
        return "ok"

    register_type(TaskType("gate", handler=gate))
    task_ids = _submit_after_fast_task(4, "gate")
    start_worker(app, concurrency=1, prefetch=3)
    wait_for(lambda: _count_processing() >= 3 and ran, timeout=5)
    cancelled_id = next(task_id for task_id in task_ids
                        if task_id not in ran and _reload(task_id).status == "PROCESSING")

    queue.cancel(cancelled_id, source="test")
    release.set()
    tasks = {task_id: _wait_until_final(task_id) for task_id in task_ids}

    assert tasks[cancelled_id].status == TaskStatus.CANCELLED
    assert tasks[cancelled_id].last_error == "TaskCancelled: cancelled by a person"
    assert cancelled_id not in ran
    assert sorted(ran) == sorted(set(task_ids) - {cancelled_id})
    assert _kinds(cancelled_id) == ["submitted", "started", "log", "cancelled"]


def test_worker_stop_waits_for_running_attempt(app, make_app, register_type):
    def short(ctx):
        ctx.wait(0.3)
        return "finished during stop"

    register_type(TaskType("short", handler=short))
    task_id = _submit(type="short")
    worker = Worker(app)
    worker.start()
    try:
        _wait_for_status(task_id, "PROCESSING")
    finally:
        worker.stop(timeout=5)

    assert worker.running_count == 0
    assert _reload(task_id).status == TaskStatus.SUCCEEDED


def test_worker_poll_once_claims_due_tasks(app, register_type, gates):
    release = gates()
    register_type(TaskType("gate", handler=lambda ctx: release.wait(10) and "ok"))
    ids = [_submit(type="gate") for _ in range(3)]
    worker = Worker(app, concurrency=2)
    try:
        started = worker.poll_once()
        assert started == 2
        assert worker.running_count == 2
        release.set()
        wait_for(lambda: worker.running_count == 0, timeout=5)
    finally:
        worker.stop(timeout=5)

    statuses = [_reload(task_id).status for task_id in ids]
    assert sorted(statuses) == ["PENDING", "SUCCEEDED", "SUCCEEDED"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"concurrency": -2}, "concurrency must be at least 1"),
        ({"poll_interval": 0}, "poll interval must be positive"),
        ({"poll_interval": -1}, "poll interval must be positive"),
    ],
)
def test_worker_rejects_bad_options(app, options, message):
    with pytest.raises(ValueError, match=message):
        Worker(app, **options)


def test_worker_rejects_heartbeat_over_lease(make_app):
    # create_app rejects this too; the worker checks again for settings changed later.
    bad = make_app(LEASE_SECONDS=1, HEARTBEAT_INTERVAL=0.5)
    bad.config["HEARTBEAT_INTERVAL"] = 1

    with pytest.raises(ValueError, match="HEARTBEAT_INTERVAL"):
        Worker(bad)


def test_worker_options_default_to_settings(make_app):
    configured = make_app(WORKER_CONCURRENCY=3, WORKER_POLL_INTERVAL=0.5)

    worker = Worker(configured, worker_id="w-1")

    assert worker.id == "w-1"
    assert worker.concurrency == 3
    assert worker.poll_interval == 0.5


# The embedded worker


@pytest.fixture
def serving_app(tmp_path):
    """An application configured as a web server would be, with no database in use."""
    app = create_app(
        {**BASE_CONFIG, "DATABASE_URL": f"sqlite:///{tmp_path / 'embedded.db'}"},
        instance_path=str(tmp_path / "instance"),
    )
    app.config["TESTING"] = False
    app.config["EMBEDDED_WORKER"] = True
    return app


def _run_command_context(name: str, reload=None) -> click.Context:
    command = click.Command(name, params=[click.Option(["--reload/--no-reload"], default=None)])
    context = click.Context(command, info_name=name)
    context.params["reload"] = reload
    return context


def test_embedded_worker_off_under_testing(tmp_path):
    app = create_app({**BASE_CONFIG, "EMBEDDED_WORKER": True,
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"},
                     instance_path=str(tmp_path))

    assert should_run_embedded_worker(app) is False
    assert "taskboard.worker" not in app.extensions


def test_embedded_worker_off_when_disabled(serving_app):
    serving_app.config["EMBEDDED_WORKER"] = False

    assert should_run_embedded_worker(serving_app) is False


def test_embedded_worker_on_without_click_context(serving_app):
    # A WSGI server such as gunicorn imports the application outside any command.
    assert should_run_embedded_worker(serving_app) is True


@pytest.mark.parametrize("command", ["upgrade", "shell", "worker", "routes"])
def test_embedded_worker_off_for_other_commands(serving_app, command):
    with _run_command_context(command, reload=False):
        assert should_run_embedded_worker(serving_app) is False


def test_embedded_worker_on_for_run_without_reloader(serving_app, monkeypatch):
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)

    with _run_command_context("run", reload=False):
        assert should_run_embedded_worker(serving_app) is True


def test_embedded_worker_off_in_reloader_parent(serving_app, monkeypatch):
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)

    with _run_command_context("run", reload=True):
        assert should_run_embedded_worker(serving_app) is False


def test_embedded_worker_on_in_reloader_child(serving_app, monkeypatch):
    monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true")

    with _run_command_context("run", reload=True):
        assert should_run_embedded_worker(serving_app) is True


def test_embedded_worker_reload_follows_debug_flag(serving_app, monkeypatch):
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    monkeypatch.setenv("FLASK_DEBUG", "1")

    with _run_command_context("run", reload=None):
        assert should_run_embedded_worker(serving_app) is False

    monkeypatch.setenv("FLASK_DEBUG", "0")
    with _run_command_context("run", reload=None):
        assert should_run_embedded_worker(serving_app) is True


def test_embedded_worker_started_when_serving(make_app):
    serving = make_app()
    serving.config["TESTING"] = False
    serving.config["EMBEDDED_WORKER"] = True

    worker = start_embedded_worker_if_serving(serving)
    try:
        assert isinstance(worker, Worker)
        assert serving.extensions["taskboard.worker"] is worker
    finally:
        worker.stop(timeout=1)


def test_embedded_worker_not_started_under_testing(app):
    assert start_embedded_worker_if_serving(app) is None


def test_worker_wakes_for_its_retry_before_next_poll(make_app, start_worker, register_type):
    def fails_once(ctx):
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "second attempt"

    register_type(TaskType("fails_once", handler=fails_once))
    app = make_app(RETRY_BACKOFF_BASE=0.2, RETRY_BACKOFF_MAX=0.2)
    start_worker(app, poll_interval=30)
    with app.app_context():
        task_id = _submit(type="fails_once")
        started = time.monotonic()
        task = _wait_until_final(task_id, timeout=5)
        elapsed = time.monotonic() - started

    assert task.status == TaskStatus.SUCCEEDED
    assert task.attempts == 2
    assert elapsed < 5
