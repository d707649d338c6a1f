"""Named queues: pause, resume and concurrency limits, obeyed by every claim."""

import pytest

from app.extensions import db
from app.tasks import Task, TaskStatus, ValidationError, queue, queue_control


def _submit(queue_name="default", **fields) -> Task:
    task, _ = queue.submit({"type": "noop", "queue": queue_name, **fields})
    return task


def _status(task_id) -> str:
    db.session.rollback()
    return db.session.get(Task, task_id, populate_existing=True).status


def test_pause_queue_stops_claims_of_that_queue(app):
    paused = _submit("reports")
    other = _submit("default")
    queue_control.pause_queue("reports")

    claims = queue.claim("w1", 10)

    assert [c.task_id for c in claims] == [other.id]
    assert _status(paused.id) == TaskStatus.PENDING


def test_resume_queue_allows_claims_again(app):
    task = _submit("reports")
    queue_control.pause_queue("reports")
    assert queue.claim("w1", 10) == []

    queue_control.resume_queue("reports")

    assert [c.task_id for c in queue.claim("w1", 10)] == [task.id]


def test_pause_queue_leaves_running_task_alone(app):
    task = _submit("reports")
    claim = queue.claim("w1", 1)[0]

    queue_control.pause_queue("reports")
    queue.succeed(claim, None)

    assert _status(task.id) == TaskStatus.SUCCEEDED


def test_pause_obeyed_by_worker_serving_only_that_queue(app):
    _submit("reports")
    queue_control.pause_queue("reports")

    assert queue.claim("w1", 10, queues=["reports"]) == []


def test_concurrency_limit_caps_claims(app):
    tasks = [_submit("mail") for _ in range(5)]
    queue_control.set_concurrency_limit("mail", 2)

    first = queue.claim("w1", 10)
    second = queue.claim("w2", 10)

    assert [c.task_id for c in first] == [tasks[0].id, tasks[1].id]
    assert second == []


def test_concurrency_limit_frees_slot_when_task_ends(app):
    [_submit("mail") for _ in range(3)]
    queue_control.set_concurrency_limit("mail", 1)
    claim = queue.claim("w1", 10)[0]

    queue.succeed(claim, None)

    assert len(queue.claim("w2", 10)) == 1


def test_concurrency_limit_leaves_other_queues_unlimited(app):
    [_submit("mail") for _ in range(3)]
    [_submit("default") for _ in range(3)]
    queue_control.set_concurrency_limit("mail", 1)

    claims = queue.claim("w1", 10)

    queues = [db.session.get(Task, c.task_id).queue for c in claims]
    assert queues.count("mail") == 1
    assert queues.count("default") == 3


def test_concurrency_limit_none_lifts_cap(app):
    [_submit("mail") for _ in range(3)]
    queue_control.set_concurrency_limit("mail", 1)

    queue_control.set_concurrency_limit("mail", None)

    assert len(queue.claim("w1", 10)) == 3


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "2"])
def test_concurrency_limit_rejects_invalid(app, limit):
    with pytest.raises(ValidationError) as error:
        queue_control.set_concurrency_limit("mail", limit)

    assert "concurrency_limit" in error.value.fields


@pytest.mark.parametrize("name", ["", "bad name", "x" * 101, "trailing\n"])
def test_pause_rejects_invalid_queue_name(app, name):
    with pytest.raises(ValidationError) as error:
        queue_control.pause_queue(name)

    assert "queue" in error.value.fields


def test_list_queues_counts_and_oldest_waiting(app):
    first = _submit("reports")
    _submit("reports")
    claim = queue.claim("w1", 1)[0]
    queue.succeed(claim, None)
    queue_control.pause_queue("empty")

    overviews = {o.name: o for o in queue_control.list_queues()}

    assert set(overviews) == {"reports", "empty"}
    assert overviews["reports"].counts[TaskStatus.SUCCEEDED] == 1
    assert overviews["reports"].counts[TaskStatus.PENDING] == 1
    assert overviews["reports"].oldest_waiting_at >= first.created_at
    assert overviews["empty"].paused is True
    assert overviews["empty"].oldest_waiting_at is None


def test_list_queues_counts_stop_at_limit(app, monkeypatch):
    for name in ("mail", "mail", "mail", "reports", "zeta"):
        _submit(name)
    monkeypatch.setattr(queue_control, "COUNT_LIMIT", 2)

    overviews = {o.name: o for o in queue_control.list_queues()}

    assert sorted(overviews) == ["mail", "reports", "zeta"]
    assert overviews["mail"].counts[TaskStatus.PENDING] == 2
    assert overviews["mail"].counts_exact[TaskStatus.PENDING] is False
    assert overviews["reports"].counts[TaskStatus.PENDING] == 1
    assert overviews["reports"].counts_exact[TaskStatus.PENDING] is True
    assert overviews["mail"].to_dict()["counts_exact"]["PENDING"] is False


def test_api_pause_and_resume(client):
    _submit("reports")

    paused = client.post("/api/queues/reports/pause")
    resumed = client.post("/api/queues/reports/resume")

    assert paused.status_code == 200
    assert paused.json["paused"] is True
    assert resumed.json["paused"] is False
    assert resumed.json["counts"]["PENDING"] == 1


def test_api_set_concurrency_limit(client):
    response = client.put("/api/queues/mail/concurrency-limit", json={"concurrency_limit": 3})

    assert response.status_code == 200
    assert response.json["concurrency_limit"] == 3


@pytest.mark.parametrize("body, field", [
    ({"concurrency_limit": 0}, "concurrency_limit"),
    ({}, "concurrency_limit"),
    ({"concurrency_limit": 2, "other": 1}, "other"),
])
def test_api_set_concurrency_limit_rejects(client, body, field):
    response = client.put("/api/queues/mail/concurrency-limit", json=body)

    assert response.status_code == 400
    assert field in response.json["error"]["fields"]


def test_api_pause_invalid_name_is_400(client):
    response = client.post("/api/queues/bad%20name/pause")

    assert response.status_code == 400
    assert "queue" in response.json["error"]["fields"]


def test_api_list_queues(client):
    _submit("reports")

    response = client.get("/api/queues")

    assert response.status_code == 200
    assert [q["name"] for q in response.json["queues"]] == ["reports"]


def test_cli_queue_pause_and_list(app):
    runner = app.test_cli_runner()
    _submit("reports")

    paused = runner.invoke(args=["queue", "pause", "reports"])
    listed = runner.invoke(args=["queue", "list"])

    assert paused.exit_code == 0
    assert "reports: paused" in listed.output


def test_cli_queue_limit_rejects_text(app):
    result = app.test_cli_runner().invoke(args=["queue", "limit", "mail", "many"])

    assert result.exit_code == 2
    assert "whole number" in result.output
