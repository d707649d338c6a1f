"""The JSON API under /api, on SQLite and PostgreSQL."""

from datetime import datetime
from io import BytesIO

import pytest
from sqlalchemy import text

from app.extensions import db
from app.tasks import queries, queue
from conftest import count_rows, wait_for

WORD_COUNT = {"type": "word_count", "params": {"text": "one two three"}}


def submit(client, body=None, **fields):
    """POST a task to the API; `fields` are added to the word_count body by default."""
    return client.post("/api/tasks", json={**(body or WORD_COUNT), **fields})


def event_kinds(client, task_id):
    return [event["kind"] for event in client.get(f"/api/tasks/{task_id}/events").json["events"]]


def set_attempts(task_id, attempts):
    """Arrange a task that already used `attempts` attempts, without running them."""
    db.session.execute(
        text("UPDATE tasks SET attempts = :n, max_attempts = :n WHERE id = :id"),
        {"n": attempts, "id": task_id},
    )
    db.session.commit()


# Submitting


def test_submit_returns_201_and_task(client):
    response = submit(client, priority=5, queue="reports")

    assert response.status_code == 201
    assert response.is_json
    assert response.json["type"] == "word_count"
    assert response.json["params"] == {"text": "one two three"}
    assert response.json["status"] == "PENDING"
    assert response.json["priority"] == 5
    assert response.json["queue"] == "reports"
    assert response.json["attempts"] == 0
    assert response.json["max_attempts"] == 3
    assert response.json["cancel_requested"] is False
    assert response.json["result"] is None


def test_submit_sets_location_header(client):
    response = submit(client)

    assert response.headers["Location"] == f"/api/tasks/{response.json['id']}"


def test_submit_location_serves_task(client):
    created = submit(client)

    response = client.get(created.headers["Location"])

    assert response.status_code == 200
    assert response.json == created.json


def test_submit_timestamps_are_iso_with_offset(client):
    task = submit(client, delay_seconds=60).json

    created_at = datetime.fromisoformat(task["created_at"])
    run_at = datetime.fromisoformat(task["run_at"])
    assert created_at.utcoffset() is not None
    assert run_at.utcoffset() is not None
    assert (run_at - created_at).total_seconds() == 60
    assert task["started_at"] is None
    assert task["finished_at"] is None


def test_submit_writes_submitted_event(client):
    task = submit(client).json

    events = client.get(f"/api/tasks/{task['id']}/events").json["events"]

    assert [event["kind"] for event in events] == ["submitted"]
    assert events[0]["task_id"] == task["id"]
    assert "the API" in events[0]["message"]


def test_submit_accepts_json_with_charset(client):
    response = client.post("/api/tasks", data='{"type": "noop"}',
                           content_type="application/json; charset=utf-8")

    assert response.status_code == 201


def test_submit_idempotency_key_returns_first_task(client):
    first = submit(client, idempotency_key="report-42")

    second = submit(client, idempotency_key="report-42")

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json["id"] == first.json["id"]
    assert count_rows("tasks") == 1
    assert count_rows("task_events") == 1


def test_submit_idempotency_key_ignores_new_fields(client):
    first = submit(client, idempotency_key="report-42")

    second = submit(client, {"type": "noop"}, idempotency_key="report-42")

    assert second.status_code == 200
    assert second.json["id"] == first.json["id"]
    assert second.json["type"] == "word_count"
    assert count_rows("tasks") == 1


def test_submit_distinct_keys_create_tasks(client):
    first = submit(client, idempotency_key="a")
    second = submit(client, idempotency_key="b")

    assert second.status_code == 201
    assert second.json["id"] != first.json["id"]
    assert count_rows("tasks") == 2


INVALID_SUBMISSIONS = [
    pytest.param({"params": {"text": "x"}}, "type", id="missing-type"),
    pytest.param({"type": ""}, "type", id="blank-type"),
    pytest.param({"type": "no_such_type"}, "type", id="unknown-type"),
    pytest.param({"type": ["word_count"]}, "type", id="type-not-string"),
    pytest.param({"type": "word_count", "params": ["x"]}, "params", id="params-not-object"),
    pytest.param({"type": "word_count", "params": {}}, "params.text", id="missing-param"),
    pytest.param({"type": "word_count", "params": {"text": "a", "colour": "red"}},
                 "params.colour", id="unknown-param"),
    pytest.param({"type": "word_count", "params": {"text": 5}}, "params.text",
                 id="wrong-param-type"),
    pytest.param({"type": "sleep", "params": {"seconds": 4000}}, "params.seconds",
                 id="param-out-of-range"),
    pytest.param({**WORD_COUNT, "priority": 999}, "priority", id="priority-too-high"),
    pytest.param({**WORD_COUNT, "priority": "abc"}, "priority", id="priority-not-number"),
    pytest.param({**WORD_COUNT, "priority": True}, "priority", id="priority-bool"),
    pytest.param({**WORD_COUNT, "priority": 1.5}, "priority", id="priority-fraction"),
    pytest.param({**WORD_COUNT, "delay_seconds": -1}, "delay_seconds", id="delay-negative"),
    pytest.param({**WORD_COUNT, "max_attempts": 0}, "max_attempts", id="max-attempts-0"),
    pytest.param({**WORD_COUNT, "max_attempts": 101}, "max_attempts", id="max-attempts-101"),
    pytest.param({**WORD_COUNT, "timeout_seconds": 0}, "timeout_seconds", id="timeout-zero"),
    pytest.param({**WORD_COUNT, "queue": "two words"}, "queue", id="queue-invalid"),
    pytest.param({**WORD_COUNT, "idempotency_key": "k" * 201}, "idempotency_key",
                 id="key-too-long"),
    pytest.param({**WORD_COUNT, "idempotency_key": 42}, "idempotency_key", id="key-not-string"),
    pytest.param({**WORD_COUNT, "colour": "red"}, "colour", id="unknown-field"),
    pytest.param(["word_count"], "body", id="body-list"),
    pytest.param("word_count", "body", id="body-string"),
]


@pytest.mark.parametrize(("body", "field"), INVALID_SUBMISSIONS)
def test_submit_invalid_names_field(client, body, field):
    response = client.post("/api/tasks", json=body)

    assert response.status_code == 400
    assert response.is_json
    assert response.json["error"]["status"] == 400
    assert response.json["error"]["code"] == "invalid"
    assert field in response.json["error"]["fields"]
    assert field in response.json["error"]["message"]
    assert count_rows("tasks") == 0
    assert count_rows("task_events") == 0


@pytest.mark.parametrize("data", [
    pytest.param("{not json", id="malformed"),
    pytest.param("", id="empty"),
    pytest.param('{"type": "noop", "priority": NaN}', id="nan"),
    pytest.param("[" * 100_000 + "]" * 100_000, id="too-deep"),
    pytest.param(b"\xff\xfe{", id="not-utf8"),
    pytest.param("null", id="null"),
])
def test_submit_body_not_json_names_body(client, data):
    response = client.post("/api/tasks", data=data, content_type="application/json")

    assert response.status_code == 400
    assert response.is_json
    assert "body" in response.json["error"]["fields"]
    assert count_rows("tasks") == 0


def test_submit_invalid_names_every_field(client):
    response = submit(client, {"type": "word_count", "params": {}}, priority=999,
                      max_attempts=0)

    fields = response.json["error"]["fields"]
    assert set(fields) == {"params.text", "priority", "max_attempts"}


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_submit_wrong_content_type_415(client, content_type):
    response = client.post("/api/tasks", data='{"type": "noop"}', content_type=content_type)

    assert response.status_code == 415
    assert response.is_json
    assert response.json["error"]["code"] == "unsupported_media_type"
    assert "application/json" in response.json["error"]["message"]
    assert count_rows("tasks") == 0


def test_submit_body_too_large_413_json(make_app):
    app = make_app(MAX_CONTENT_LENGTH=1000)
    client = app.test_client()

    with app.app_context():
        response = submit(client, {"type": "word_count", "params": {"text": "x" * 2000}})

        assert response.status_code == 413
        assert response.is_json
        assert response.json["error"]["code"] == "request_entity_too_large"
        assert "limit of 1000 bytes" in response.json["error"]["message"]
        assert count_rows("tasks") == 0


def test_body_too_large_names_limit_in_mib(make_app):
    app = make_app(MAX_CONTENT_LENGTH=8 * 1024 * 1024)
    client = app.test_client()
    body = '{"type": "noop", "params": {}, "padding": "' + "x" * (8 * 1024 * 1024) + '"}'

    with app.app_context():
        response = client.post("/api/tasks", data=body, content_type="application/json")

        assert response.status_code == 413
        assert "limit of 8 MiB (the MAX_CONTENT_LENGTH setting)" in response.json["error"]["message"]
        assert count_rows("tasks") == 0


def post_chunked(client, path: str, body: bytes, content_type: str):
    """POST `body` as a WSGI server passes on a chunked request: no Content-Length."""
    return client.post(path, input_stream=BytesIO(body), content_type=content_type,
                       headers={"Transfer-Encoding": "chunked"},
                       environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True})


def test_submit_chunked_body_too_large_413(make_app):
    app = make_app(MAX_CONTENT_LENGTH=1000)
    client = app.test_client()
    padded = b'{"type": "noop", "params": {}}' + b" " * 2000

    with app.app_context():
        response = post_chunked(client, "/api/tasks", padded, "application/json")

        assert response.status_code == 413
        assert "limit of 1000 bytes" in response.json["error"]["message"]
        assert count_rows("tasks") == 0


def test_submit_chunked_body_within_limit_201(make_app):
    app = make_app(MAX_CONTENT_LENGTH=1000)
    client = app.test_client()
    body = b'{"type": "word_count", "params": {"text": "sent in chunks"}}'

    with app.app_context():
        response = post_chunked(client, "/api/tasks", body, "application/json")

        assert response.status_code == 201
        assert response.json["params"] == {"text": "sent in chunks"}
        assert count_rows("tasks") == 1


@pytest.mark.parametrize("body, field", [
    ('{"type": "word_count", "params": {"text": "a\\ud800b"}}', "params.text"),
    ('{"type": "noop", "params": {}, "idempotency_key": "\\udc00"}', "idempotency_key"),
    ('{"type": "noop", "params": {"\\ud83d": 1}}', "params.\ud83d"),
    ('{"type": "noop", "params": {"items": ["ok", "\\udfff"]}}', "params.items.1"),
])
def test_submit_lone_surrogate_400(client, body, field):
    response = client.post("/api/tasks", data=body, content_type="application/json")

    assert response.status_code == 400
    assert list(response.json["error"]["fields"]) == [field]
    assert "lone surrogate" in response.json["error"]["fields"][field]
    assert count_rows("tasks") == 0


def test_submit_surrogate_pair_accepted(client):
    body = '{"type": "word_count", "params": {"text": "smile \\ud83d\\ude00"}}'

    response = client.post("/api/tasks", data=body, content_type="application/json")

    assert response.status_code == 201
    assert response.json["params"] == {"text": "smile \U0001F600"}


def test_submit_key_with_nul_400(client):
    response = submit(client, idempotency_key="key\x00")

    assert response.status_code == 400
    assert "idempotency_key" in response.json["error"]["fields"]


def test_submit_rejected_key_stays_free(client):
    submit(client, {"type": "word_count", "params": {}}, idempotency_key="retry-me")

    response = submit(client, idempotency_key="retry-me")

    assert response.status_code == 201


# Listing


def test_list_returns_newest_first(client):
    ids = [submit(client).json["id"] for _ in range(3)]

    response = client.get("/api/tasks")

    assert response.status_code == 200
    assert [task["id"] for task in response.json["tasks"]] == ids[::-1]
    assert response.json["next"] is None
    assert response.json["next_cursor"] is None


def test_list_empty(client):
    response = client.get("/api/tasks")

    assert response.json == {"tasks": [], "next": None, "next_cursor": None}


def test_list_pages_by_cursor(client):
    ids = [submit(client).json["id"] for _ in range(7)]
    pages = []
    cursor = None

    while True:
        query = {"limit": 3} if cursor is None else {"limit": 3, "before": cursor}
        body = client.get("/api/tasks", query_string=query).json
        pages.append([task["id"] for task in body["tasks"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 10, "pagination does not end"

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [task_id for page in pages for task_id in page] == ids[::-1]


def test_list_next_url_follows_pages(client):
    ids = [submit(client).json["id"] for _ in range(7)]
    seen = []
    url = "/api/tasks?type=word_count&limit=3"

    while url is not None:
        body = client.get(url).json
        seen.extend(task["id"] for task in body["tasks"])
        url = body["next"]
        assert len(seen) <= 7, "pagination repeats tasks"

    assert seen == ids[::-1]


def test_list_next_url_keeps_filters(client):
    for _ in range(3):
        submit(client)

    body = client.get("/api/tasks?type=word_count&status=PENDING&limit=2").json

    assert body["next"].startswith("/api/tasks?")
    assert "type=word_count" in body["next"]
    assert "status=PENDING" in body["next"]
    assert "limit=2" in body["next"]
    assert f"before={body['next_cursor']}" in body["next"]


def test_list_default_limit_is_page_size(make_app):
    app = make_app(PAGE_SIZE=2)
    client = app.test_client()
    with app.app_context():
        for _ in range(3):
            submit(client)

        body = client.get("/api/tasks").json

    assert len(body["tasks"]) == 2
    assert body["next_cursor"] is not None


def test_list_filters_by_status(client):
    pending_task = submit(client).json
    cancelled = submit(client).json
    client.post(f"/api/tasks/{cancelled['id']}/cancel")

    pending = client.get("/api/tasks?status=PENDING").json["tasks"]
    cancelled_list = client.get("/api/tasks?status=CANCELLED").json["tasks"]

    assert [task["id"] for task in pending] == [pending_task["id"]]
    assert [task["id"] for task in cancelled_list] == [cancelled["id"]]


def test_list_filters_by_type(client):
    noop = submit(client, {"type": "noop"}).json
    submit(client)

    tasks = client.get("/api/tasks?type=noop").json["tasks"]

    assert [task["id"] for task in tasks] == [noop["id"]]


def test_list_filters_by_queue(client):
    submit(client)
    reports = submit(client, queue="reports").json

    tasks = client.get("/api/tasks?queue=reports").json["tasks"]

    assert [task["id"] for task in tasks] == [reports["id"]]


def test_list_empty_filter_is_ignored(client):
    submit(client)

    response = client.get("/api/tasks?status=&type=")

    assert response.status_code == 200
    assert len(response.json["tasks"]) == 1


@pytest.mark.parametrize(("query", "field"), [
    pytest.param("status=DONE", "status", id="unknown-status"),
    pytest.param("status=pending", "status", id="lowercase-status"),
    pytest.param("limit=0", "limit", id="limit-0"),
    pytest.param("limit=501", "limit", id="limit-501"),
    pytest.param("limit=abc", "limit", id="limit-text"),
    pytest.param("limit=-3", "limit", id="limit-negative"),
    pytest.param("before=0", "before", id="before-0"),
    pytest.param("before=x", "before", id="before-text"),
    pytest.param("before=99999999999999999999", "before", id="before-huge"),
    pytest.param("status=PENDING&status=FAILED", "status", id="status-twice"),
    pytest.param("stauts=PENDING", "stauts", id="unknown-parameter"),
    pytest.param("type=a%00b", "type", id="type-with-nul"),
    pytest.param("type=" + "t" * 101, "type", id="type-too-long"),
    pytest.param("queue=a%00b", "queue", id="queue-with-nul"),
    pytest.param("queue=two%20words", "queue", id="queue-invalid"),
    pytest.param("queue=reports%0A", "queue", id="queue-trailing-newline"),
])
def test_list_invalid_query_400(client, query, field):
    response = client.get(f"/api/tasks?{query}")

    assert response.status_code == 400
    assert response.is_json
    assert response.json["error"]["code"] == "invalid"
    assert field in response.json["error"]["fields"]


# One task


def test_get_returns_task(client):
    created = submit(client).json

    response = client.get(f"/api/tasks/{created['id']}")

    assert response.status_code == 200
    assert response.json == created


@pytest.mark.parametrize("path", [
    pytest.param("/api/tasks/999", id="unknown-id"),
    pytest.param("/api/tasks/abc", id="not-a-number"),
    pytest.param("/api/tasks/-1", id="negative"),
    pytest.param("/api/tasks/99999999999999999999", id="beyond-bigint"),
])
def test_get_unknown_404_json(client, path):
    response = client.get(path)

    assert response.status_code == 404
    assert response.is_json
    assert response.json["error"]["status"] == 404
    assert response.json["error"]["code"] == "not_found"
    assert response.json["error"]["message"]


def test_get_unknown_names_id(client):
    response = client.get("/api/tasks/999")

    assert "999" in response.json["error"]["message"]


# Events of one task


def test_task_events_oldest_first(client):
    task = submit(client).json
    client.post(f"/api/tasks/{task['id']}/cancel")
    client.post(f"/api/tasks/{task['id']}/retry")

    events = client.get(f"/api/tasks/{task['id']}/events").json["events"]

    assert [event["kind"] for event in events] == ["submitted", "cancelled", "requeued"]
    assert [event["id"] for event in events] == sorted(event["id"] for event in events)
    assert datetime.fromisoformat(events[0]["created_at"]).utcoffset() is not None


def test_task_events_carry_each_failed_attempt_traceback(client):
    task = submit(client).json
    for number in (1, 2):
        [claim] = wait_for(lambda: queue.claim("worker-a", 1), timeout=5)
        queue.fail(claim, f"OSError: try {number}", f"Traceback:\n  try {number}")

    events = client.get(f"/api/tasks/{task['id']}/events").json["events"]

    retries = [event for event in events if event["kind"] == "retry_scheduled"]
    assert [event["traceback"] for event in retries] == ["Traceback:\n  try 1",
                                                         "Traceback:\n  try 2"]
    assert all(event["traceback"] is None for event in events if event not in retries)


def test_task_events_only_that_task(client):
    task = submit(client).json
    submit(client)

    events = client.get(f"/api/tasks/{task['id']}/events").json["events"]

    assert {event["task_id"] for event in events} == {task["id"]}


def test_task_events_unknown_404(client):
    response = client.get("/api/tasks/999/events")

    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


# Cancel and retry


def test_cancel_pending_becomes_cancelled(client):
    task = submit(client).json

    response = client.post(f"/api/tasks/{task['id']}/cancel")

    assert response.status_code == 200
    assert response.json["status"] == "CANCELLED"
    assert response.json["finished_at"] is not None
    assert event_kinds(client, task["id"]) == ["submitted", "cancelled"]


def test_cancel_ignores_body(client):
    task = submit(client).json

    response = client.post(f"/api/tasks/{task['id']}/cancel", data="anything",
                           content_type="text/plain")

    assert response.status_code == 200
    assert response.json["status"] == "CANCELLED"


def test_cancel_twice_409_changes_nothing(client):
    task = submit(client).json
    first = client.post(f"/api/tasks/{task['id']}/cancel").json

    response = client.post(f"/api/tasks/{task['id']}/cancel")

    assert response.status_code == 409
    assert response.is_json
    assert response.json["error"]["status"] == 409
    assert response.json["error"]["code"] == "conflict"
    assert response.json["error"]["task_status"] == "CANCELLED"
    assert "CANCELLED" in response.json["error"]["message"]
    assert client.get(f"/api/tasks/{task['id']}").json == first
    assert event_kinds(client, task["id"]) == ["submitted", "cancelled"]


def test_cancel_processing_requests_stop(client):
    task = submit(client).json
    queue.claim("w1", 1)

    response = client.post(f"/api/tasks/{task['id']}/cancel")

    assert response.status_code == 200
    assert response.json["status"] == "PROCESSING"
    assert response.json["cancel_requested"] is True
    assert event_kinds(client, task["id"]) == ["submitted", "started", "log"]


def test_cancel_processing_twice_changes_nothing(client):
    task = submit(client).json
    queue.claim("w1", 1)
    client.post(f"/api/tasks/{task['id']}/cancel")

    response = client.post(f"/api/tasks/{task['id']}/cancel")

    assert response.status_code == 200
    assert response.json["cancel_requested"] is True
    assert event_kinds(client, task["id"]) == ["submitted", "started", "log"]


def test_cancel_unknown_404(client):
    response = client.post("/api/tasks/999/cancel")

    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_retry_cancelled_becomes_pending(client):
    task = submit(client).json
    client.post(f"/api/tasks/{task['id']}/cancel")

    response = client.post(f"/api/tasks/{task['id']}/retry")

    assert response.status_code == 200
    assert response.json["status"] == "PENDING"
    assert response.json["finished_at"] is None
    assert event_kinds(client, task["id"]) == ["submitted", "cancelled", "requeued"]


def test_retry_failed_becomes_pending(client):
    task = submit(client, max_attempts=1).json
    [claim] = queue.claim("w1", 1)
    queue.fail(claim, "RuntimeError: boom")

    response = client.post(f"/api/tasks/{task['id']}/retry")

    assert response.status_code == 200
    assert response.json["status"] == "PENDING"
    assert response.json["max_attempts"] == 2
    assert response.json["error"] == "RuntimeError: boom"


def test_retry_pending_409(client):
    task = submit(client).json

    response = client.post(f"/api/tasks/{task['id']}/retry")

    assert response.status_code == 409
    assert response.json["error"]["code"] == "conflict"
    assert response.json["error"]["task_status"] == "PENDING"
    assert event_kinds(client, task["id"]) == ["submitted"]


def test_retry_attempt_limit_409(client):
    task = submit(client).json
    client.post(f"/api/tasks/{task['id']}/cancel")
    set_attempts(task["id"], 100)

    response = client.post(f"/api/tasks/{task['id']}/retry")

    assert response.status_code == 409
    assert response.json["error"]["code"] == "conflict"
    assert response.json["error"]["task_status"] == "CANCELLED"
    assert client.get(f"/api/tasks/{task['id']}").json["status"] == "CANCELLED"


def test_retry_unknown_404(client):
    response = client.post("/api/tasks/999/retry")

    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


# Event log


def test_events_lists_newest_first(client):
    first = submit(client).json
    second = submit(client).json

    response = client.get("/api/events")

    assert response.status_code == 200
    assert [event["task_id"] for event in response.json["events"]] == [second["id"], first["id"]]
    assert response.json["next"] is None


def test_events_filter_by_task(client):
    task = submit(client).json
    submit(client)

    events = client.get(f"/api/events?task_id={task['id']}").json["events"]

    assert [event["task_id"] for event in events] == [task["id"]]


def test_events_filter_by_kind(client):
    task = submit(client).json
    submit(client)
    client.post(f"/api/tasks/{task['id']}/cancel")

    events = client.get("/api/events?kind=cancelled").json["events"]

    assert [(event["task_id"], event["kind"]) for event in events] == [(task["id"], "cancelled")]


def test_events_filter_by_level(client):
    task = submit(client).json
    client.post(f"/api/tasks/{task['id']}/cancel")

    events = client.get("/api/events?level=warning").json["events"]

    assert [event["kind"] for event in events] == ["cancelled"]


def test_events_pages_by_cursor(client):
    for _ in range(5):
        submit(client)
    all_ids = [event["id"] for event in client.get("/api/events").json["events"]]
    seen = []
    url = "/api/events?kind=submitted&limit=2"

    while url is not None:
        body = client.get(url).json
        seen.extend(event["id"] for event in body["events"])
        url = body["next"]
        assert len(seen) <= 5, "pagination repeats events"

    assert seen == all_ids


@pytest.mark.parametrize(("query", "field"), [
    pytest.param("kind=exploded", "kind", id="unknown-kind"),
    pytest.param("level=loud", "level", id="unknown-level"),
    pytest.param("task_id=abc", "task_id", id="task-id-text"),
    pytest.param("task_id=0", "task_id", id="task-id-0"),
    pytest.param("limit=1000", "limit", id="limit-too-high"),
    pytest.param("before=-1", "before", id="before-negative"),
])
def test_events_invalid_query_400(client, query, field):
    response = client.get(f"/api/events?{query}")

    assert response.status_code == 400
    assert response.is_json
    assert field in response.json["error"]["fields"]


# Errors


@pytest.mark.parametrize("path", ["/api/nothing", "/api", "/api/tasks/1/explode"])
def test_unknown_route_404_json(client, path):
    response = client.get(path)

    assert response.status_code == 404
    assert response.is_json
    assert response.json["error"]["code"] == "not_found"
    assert path in response.json["error"]["message"]


def test_wrong_method_405_json(client):
    response = client.delete("/api/tasks")

    assert response.status_code == 405
    assert response.is_json
    assert response.json["error"]["status"] == 405
    assert response.json["error"]["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]
    assert "POST" in response.headers["Allow"]


def test_cancel_by_get_405_json(client):
    response = client.get("/api/tasks/1/cancel")

    assert response.status_code == 405
    assert response.is_json
    assert "POST" in response.json["error"]["message"]


def test_unexpected_error_500_json(client, monkeypatch):
    def explode(**filters):
        raise RuntimeError("secret detail from the database")

    monkeypatch.setattr(queries, "list_tasks", explode)

    response = client.get("/api/tasks")

    assert response.status_code == 500
    assert response.is_json
    assert response.json["error"]["status"] == 500
    assert response.json["error"]["code"] == "internal_server_error"
    assert "secret detail" not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text


def test_error_responses_keep_security_headers(client):
    response = client.get("/api/tasks/999")

    assert response.headers["X-Content-Type-Options"] == "nosniff"
