"""Retention: deleting old finished tasks and their events, by form, task type and schedule.

Every database test runs on SQLite and on PostgreSQL.
"""

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.tasks import Task, TaskEvent, TaskStatus, queue, retention
from app.tasks.schedules import schedules
from app.tasks.timeutil import utcnow
from app.web import task_list

WORKER = "worker-retention"


def submit(*, now=None, **fields) -> int:
    task, _ = queue.submit({"type": "word_count", "params": {"text": "a b"}, **fields}, now=now)
    return task.id


def finished(days_ago: float, status: TaskStatus = TaskStatus.SUCCEEDED) -> int:
    """Return a task that finished `days_ago` days ago, with its events."""
    moment = utcnow() - timedelta(days=days_ago)
    task_id = submit(now=moment, priority=100)
    claim = queue.claim(WORKER, 1, now=moment)[0]
    assert claim.task_id == task_id
    if status is TaskStatus.SUCCEEDED:
        queue.succeed(claim, {"ok": True}, now=moment)
    else:
        queue.fail(claim, "RuntimeError: boom", retryable=False, now=moment)
    return task_id


def exists(task_id) -> bool:
    db.session.rollback()
    return db.session.get(Task, task_id, populate_existing=True) is not None


def events_of(task_id) -> int:
    db.session.rollback()
    return db.session.scalar(
        select(func.count()).select_from(TaskEvent).where(TaskEvent.task_id == task_id))


def csrf_token(client) -> str:
    html = client.get("/").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@pytest.fixture(autouse=True)
def forget_retention_schedule():
    """Remove the schedule a test's settings added, since the schedule book is global."""
    yield
    schedules.remove(retention.SCHEDULE_NAME)


class FakeContext:
    """The parts of a handler's context that delete_finished_tasks uses."""

    task_id = 1

    def __init__(self, cancel_after_batches: int | None = None):
        self.logs, self.progress_reports = [], []
        self._cancel_after = cancel_after_batches

    @property
    def cancelled(self) -> bool:
        return self._cancel_after is not None and len(self.progress_reports) >= self._cancel_after

    def log(self, message, level="info"):
        self.logs.append(message)

    def progress(self, percent, message=None):
        self.progress_reports.append(percent)


# Deleting


def test_delete_expired_keeps_recent_and_unfinished(app):
    old = finished(40)
    old_failed = finished(40, TaskStatus.FAILED)
    recent = finished(1)
    old_waiting = submit(now=utcnow() - timedelta(days=40))
    assert events_of(old) >= 3

    result = retention.delete_expired(retention.cutoff_for(30))

    assert result.deleted == 2
    assert result.more is False
    assert not exists(old)
    assert not exists(old_failed)
    assert events_of(old) == 0
    assert exists(recent)
    assert exists(old_waiting)
    assert events_of(recent) >= 3


def test_delete_expired_works_in_batches(app):
    ids = [finished(10) for _ in range(5)]
    totals = []

    result = retention.delete_expired(retention.cutoff_for(5), batch_size=2, on_batch=totals.append)

    assert result.deleted == 5
    assert totals == [2, 4, 5]
    assert not any(exists(task_id) for task_id in ids)


def test_delete_expired_stops_after_max_batches(app):
    for _ in range(5):
        finished(10)

    result = retention.delete_expired(retention.cutoff_for(5), batch_size=2, max_batches=1)

    assert result.deleted == 2
    assert result.more is True
    assert retention.count_expired(retention.cutoff_for(5)).value == 3


def test_count_expired_is_bounded(app):
    for _ in range(3):
        finished(10)

    count = retention.count_expired(retention.cutoff_for(5), limit=2)

    assert count.value == 2
    assert count.exact is False


@pytest.mark.parametrize("value", [0, -1, 36_501, "x", "1.5", "", True, None, 2.0])
def test_check_days_rejects(value):
    with pytest.raises(ValueError):
        retention.check_days(value)


def test_check_days_accepts_text_and_numbers():
    assert retention.check_days("30") == 30
    assert retention.check_days(7) == 7


# The task type


def test_handler_deletes_and_reports(app):
    old = finished(20)
    keep = finished(1)
    context = FakeContext()

    result = retention.delete_finished_tasks(context, older_than_days=10)

    assert result["deleted"] == 1
    assert not exists(old)
    assert exists(keep)
    assert context.logs[0].startswith("Deleting 1 finished tasks")


def test_handler_stops_when_cancelled(app, monkeypatch):
    monkeypatch.setattr(retention, "BATCH_SIZE", 1)
    for _ in range(3):
        finished(20)

    with pytest.raises(retention.TaskCancelled):
        retention.delete_finished_tasks(FakeContext(cancel_after_batches=1), older_than_days=10)

    assert retention.count_expired(retention.cutoff_for(10)).value == 2


def test_task_type_is_registered(app):
    task_id = submit(type=retention.TASK_TYPE, params={"older_than_days": 3})

    assert exists(task_id)


# The setting and its schedule


def test_setting_schedules_retention(make_app):
    make_app(RETENTION_DAYS=14, RETENTION_CRON="5 2 * * *")

    schedule = next(s for s in schedules if s.name == retention.SCHEDULE_NAME)

    assert schedule.cron == "5 2 * * *"
    assert schedule.task == {"type": retention.TASK_TYPE, "params": {"older_than_days": 14}}


def test_setting_zero_removes_schedule(make_app):
    make_app(RETENTION_DAYS=14)

    make_app(RETENTION_DAYS=0)

    assert retention.SCHEDULE_NAME not in [s.name for s in schedules]


def test_schedule_submits_retention_task(make_app):
    app = make_app(RETENTION_DAYS=3, RETENTION_CRON="0 * * * *")
    with app.app_context():
        created = schedules.submit_due(datetime(2026, 12, 4, 10, 1, tzinfo=UTC))
        task = db.session.get(Task, created[0])

        assert len(created) == 1
        assert task.type == retention.TASK_TYPE
        assert task.params == {"older_than_days": 3}


@pytest.mark.parametrize("config, name", [
    ({"RETENTION_DAYS": -1}, "RETENTION_DAYS"),
    ({"RETENTION_DAYS": "often"}, "RETENTION_DAYS"),
    ({"RETENTION_DAYS": 99_999}, "RETENTION_DAYS"),
    ({"RETENTION_DAYS": 7, "RETENTION_CRON": "every day"}, "RETENTION_CRON"),
])
def test_bad_setting_stops_start(make_app, config, name):
    from app.settings import ConfigError

    with pytest.raises(ConfigError, match=name):
        make_app(**config)


# The dashboard form


def test_dashboard_shows_retention_form(client):
    html = client.get("/").get_data(as_text=True)

    assert 'action="/tasks/retention"' in html
    assert 'name="older_than_days"' in html


def test_form_asks_confirmation_with_count(client):
    old = finished(40)

    response = client.post("/tasks/retention",
                           data={"csrf_token": csrf_token(client), "older_than_days": "30"})
    html = unescape(response.get_data(as_text=True))

    assert response.status_code == 200
    assert "<strong>1</strong> finished task" in html
    assert "Yes, delete 1 task" in html
    assert exists(old)


def test_form_confirmed_deletes(client):
    old = finished(40)
    recent = finished(2)

    response = client.post("/tasks/retention", data={
        "csrf_token": csrf_token(client), "older_than_days": "30", "confirmed": "1"})
    html = client.get("/").get_data(as_text=True)

    assert response.status_code == 303
    assert not exists(old)
    assert exists(recent)
    assert "Deleted 1 finished task that finished more than 30 days ago" in html


def test_form_hands_rest_to_task(client, monkeypatch):
    monkeypatch.setattr(task_list, "RETENTION_BATCHES_PER_REQUEST", 1)
    monkeypatch.setattr(retention, "BATCH_SIZE", 2)
    for _ in range(3):
        finished(40)

    client.post("/tasks/retention", data={
        "csrf_token": csrf_token(client), "older_than_days": "30", "confirmed": "1"})
    html = unescape(client.get("/").get_data(as_text=True))
    db.session.rollback()
    follow_up = db.session.scalars(select(Task).where(Task.type == retention.TASK_TYPE)).all()

    assert "More remain; task #" in html
    assert [task.params for task in follow_up] == [{"older_than_days": 30}]


@pytest.mark.parametrize("days", ["0", "abc", "", "40000"])
def test_form_rejects_bad_age(client, days):
    old = finished(50)

    response = client.post("/tasks/retention", data={
        "csrf_token": csrf_token(client), "older_than_days": days, "confirmed": "1"})

    assert response.status_code == 400
    assert "older_than_days must be" in unescape(response.get_data(as_text=True))
    assert exists(old)
