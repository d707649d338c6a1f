"""Recurring tasks: each scheduled time yields exactly one task, however many processes run."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app.extensions import db
from app.tasks import Task, ValidationError
from app.tasks.schedules import CATCH_UP, ScheduleBook, make_schedule, schedules
from app.worker import Worker
from conftest import wait_for

NOON = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _tasks():
    db.session.rollback()
    return list(db.session.scalars(select(Task).order_by(Task.id)))


def test_make_schedule_rejects_bad_cron(app):
    with pytest.raises(ValidationError) as error:
        make_schedule("nightly", {"cron": "every day", "type": "noop"})

    assert "SCHEDULES.nightly.cron" in error.value.fields


def test_make_schedule_rejects_unknown_type(app):
    with pytest.raises(ValidationError) as error:
        make_schedule("nightly", {"cron": "0 3 * * *", "type": "nope"})

    assert "SCHEDULES.nightly.type" in error.value.fields


def test_make_schedule_rejects_own_idempotency_key(app):
    with pytest.raises(ValidationError) as error:
        make_schedule("nightly", {"cron": "0 3 * * *", "type": "noop", "idempotency_key": "k"})

    assert "SCHEDULES.nightly" in error.value.fields


def test_times_between_lists_cron_times(app):
    every_five = make_schedule("five", {"cron": "*/5 * * * *", "type": "noop"})

    times = every_five.times_between(NOON, NOON + timedelta(minutes=15))

    assert times == [NOON + timedelta(minutes=m) for m in (5, 10, 15)]


def test_submit_due_submits_each_time_once(app):
    book = ScheduleBook()
    book.add(make_schedule("minutely", {"cron": "* * * * *", "type": "noop"}))

    created = book.submit_due(now=NOON)
    again = book.submit_due(now=NOON)

    assert len(created) == int(CATCH_UP.total_seconds() // 60)
    assert again == []
    assert len(_tasks()) == len(created)


def test_submit_due_two_processes_make_one_task_per_time(make_app):
    first_app, second_app = make_app(), make_app()
    first, second = ScheduleBook(), ScheduleBook()
    for book in (first, second):
        book.add(make_schedule("hourly", {"cron": "0 * * * *", "type": "noop"}))

    with first_app.app_context():
        made_by_first = first.submit_due(now=NOON + timedelta(seconds=5))
    with second_app.app_context():
        made_by_second = second.submit_due(now=NOON + timedelta(seconds=6))
        tasks = _tasks()

    assert len(made_by_first) == 1
    assert made_by_second == []
    assert len(tasks) == 1
    assert tasks[0].idempotency_key == f"schedule:hourly:{NOON.isoformat()}"


def test_submit_due_skips_times_older_than_catch_up(app):
    book = ScheduleBook()
    book.add(make_schedule("hourly", {"cron": "0 * * * *", "type": "noop"}))

    created = book.submit_due(now=NOON + CATCH_UP + timedelta(minutes=1))

    assert created == []


def test_scheduled_task_carries_submission_fields(app):
    book = ScheduleBook()
    book.add(make_schedule("hourly", {"cron": "0 * * * *", "type": "sleep",
                                      "params": {"seconds": 1}, "priority": 7,
                                      "queue": "maintenance"}))

    book.submit_due(now=NOON)

    [task] = _tasks()
    assert task.params == {"seconds": 1.0}
    assert task.priority == 7
    assert task.queue == "maintenance"


def test_config_schedules_invalid_stops_start(make_app):
    with pytest.raises(RuntimeError) as error:
        make_app(SCHEDULES={"broken": {"cron": "61 * * * *", "type": "noop"}})

    assert "SCHEDULES.broken.cron" in str(error.value)


def test_worker_submits_and_runs_scheduled_task(make_app):
    app = make_app(SCHEDULES={"every-minute": {"cron": "* * * * *", "type": "noop"}})
    worker = Worker(app)
    worker.start()
    try:
        with app.app_context():
            wait_for(lambda: any(t.status == "SUCCEEDED" for t in _tasks()), timeout=10)
            keys = [t.idempotency_key for t in _tasks()]
    finally:
        worker.stop()
        schedules.remove("every-minute")

    assert all(key.startswith("schedule:every-minute:") for key in keys)
    assert len(keys) == len(set(keys))
