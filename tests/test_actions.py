"""Actions a person applies to tasks: cancel, retry, delete and run now, on one task or many.

Every test runs on SQLite and on PostgreSQL. The first half calls the
operations in app.tasks.actions, the second half the JSON API.
"""

import logging
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.extensions import db
from app.tasks import Task, TaskEvent, TaskStatus, actions, listing, queue
from app.tasks.actions import AlreadyDue
from app.tasks.errors import InvalidTransition, TaskNotFound
from app.tasks.timeutil import utcnow

WORKER = "worker-actions"
SOURCE = "the tasks page"


def submit(type_name="word_count", **fields):
    data = {"type": type_name, "params": {"text": "one two"} if type_name == "word_count" else {}}
    data.update(fields)
    task, _ = queue.submit(data)
    return task.id


def running_task() -> int:
    # The highest priority, so that the claim takes this task before any waiting one.
    task_id = submit(priority=100)
    claims = queue.claim(WORKER, 1)
    assert [claim.task_id for claim in claims] == [task_id]
    return task_id


def finished_task(status: TaskStatus) -> int:
    task_id = submit(priority=100)
    claim = queue.claim(WORKER, 1)[0]
    if status is TaskStatus.SUCCEEDED:
        queue.succeed(claim, {"ok": True})
    elif status is TaskStatus.FAILED:
        queue.fail(claim, "RuntimeError: boom", retryable=False)
    else:
        queue.cancel(task_id)
        queue.fail(claim, "TaskCancelled: stopped")
    assert reload(task_id).status == status
    return task_id


def reload(task_id) -> Task | None:
    db.session.rollback()
    return db.session.get(Task, task_id, populate_existing=True)


def last_event(task_id) -> TaskEvent:
    db.session.rollback()
    return db.session.scalars(
        select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id.desc())
    ).first()


def event_count(task_id) -> int:
    db.session.rollback()
    return len(db.session.scalars(select(TaskEvent).where(TaskEvent.task_id == task_id)).all())


# Cancel


def test_cancel_many_cancels_waiting_tasks(app):
    first, second = submit(), submit()

    result = actions.apply(actions.CANCEL, [first, second], source=SOURCE)

    assert result.changed == [first, second]
    assert reload(first).status == TaskStatus.CANCELLED
    assert reload(second).finished_at is not None
    assert last_event(first).kind == "cancelled"
    assert last_event(first).message == "Cancelled by a person from the tasks page"


def test_cancel_many_asks_running_task_to_stop(app):
    task_id = running_task()

    result = actions.apply(actions.CANCEL, [task_id], source=SOURCE)

    assert result.changed == []
    assert result.stop_requested == [task_id]
    assert reload(task_id).status == TaskStatus.PROCESSING
    assert reload(task_id).cancel_requested is True
    assert "asked to stop" in last_event(task_id).message


def test_cancel_twice_changes_nothing_second_time(app):
    waiting, running = submit(), running_task()
    actions.apply(actions.CANCEL, [waiting, running], source=SOURCE)
    events_before = event_count(waiting) + event_count(running)

    second = actions.apply(actions.CANCEL, [waiting, running], source=SOURCE)

    assert second.changed == []
    assert second.stop_requested == []
    assert second.skipped == {waiting: "already CANCELLED", running: "already asked to stop"}
    assert event_count(waiting) + event_count(running) == events_before


def test_cancel_skips_finished_and_missing_tasks(app):
    done = finished_task(TaskStatus.SUCCEEDED)

    result = actions.apply(actions.CANCEL, [done, 999_999])

    assert result.skipped == {done: "already SUCCEEDED", 999_999: "not found"}
    assert reload(done).status == TaskStatus.SUCCEEDED


# Retry


def test_retry_many_requeues_failed_and_cancelled(app):
    failed = finished_task(TaskStatus.FAILED)
    cancelled = submit()
    queue.cancel(cancelled)
    pending = submit()

    result = actions.apply(actions.RETRY, [failed, cancelled, pending], source=SOURCE)

    assert result.changed == [failed, cancelled]
    assert result.skipped == {pending: "status is PENDING"}
    task = reload(failed)
    assert task.status == TaskStatus.PENDING
    assert task.finished_at is None
    assert task.max_attempts >= task.attempts + 1
    assert last_event(failed).kind == "requeued"
    assert last_event(failed).message.startswith("Retried by a person from the tasks page")


def test_retry_gives_one_more_attempt_when_all_used(app):
    task_id = submit(max_attempts=1)
    claim = queue.claim(WORKER, 1)[0]
    queue.fail(claim, "RuntimeError: boom")
    assert reload(task_id).status == TaskStatus.FAILED

    actions.apply(actions.RETRY, [task_id])

    assert reload(task_id).max_attempts == 2


# Delete


def test_delete_removes_task_and_events(app, caplog):
    task_id = finished_task(TaskStatus.SUCCEEDED)
    keep = submit()
    assert event_count(task_id) >= 3

    with caplog.at_level(logging.INFO, logger="app.tasks.actions"):
        result = actions.apply(actions.DELETE, [task_id], source=SOURCE)

    assert result.changed == [task_id]
    assert reload(task_id) is None
    assert event_count(task_id) == 0
    assert reload(keep) is not None
    expected = f"Task {task_id} (word_count, SUCCEEDED) deleted by a person from the tasks page"
    assert expected in caplog.text


def test_delete_refuses_running_task(app):
    task_id = running_task()

    with pytest.raises(InvalidTransition) as raised:
        actions.delete_task(task_id, source=SOURCE)

    assert raised.value.status == TaskStatus.PROCESSING
    assert reload(task_id).status == TaskStatus.PROCESSING
    assert actions.apply(actions.DELETE, [task_id]).skipped == {task_id: "running; cancel it first"}


def test_delete_missing_task_raises_not_found(app):
    with pytest.raises(TaskNotFound):
        actions.delete_task(424242)


# Run now


def test_run_now_makes_scheduled_task_due(app):
    task_id = submit(delay_seconds=3600)
    assert queue.claim(WORKER, 1) == []

    task = actions.run_now(task_id, source=SOURCE)

    assert task.run_at <= utcnow()
    assert last_event(task_id).kind == "log"
    assert last_event(task_id).message.startswith("Made due now by a person from the tasks page")
    assert [claim.task_id for claim in queue.claim(WORKER, 1)] == [task_id]


def test_run_now_twice_raises_already_due(app):
    task_id = submit(delay_seconds=3600)
    actions.run_now(task_id)

    with pytest.raises(AlreadyDue):
        actions.run_now(task_id)


def test_run_now_refuses_finished_task(app):
    task_id = finished_task(TaskStatus.FAILED)

    with pytest.raises(InvalidTransition):
        actions.run_now(task_id)


# Preview and every matching task


def test_preview_matches_apply(app):
    waiting, running = submit(), running_task()
    done = finished_task(TaskStatus.SUCCEEDED)
    ids = [waiting, running, done, 777_777]

    preview = actions.preview(actions.CANCEL, ids)
    result = actions.apply(actions.CANCEL, ids)

    assert preview.changed == result.changed
    assert preview.stop_requested == result.stop_requested
    assert preview.skipped == result.skipped


def test_apply_to_matching_uses_filter_and_batches(app, monkeypatch):
    monkeypatch.setattr(actions, "BATCH_SIZE", 2)
    words = [submit() for _ in range(5)]
    other = submit("noop")

    result = actions.apply_to_matching(actions.CANCEL, listing.TaskFilter(type="word_count"))

    assert result.changed == words
    assert result.more is False
    assert reload(other).status == TaskStatus.PENDING


def test_apply_to_matching_stops_at_request_limit(app, monkeypatch):
    monkeypatch.setattr(actions, "BATCH_SIZE", 2)
    ids = [submit() for _ in range(5)]

    result = actions.apply_to_matching(actions.CANCEL, listing.TaskFilter(), max_tasks=3)

    assert result.changed == ids[:3]
    assert result.more is True
    assert reload(ids[4]).status == TaskStatus.PENDING


def test_apply_to_matching_leaves_tasks_above_max_id(app):
    first = submit()
    later = submit()

    result = actions.apply_to_matching(actions.CANCEL, listing.TaskFilter(max_id=first))

    assert result.changed == [first]
    assert reload(later).status == TaskStatus.PENDING


def test_count_candidates_counts_only_changeable(app):
    submit()
    running_task()
    finished_task(TaskStatus.FAILED)
    submit(delay_seconds=600)

    counts = actions.count_candidates(listing.TaskFilter())

    assert counts[actions.CANCEL].value == 3
    assert counts[actions.RETRY].value == 1
    assert counts[actions.DELETE].value == 3
    assert counts[actions.RUN_NOW].value == 1


# JSON API


def test_api_delete_task(client):
    task_id = finished_task(TaskStatus.SUCCEEDED)

    response = client.delete(f"/api/tasks/{task_id}")

    assert response.status_code == 204
    assert reload(task_id) is None
    assert client.delete(f"/api/tasks/{task_id}").status_code == 404


def test_api_delete_running_task_conflicts(client):
    task_id = running_task()

    response = client.delete(f"/api/tasks/{task_id}")

    assert response.status_code == 409
    assert response.json["error"]["task_status"] == "PROCESSING"


def test_api_run_now(client):
    task_id = submit(delay_seconds=600)

    response = client.post(f"/api/tasks/{task_id}/run-now")
    again = client.post(f"/api/tasks/{task_id}/run-now")

    assert response.status_code == 200
    assert response.json["id"] == task_id
    assert again.status_code == 409
    assert "already due" in again.json["error"]["message"]


def test_api_bulk_with_ids(client):
    waiting = submit()
    done = finished_task(TaskStatus.SUCCEEDED)

    response = client.post("/api/tasks/bulk", json={"action": "cancel", "ids": [waiting, done]})

    assert response.status_code == 200
    assert response.json["changed"] == [waiting]
    assert response.json["skipped"] == [{"id": done, "reason": "already SUCCEEDED"}]


def test_api_bulk_with_filter(client):
    failed = finished_task(TaskStatus.FAILED)
    submit()

    response = client.post("/api/tasks/bulk",
                           json={"action": "retry", "filter": {"status": "FAILED"}})

    assert response.status_code == 200
    assert response.json["changed"] == [failed]
    assert response.json["more"] is False


@pytest.mark.parametrize("body, field", [
    ({"ids": [1]}, "action"),
    ({"action": "explode", "ids": [1]}, "action"),
    ({"action": "cancel"}, "ids"),
    ({"action": "cancel", "ids": [1], "filter": {}}, "ids"),
    ({"action": "cancel", "ids": "1"}, "ids"),
    ({"action": "cancel", "ids": [True]}, "ids"),
    ({"action": "cancel", "ids": []}, "ids"),
    ({"action": "cancel", "filter": []}, "filter"),
    ({"action": "cancel", "filter": {"colour": "red"}}, "filter.colour"),
    ({"action": "cancel", "filter": {"status": "DONE"}}, "filter.status"),
    ({"action": "cancel", "filter": {"created_after": "yesterday"}}, "filter.created_after"),
    ({"action": "cancel", "filter": {"queue": 5}}, "filter.queue"),
    ({"action": "cancel", "ids": [1], "extra": True}, "extra"),
])
def test_api_bulk_rejects_bad_body(client, body, field):
    task_id = submit()

    response = client.post("/api/tasks/bulk", json=body)

    assert response.status_code == 400
    assert field in response.json["error"]["fields"]
    assert reload(task_id).status == TaskStatus.PENDING


def test_api_bulk_needs_json(client):
    response = client.post("/api/tasks/bulk", data="action=cancel")

    assert response.status_code == 415


def test_api_run_now_event_names_api(client):
    task_id = submit(delay_seconds=timedelta(hours=1).total_seconds())

    client.post(f"/api/tasks/{task_id}/run-now")

    assert "by a person from the API" in last_event(task_id).message


# Two people at once


def test_concurrent_bulk_cancels_change_each_task_once(app, make_app):
    ids = [submit() for _ in range(30)]
    apps = [make_app(), make_app()]
    results = {}
    start = threading.Barrier(len(apps))

    def cancel_all(index: int) -> None:
        with apps[index].app_context():
            start.wait(timeout=10)
            results[index] = actions.apply(actions.CANCEL, ids, source=f"the tasks page {index}")
            db.session.remove()

    threads = [threading.Thread(target=cancel_all, args=(index,)) for index in range(len(apps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    changed = results[0].changed + results[1].changed
    skipped = {**results[0].skipped, **results[1].skipped}
    assert sorted(changed) == ids
    assert sorted(skipped) == ids
    assert all(reason == "already CANCELLED" for reason in skipped.values())
    db.session.rollback()
    cancelled_events = db.session.scalars(
        select(TaskEvent.task_id).where(TaskEvent.kind == "cancelled")).all()
    assert sorted(cancelled_events) == ids


def test_cancel_many_signals_stop_request(app):
    from app.tasks import signals

    task_id = running_task()
    received = []

    def on_cancel(sender, task_id, **extra):
        received.append(task_id)

    signals.cancel_requested.connect(on_cancel, sender=app)
    try:
        actions.apply(actions.CANCEL, [task_id])
    finally:
        signals.cancel_requested.disconnect(on_cancel, sender=app)

    assert received == [task_id]


def test_run_now_wakes_workers_of_its_queue(app):
    from app.tasks import signals

    task_id = submit(delay_seconds=600, queue="mail")
    received = []

    def on_submitted(sender, task_id, due_now, queue=None, **extra):
        received.append((task_id, due_now, queue))

    signals.task_submitted.connect(on_submitted, sender=app)
    try:
        actions.run_now(task_id)
    finally:
        signals.task_submitted.disconnect(on_submitted, sender=app)

    assert received == [(task_id, True, "mail")]
