"""HTML pages: the dashboard and its form, task pages, the event log and error pages.

Every test runs on SQLite and on PostgreSQL. Forms are posted the way a
browser without JavaScript posts them, and again with the headers htmx adds.
"""

import json
import re
from html import unescape

import pytest
from sqlalchemy import select

from app.extensions import db
from app.tasks import Param, Task, TaskEvent, TaskStatus, TaskType, queries, queue
from app.web import CONTENT_SECURITY_POLICY
from app.web.filters import duration_text, utc_text
from app.web.pages import LIVE_REFRESH_EVENT
from conftest import count_rows

HTMX = {"HX-Request": "true"}
WORKER = "worker-test"


def csrf_token(client, path="/") -> str:
    """GET `path` and return the CSRF token of its first form, as a browser would."""
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"', html)
    assert match, f"no csrf_token input on {path}"
    return match.group(1)


def post_form(client, fields: dict, *, headers=None, path="/"):
    """POST the submission form with a valid CSRF token and shown_type = type."""
    data = {"csrf_token": csrf_token(client), "shown_type": fields.get("type", ""),
            "priority": "0", "delay_seconds": "0", "max_attempts": "", **fields}
    return client.post(path, data=data, headers=headers or {})


def submit(type_name="word_count", **params) -> Task:
    if type_name == "word_count" and not params:
        params = {"text": "one two three"}
    task, _ = queue.submit({"type": type_name, "params": params})
    return task


def claim_next():
    claims = queue.claim(WORKER, 1)
    assert len(claims) == 1
    return claims[0]


def succeeded_task(result=None) -> Task:
    task = submit()
    queue.succeed(claim_next(), result if result is not None else {"words": 3})
    return reload(task.id)


def failed_task(error="RuntimeError: boom", traceback="Traceback (most recent call last):\n  x") -> Task:
    task = submit()
    queue.fail(claim_next(), error, traceback, retryable=False)
    return reload(task.id)


def reload(task_id) -> Task:
    db.session.rollback()
    return db.session.get(Task, task_id, populate_existing=True)


def event_kinds(task_id) -> list[str]:
    db.session.rollback()
    return [event.kind for event in queries.task_events(task_id)]


def html_of(response) -> str:
    return response.get_data(as_text=True)


def field_error(html: str, field_id: str) -> str | None:
    """Return the error message rendered for one field, or None."""
    match = re.search(rf'<p class="field-error" id="{re.escape(field_id)}-error">([^<]*)</p>', html)
    return match.group(1) if match else None


def preformatted(html: str) -> str:
    """Return the text of every <pre> block, unescaped, one after another."""
    return "\n".join(unescape(block) for block in re.findall(r"<pre[^>]*>(.*?)</pre>", html, re.S))


def task_table(html: str) -> str:
    """Return the dashboard's task table, without the latest-events panel, which also links tasks."""
    match = re.search(r'<table class="tasks">.*?</table>', html, re.S)
    return match.group(0) if match else ""


def input_tag(html: str, field_id: str) -> str:
    match = re.search(rf'<(?:input|textarea|select)[^>]*\bid="{re.escape(field_id)}"[^>]*>', html)
    assert match, f"no field with id {field_id}"
    return match.group(0)


# Dashboard


def test_dashboard_renders_counts(client):
    submit()
    submit()
    html = html_of(client.get("/"))
    pending = re.search(r'count-number">(\d+)</span>\s*<span class="status status-pending">PENDING',
                        html)
    failed = re.search(r'count-number">(\d+)</span>\s*<span class="status status-failed">FAILED',
                       html)
    assert pending and pending.group(1) == "2"
    assert failed and failed.group(1) == "0"


def test_dashboard_counts_stop_at_the_limit(app, client, monkeypatch):
    from app.tasks import listing

    for _ in range(3):
        submit()
    monkeypatch.setattr(listing, "COUNT_LIMIT", 2)
    html = html_of(client.get("/"))
    assert re.search(r'title="At least 2 tasks; counting stops there">\s*'
                     r'<span class="count-number">2\+</span>\s*'
                     r'<span class="status status-pending">PENDING', html)
    assert re.search(r'<a href="/tasks\?status=FAILED">\s*<span class="count-number">0</span>', html)


def test_dashboard_renders_submission_form(client):
    response = client.get("/")
    html = html_of(response)
    assert response.status_code == 200
    assert 'id="submit-form"' in html
    assert 'name="csrf_token"' in html
    assert '<option value="word_count">word_count</option>' in html
    assert 'name="priority"' in html
    assert 'name="delay_seconds"' in html
    assert 'name="max_attempts"' in html


def test_dashboard_lists_task_row(client):
    task = submit()
    html = html_of(client.get("/"))
    assert f'href="/tasks/{task.id}">#{task.id}</a>' in html
    assert "0 / 3" in html
    assert f'<progress value="0" max="100" aria-label="Progress of task {task.id}">' in html


def test_dashboard_times_are_time_elements(client):
    task = submit()
    html = html_of(client.get("/"))
    iso = task.created_at.isoformat(timespec="seconds")
    tag = re.search(rf'<time datetime="{re.escape(iso)}"[^>]*>([^<]*)</time>', html)
    assert tag, f"no <time> for {iso}"
    assert f'title="{utc_text(task.created_at)}"' in tag.group(0)
    assert re.fullmatch(r"now|\d+ s ago", tag.group(1))


def test_dashboard_shows_duration_of_finished_task(client):
    succeeded_task()
    html = html_of(client.get("/"))
    assert re.search(r'<td class="number">\d+\.\d\d s</td>', html)


def test_dashboard_table_polls_without_stacking(client):
    html = html_of(client.get("/"))
    table = re.search(r'<div id="tasks"[^>]*>', html).group(0)
    assert 'hx-get="/partials/tasks"' in table
    assert 'hx-trigger="live-refresh, taskSubmitted from:body"' in table
    assert 'hx-sync="this:drop"' in table


def test_dashboard_polling_follows_refresh_interval(make_app):
    client = make_app(REFRESH_INTERVAL=0.5).test_client()
    html = html_of(client.get("/"))
    body = re.search(r"<body[^>]*>", html).group(0)
    assert 'data-refresh-interval="500"' in body


def test_pages_refresh_every_two_seconds_by_default(client):
    html = html_of(client.get("/events"))
    body = re.search(r"<body[^>]*>", html).group(0)
    assert 'data-refresh-interval="2000"' in body


def test_dashboard_filters_by_status(client):
    kept = failed_task()
    dropped = submit()
    html = html_of(client.get("/?status=FAILED"))
    assert f'href="/tasks/{kept.id}">' in task_table(html)
    assert f'href="/tasks/{dropped.id}">' not in task_table(html)
    assert '<option value="FAILED" selected>' in html


def test_dashboard_filters_by_type(client):
    kept = submit("noop")
    dropped = submit()
    html = html_of(client.get("/?type=noop"))
    assert f'href="/tasks/{kept.id}">' in task_table(html)
    assert f'href="/tasks/{dropped.id}">' not in task_table(html)


def test_dashboard_filter_keeps_polling_url(client):
    html = html_of(client.get("/?status=PENDING&type=noop"))
    assert 'hx-get="/partials/tasks?status=PENDING&amp;type=noop"' in html


def test_dashboard_paginates_by_cursor(make_app):
    app = make_app(PAGE_SIZE=2)
    client = app.test_client()
    with app.app_context():
        ids = [submit().id for _ in range(3)]
    first = html_of(client.get("/"))
    second = html_of(client.get(f"/?before={ids[1]}"))
    assert f'href="/?before={ids[1]}">Older tasks</a>' in first
    assert f'href="/tasks/{ids[0]}">' not in task_table(first)
    assert f'href="/tasks/{ids[0]}">' in task_table(second)
    assert f'href="/tasks/{ids[2]}">' not in task_table(second)
    assert 'href="/">Newer: first page</a>' in second
    assert "Older tasks" not in second


@pytest.mark.parametrize("query, field", [
    ("status=NOPE", "status"),
    ("before=abc", "before"),
    ("before=-1", "before"),
    ("before=99999999999999999999", "before"),
    ("type=" + "x" * 101, "type"),
])
def test_dashboard_bad_filter_400(client, query, field):
    response = client.get(f"/?{query}")
    html = html_of(response)
    assert response.status_code == 400
    assert f"Invalid filter: {field} must" in html


def test_tasks_partial_carries_counts_out_of_band(client):
    submit()
    response = client.get("/partials/tasks", headers=HTMX)
    html = html_of(response)
    assert response.status_code == 200
    assert "<html" not in html
    assert '<ul id="status-counts" class="counts" hx-swap-oob="true"' in html
    assert 'href="/tasks/1">' in html


def test_latest_events_partial_lists_events(client):
    task = submit()
    html = html_of(client.get("/partials/latest-events", headers=HTMX))
    assert f'href="/tasks/{task.id}">#{task.id}</a>' in html
    assert "Submitted from code" in html


# Parameter fields


def test_params_partial_switches_fields(client):
    response = client.get("/partials/params?type=sleep", headers=HTMX)
    html = html_of(response)
    assert response.status_code == 200
    assert 'name="params-seconds"' in html
    assert 'name="params-text"' not in html
    assert '<input id="shown_type" name="shown_type" type="hidden" value="sleep">' in html


def test_params_partial_unknown_type_400(client):
    response = client.get("/partials/params?type=nope")
    assert response.status_code == 400
    assert "Unknown task type" in html_of(response)


def test_params_form_type_select_fetches_partial(client):
    html = html_of(client.get("/"))
    select_tag = input_tag(html, "type")
    assert 'hx-get="/partials/params"' in select_tag
    assert 'hx-target="#param-fields"' in select_tag
    assert 'hx-trigger="change"' in select_tag


def test_params_fields_follow_param_kinds(client, register_type):
    register_type(TaskType("kinds", handler=lambda ctx, **params: params, params={
        "count": Param(int, min=1, max=9),
        "ratio": Param(float, required=False, default=0.5),
        "loud": Param(bool, required=False, default=True),
        "colour": Param(str, choices=("red", "blue")),
        "note": Param(str, required=False, default="hi", multiline=True),
    }))
    html = html_of(client.get("/partials/params?type=kinds"))
    assert re.search(r'<input[^>]*id="params-count"[^>]*max="9" min="1"[^>]*type="number"', html)
    assert re.search(r'<input[^>]*id="params-ratio"[^>]*step="any" type="number" value="0.5"', html)
    assert re.search(r'<input checked id="params-loud" name="params-loud" type="checkbox"', html)
    assert '<option value="blue">blue</option>' in html
    assert re.search(r'<textarea id="params-note"[^>]*>\s*hi</textarea>', html)


def test_params_kinds_submit_converted(client, register_type):
    register_type(TaskType("kinds", handler=lambda ctx, **params: params, params={
        "count": Param(int, min=1, max=9),
        "loud": Param(bool, required=False, default=True),
        "colour": Param(str, choices=("red", "blue")),
    }))
    response = post_form(client, {"type": "kinds", "params-count": "4", "params-colour": "blue"})
    task = reload(1)
    assert response.status_code == 303
    assert task.params == {"count": 4, "loud": False, "colour": "blue"}


# Submitting


def test_submit_form_creates_task(client):
    response = post_form(client, {"type": "word_count", "params-text": "one two three",
                                  "priority": "5", "max_attempts": "2"})
    task = reload(1)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert count_rows("tasks") == 1
    assert task.type == "word_count"
    assert task.params == {"text": "one two three"}
    assert task.priority == 5
    assert task.max_attempts == 2
    assert task.status == TaskStatus.PENDING


def test_submit_form_writes_submitted_event(client):
    post_form(client, {"type": "word_count", "params-text": "one two"})
    events = queries.task_events(1)
    assert [event.kind for event in events] == ["submitted"]
    assert events[0].message == "Submitted from the dashboard form"


def test_submit_form_flashes_after_redirect(client):
    response = post_form(client, {"type": "word_count", "params-text": "one"})
    page = html_of(client.get(response.headers["Location"]))
    assert "Task #1 submitted (word_count)." in page


def test_submit_form_delay_schedules_task(client):
    post_form(client, {"type": "noop", "delay_seconds": "60"})
    task = reload(1)
    assert (task.run_at - task.created_at).total_seconds() == 60


def test_submit_form_without_csrf_400(client):
    client.get("/")
    response = client.post("/", data={"type": "word_count", "shown_type": "word_count",
                                      "params-text": "one"})
    assert response.status_code == 400
    assert "The CSRF token is missing." in html_of(response)
    assert "Reload the page to get a fresh form" in html_of(response)
    assert count_rows("tasks") == 0


def test_submit_form_too_large_413(make_app):
    app = make_app(MAX_CONTENT_LENGTH=1000)
    client = app.test_client()

    with app.app_context():
        response = post_form(client, {"type": "word_count", "params-text": "x" * 2000})

        assert response.status_code == 413
        assert "larger than the limit of 1000 bytes" in html_of(response)
        assert "Traceback" not in html_of(response)
        assert count_rows("tasks") == 0


def test_submit_form_with_wrong_csrf_400(client):
    client.get("/")
    response = client.post("/", data={"csrf_token": "forged", "type": "noop",
                                      "shown_type": "noop"})
    assert response.status_code == 400
    assert count_rows("tasks") == 0


def test_submit_form_missing_text_422(client):
    response = post_form(client, {"type": "word_count", "params-text": ""})
    html = html_of(response)
    assert response.status_code == 422
    assert field_error(html, "params-text") == "Text is required."
    assert 'aria-describedby="params-text-error"' in input_tag(html, "params-text")
    assert 'aria-invalid="true"' in input_tag(html, "params-text")
    assert count_rows("tasks") == 0


def test_submit_form_priority_out_of_range_422(client):
    response = post_form(client, {"type": "word_count", "params-text": "kept text",
                                  "priority": "999"})
    html = html_of(response)
    assert response.status_code == 422
    assert field_error(html, "priority") == "Priority must be between -100 and 100."
    assert 'value="999"' in input_tag(html, "priority")
    assert "kept text</textarea>" in html
    assert count_rows("tasks") == 0


def test_submit_form_negative_delay_422(client):
    response = post_form(client, {"type": "noop", "delay_seconds": "-1"})
    html = html_of(response)
    assert response.status_code == 422
    assert field_error(html, "delay_seconds").startswith("Delay (seconds) must be at least 0")
    assert 'aria-describedby="delay_seconds-hint delay_seconds-error"' in input_tag(
        html, "delay_seconds")
    assert count_rows("tasks") == 0


def test_submit_form_max_attempts_out_of_range_422(client):
    response = post_form(client, {"type": "noop", "max_attempts": "0"})
    assert response.status_code == 422
    assert field_error(html_of(response), "max_attempts") == (
        "Max attempts must be between 1 and 100.")
    assert count_rows("tasks") == 0


def test_submit_form_not_a_number_422(client):
    response = post_form(client, {"type": "noop", "priority": "high"})
    html = html_of(response)
    assert response.status_code == 422
    assert field_error(html, "priority") == "Priority must be a whole number."
    assert 'value="high"' in input_tag(html, "priority")


def test_submit_form_unknown_type_422(client):
    response = post_form(client, {"type": "nope", "shown_type": "noop"})
    html = html_of(response)
    assert response.status_code == 422
    assert field_error(html, "type").startswith(
        "Task type must be one of the registered task types:")
    assert count_rows("tasks") == 0


def test_submit_form_without_type_422(client):
    response = post_form(client, {"shown_type": "word_count", "params-text": "hi"})
    html = html_of(response)
    assert response.status_code == 422
    assert field_error(html, "type") == "Task type is required."
    assert count_rows("tasks") == 0


def test_submit_form_text_area_line_breaks_become_lf(client):
    response = post_form(client, {"type": "word_count", "params-text": "one two\r\nthree\r\n"})
    assert response.status_code == 303
    assert reload(1).params == {"text": "one two\nthree\n"}


def test_dashboard_form_shows_default_task_type_first(client):
    html = html_of(client.get("/"))
    assert re.search(r'<option selected value="word_count">', html)


def test_submit_form_text_with_nul_character(client):
    response = post_form(client, {"type": "word_count", "params-text": "a\x00b"})
    page = client.get("/tasks/1")
    assert response.status_code == 303
    assert reload(1).params == {"text": "a\x00b"}
    assert page.status_code == 200
    assert "\\u0000" in html_of(page)


def test_submit_form_type_change_without_js_shows_fields(client):
    response = post_form(client, {"type": "sleep", "shown_type": "word_count",
                                  "params-text": "typed for the old type", "priority": "7"})
    html = html_of(response)
    assert response.status_code == 200
    assert "Fill in the parameters of sleep, then submit again." in html
    assert 'name="params-seconds"' in html
    assert 'name="params-text"' not in html
    assert 'value="7"' in input_tag(html, "priority")
    assert count_rows("tasks") == 0


def test_submit_form_after_type_change_submits(client):
    post_form(client, {"type": "sleep", "shown_type": "word_count"})
    response = post_form(client, {"type": "sleep", "params-seconds": "0.5"})
    assert response.status_code == 303
    assert reload(1).params == {"seconds": 0.5}


def test_submit_htmx_returns_form_partial(client):
    response = post_form(client, {"type": "word_count", "params-text": "one"}, headers=HTMX)
    html = html_of(response)
    assert response.status_code == 200
    assert html.lstrip().startswith('<form id="submit-form"')
    assert "<html" not in html
    assert '<a href="/tasks/1">Task #1</a> submitted (word_count).' in html
    assert count_rows("tasks") == 1


def test_submit_htmx_sets_hx_trigger(client):
    response = post_form(client, {"type": "word_count", "params-text": "one"}, headers=HTMX)
    assert json.loads(response.headers["HX-Trigger"]) == {"taskSubmitted": {"id": 1}}


def test_submit_htmx_returns_fresh_form(client):
    response = post_form(client, {"type": "word_count", "params-text": "one",
                                  "priority": "9"}, headers=HTMX)
    html = html_of(response)
    assert 'value="0"' in input_tag(html, "priority")
    assert re.search(r'<textarea[^>]*id="params-text"[^>]*>\s*</textarea>', html)
    assert '<option selected value="word_count">' in html


def test_submit_htmx_errors_422_partial(client):
    response = post_form(client, {"type": "word_count", "params-text": ""}, headers=HTMX)
    html = html_of(response)
    assert response.status_code == 422
    assert "<html" not in html
    assert field_error(html, "params-text") == "Text is required."
    assert "HX-Trigger" not in response.headers


def test_submit_htmx_csrf_header_accepted(client):
    html = html_of(client.get("/"))
    header = json.loads(re.search(r"<body hx-headers='([^']+)'", html).group(1))
    response = client.post("/", data={"type": "noop", "shown_type": "noop"},
                           headers={**HTMX, **header})
    assert response.status_code == 200
    assert count_rows("tasks") == 1


# Task page


def test_task_page_shows_params_and_status(client):
    task = submit(text="hello world")
    html = html_of(client.get(f"/tasks/{task.id}"))
    assert "Task #1" in html
    assert "word_count" in html
    assert '"text": "hello world"' in preformatted(html)
    assert '<span class="status status-pending">PENDING</span>' in html
    assert "<dd>default</dd>" in html


def test_task_page_shows_result(client):
    task = succeeded_task({"words": 3, "lines": 1})
    html = html_of(client.get(f"/tasks/{task.id}"))
    assert '"words": 3' in preformatted(html)
    assert '<span class="status status-succeeded">SUCCEEDED</span>' in html


def test_task_page_shows_error_and_traceback(client):
    task = failed_task("RuntimeError: disk <full>", "Traceback (most recent call last):\n  boom")
    html = html_of(client.get(f"/tasks/{task.id}"))
    assert '<pre class="error-text">RuntimeError: disk &lt;full&gt;</pre>' in html
    assert "Traceback (most recent call last):\n  boom</pre>" in html


def test_task_page_shows_history_in_order(client):
    task = succeeded_task()
    html = html_of(client.get(f"/tasks/{task.id}"))
    kinds = re.findall(r'<span class="kind">(\w+)</span>', html)
    assert kinds == ["submitted"]
    assert html.index('<span class="kind">submitted</span>') < html.index('id="attempt-1"')
    assert f"<dd>{WORKER}</dd>" in html
    assert f'href="/events?task={task.id}"' in html


def test_task_page_escapes_params(client):
    task = submit(text="<script>alert(1)</script>")
    html = html_of(client.get(f"/tasks/{task.id}"))
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_task_page_unknown_id_404(client):
    response = client.get("/tasks/999")
    assert response.status_code == 404
    assert "Task 999 not found." in html_of(response)


def test_task_page_huge_id_404(client):
    response = client.get("/tasks/99999999999999999999")
    assert response.status_code == 404


def test_task_page_polls_while_running(client):
    task = submit()
    html = html_of(client.get(f"/tasks/{task.id}"))
    live = re.search(r'<div id="task-live"[^>]*>', html).group(0)
    assert f'hx-get="/partials/tasks/{task.id}"' in live
    assert 'hx-sync="this:drop"' in live


def test_task_page_actions_swap_live_region(client):
    task = submit()
    html = html_of(client.get(f"/tasks/{task.id}"))
    form = re.search(r'<form[^>]*action="/tasks/1/cancel"[^>]*>', html).group(0)
    assert 'hx-target="#task-live"' in form
    assert 'hx-swap="outerHTML"' in form
    # Not the region's hx-sync, which would drop the action while a refresh
    # is in flight, and no abort of that refresh, which htmx logs as an error.
    assert 'hx-sync="this:drop"' in form


def test_task_live_partial_stops_polling_when_terminal(client):
    task = succeeded_task()
    html = html_of(client.get(f"/partials/tasks/{task.id}", headers=HTMX))
    live = re.search(r'<div id="task-live"[^>]*>', html).group(0)
    assert "<html" not in html
    assert "hx-trigger" not in live


def test_task_page_buttons_follow_status(client):
    failed = failed_task()
    pending = submit()
    pending_html = html_of(client.get(f"/tasks/{pending.id}"))
    failed_html = html_of(client.get(f"/tasks/{failed.id}"))
    assert "Cancel task" in pending_html
    assert "Retry task" not in pending_html
    assert "Retry task" in failed_html
    assert "Cancel task" not in failed_html


# Cancel and retry


def test_cancel_button_cancels_pending_task(client):
    task = submit()
    token = csrf_token(client, f"/tasks/{task.id}")
    response = client.post(f"/tasks/{task.id}/cancel", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == f"/tasks/{task.id}"
    assert reload(task.id).status == TaskStatus.CANCELLED
    assert event_kinds(task.id) == ["submitted", "cancelled"]


def test_cancel_button_records_source(client):
    task = submit()
    token = csrf_token(client, f"/tasks/{task.id}")
    client.post(f"/tasks/{task.id}/cancel", data={"csrf_token": token})
    assert queries.task_events(task.id)[-1].message == "Cancelled by a person from the task page"


def test_cancel_button_flashes_result(client):
    task = submit()
    token = csrf_token(client, f"/tasks/{task.id}")
    response = client.post(f"/tasks/{task.id}/cancel", data={"csrf_token": token},
                           follow_redirects=True)
    assert f"Task {task.id} cancelled." in html_of(response)


def test_cancel_running_task_asks_it_to_stop(client):
    task = submit()
    claim_next()
    token = csrf_token(client, f"/tasks/{task.id}")
    response = client.post(f"/tasks/{task.id}/cancel", data={"csrf_token": token},
                           follow_redirects=True)
    html = html_of(response)
    assert reload(task.id).cancel_requested is True
    assert reload(task.id).status == TaskStatus.PROCESSING
    assert "Asked task 1 to stop" in html
    assert "stop requested" in html


def test_cancel_refused_flashes_message(client):
    task = succeeded_task()
    token = csrf_token(client)
    response = client.post(f"/tasks/{task.id}/cancel", data={"csrf_token": token},
                           follow_redirects=True)
    html = html_of(response)
    assert response.status_code == 200
    assert (f"Cannot cancel task {task.id}: its status is SUCCEEDED, and only PENDING, "
            "PROCESSING or RETRYING tasks can be cancelled.") in html
    assert reload(task.id).status == TaskStatus.SUCCEEDED


def test_cancel_refused_htmx_409(client):
    task = succeeded_task()
    token = csrf_token(client)
    response = client.post(f"/tasks/{task.id}/cancel", data={"csrf_token": token},
                           headers=HTMX)
    html = html_of(response)
    assert response.status_code == 409
    assert html.lstrip().startswith('<div id="task-live"')
    assert '<p class="notice notice-error" role="alert">Cannot cancel task' in html
    assert event_kinds(task.id) == ["submitted", "started", "succeeded"]


def test_cancel_htmx_returns_live_partial(client):
    task = submit()
    token = csrf_token(client, f"/tasks/{task.id}")
    response = client.post(f"/tasks/{task.id}/cancel", data={"csrf_token": token},
                           headers=HTMX)
    html = html_of(response)
    assert response.status_code == 200
    assert f"Task {task.id} cancelled." in html
    assert '<span class="status status-cancelled">CANCELLED</span>' in html


def test_cancel_without_csrf_400(client):
    task = submit()
    client.get(f"/tasks/{task.id}")
    response = client.post(f"/tasks/{task.id}/cancel")
    assert response.status_code == 400
    assert reload(task.id).status == TaskStatus.PENDING


def test_cancel_unknown_task_404(client):
    token = csrf_token(client)
    response = client.post("/tasks/999/cancel", data={"csrf_token": token})
    assert response.status_code == 404
    assert "Task 999 not found" in html_of(response)


def test_cancel_get_405(client):
    task = submit()
    response = client.get(f"/tasks/{task.id}/cancel")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert "405 Method Not Allowed" in html_of(response)


def test_retry_button_requeues_failed_task(client):
    task = failed_task()
    token = csrf_token(client, f"/tasks/{task.id}")
    response = client.post(f"/tasks/{task.id}/retry", data={"csrf_token": token},
                           follow_redirects=True)
    assert reload(task.id).status == TaskStatus.PENDING
    assert event_kinds(task.id)[-1] == "requeued"
    assert f"Task {task.id} requeued; attempt 2 is due now." in html_of(response)


def test_retry_refused_htmx_409(client):
    task = submit()
    token = csrf_token(client, f"/tasks/{task.id}")
    response = client.post(f"/tasks/{task.id}/retry", data={"csrf_token": token},
                           headers=HTMX)
    assert response.status_code == 409
    assert (f"Cannot retry task {task.id}: its status is PENDING, and only CANCELLED or "
            "FAILED tasks can be retried.") in html_of(response)
    assert reload(task.id).status == TaskStatus.PENDING


def test_retry_refused_plain_redirects(client):
    task = submit()
    token = csrf_token(client, f"/tasks/{task.id}")
    response = client.post(f"/tasks/{task.id}/retry", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == f"/tasks/{task.id}"


# Event log


def test_events_page_lists_newest_first(client):
    task = succeeded_task()
    html = html_of(client.get("/events"))
    kinds = re.findall(r'<span class="kind">(\w+)</span>', html)
    assert kinds == ["succeeded", "started", "submitted"]
    assert f'href="/tasks/{task.id}">#{task.id}</a>' in html
    assert WORKER in html


def test_events_page_filters_by_kind(client):
    succeeded_task()
    html = html_of(client.get("/events?kind=started"))
    assert re.findall(r'<span class="kind">(\w+)</span>', html) == ["started"]
    assert '<option value="started" selected>' in html


def test_events_page_filters_by_task(client):
    first = submit()
    second = submit()
    html = html_of(client.get(f"/events?task={second.id}"))
    assert f'href="/tasks/{second.id}">' in html
    assert f'href="/tasks/{first.id}">' not in html


def test_events_page_filters_by_task_id_as_api_does(client):
    first = submit()
    second = submit()
    html = html_of(client.get(f"/events?task_id={second.id}"))
    assert f'href="/tasks/{second.id}">' in html
    assert f'href="/tasks/{first.id}">' not in html


def test_events_page_filters_by_level(client):
    failed_task()
    html = html_of(client.get("/events?level=error"))
    assert re.findall(r'<span class="kind">(\w+)</span>', html) == ["failed"]


def test_events_page_paginates_by_cursor(make_app):
    app = make_app(PAGE_SIZE=2)
    client = app.test_client()
    with app.app_context():
        for _ in range(3):
            submit()
        ids = [event.id for event in db.session.scalars(select(TaskEvent).order_by(TaskEvent.id))]
    first = html_of(client.get("/events?kind=submitted"))
    second = html_of(client.get(f"/events?kind=submitted&before={ids[1]}"))
    assert f'href="/events?before={ids[1]}&amp;kind=submitted">Older events</a>' in first
    assert second.count('<span class="kind">submitted</span>') == 1
    assert 'href="/events?kind=submitted">Newer: first page</a>' in second


def test_events_first_page_polls(client):
    html = html_of(client.get("/events?level=info"))
    container = re.search(r'<div id="events"[^>]*>', html).group(0)
    assert 'hx-get="/partials/events?level=info"' in container
    assert 'hx-sync="this:drop"' in container


def test_events_deep_page_does_not_poll(client):
    html = html_of(client.get("/events?before=5"))
    container = re.search(r'<div id="events"[^>]*>', html).group(0)
    assert "hx-get" not in container


def test_events_partial_returns_table(client):
    submit()
    html = html_of(client.get("/partials/events", headers=HTMX))
    assert "<html" not in html
    assert '<span class="kind">submitted</span>' in html


@pytest.mark.parametrize("query, field", [
    ("task=abc", "task"),
    ("task=0", "task"),
    ("kind=nope", "kind"),
    ("level=loud", "level"),
    ("before=-1", "before"),
])
def test_events_bad_filter_400(client, query, field):
    response = client.get(f"/events?{query}")
    html = html_of(response)
    assert response.status_code == 400
    assert f"Invalid filter: {field} must" in html


def test_events_partial_bad_filter_400(client):
    response = client.get("/partials/events?kind=nope")
    assert response.status_code == 400


# Content-Security-Policy, static files and errors


def _pages_to_check(client) -> list[str]:
    failed = failed_task()
    submit(text="<b>hi</b>")
    return [
        html_of(client.get("/")),
        html_of(client.get("/events")),
        html_of(client.get(f"/tasks/{failed.id}")),
        html_of(client.get("/tasks/2")),
        html_of(client.get("/missing")),
        html_of(post_form(client, {"type": "word_count", "params-text": ""})),
        html_of(client.get("/partials/params?type=sleep")),
        html_of(client.get("/partials/tasks")),
    ]


def test_pages_have_no_inline_script(client):
    for html in _pages_to_check(client):
        assert not re.search(r"<script(?![^>]*\bsrc=)", html)


def test_pages_have_no_inline_style(client):
    for html in _pages_to_check(client):
        assert "<style" not in html
        assert not re.search(r"\sstyle=", html)


def test_pages_have_no_event_handler_attributes(client):
    for html in _pages_to_check(client):
        assert not re.search(r"<[^>]+\son[a-z]+=", html)


def test_pages_send_csp_header(client):
    response = client.get("/")
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


def test_error_page_sends_csp_header(client):
    response = client.get("/missing")
    assert response.status_code == 404
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


def test_htmx_config_fits_csp(client):
    html = html_of(client.get("/"))
    config = json.loads(re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", html).group(1))
    assert config["includeIndicatorStyles"] is False
    assert config["allowEval"] is False
    assert {"code": "422", "swap": True} in config["responseHandling"]
    assert "style" not in config["attributesToSettle"]


def test_static_htmx_served(client):
    response = client.get("/static/htmx-2.0.11.min.js")
    assert response.status_code == 200
    assert b"version:\"2.0.11\"" in response.data
    response.close()


def test_static_htmx_licence_served(client):
    response = client.get("/static/htmx-LICENSE.txt")
    assert response.status_code == 200
    assert b"Zero-Clause BSD" in response.data
    response.close()


def test_base_loads_htmx_from_static(client):
    html = html_of(client.get("/"))
    assert '<script src="/static/htmx-2.0.11.min.js" defer></script>' in html
    assert '<link rel="stylesheet" href="/static/taskboard.css">' in html


def test_unknown_page_404(client):
    response = client.get("/missing")
    assert response.status_code == 404
    assert "404 Not Found" in html_of(response)


def test_unexpected_error_500_page(app, client):
    def explode():
        raise RuntimeError("secret detail")

    app.add_url_rule("/explode", "explode", explode)
    response = client.get("/explode")
    html = html_of(response)
    assert response.status_code == 500
    assert "500 Internal Server Error" in html
    assert "secret detail" not in html
    assert "Traceback" not in html


# Filters


@pytest.mark.parametrize("seconds, text", [
    (None, "–"),
    (0.4234, "0.42 s"),
    (12.4, "12 s"),
    (60, "1 min"),
    (185, "3 min 5 s"),
    (7440, "2 h 4 min"),
    (3600, "1 h"),
])
def test_duration_text_formats(seconds, text):
    assert duration_text(seconds) == text



# Page frame: skip link, live control, server time


def test_pages_start_with_skip_link(client):
    html = html_of(client.get("/"))
    body = html[html.index("<body"):]
    first_link = re.search(r"<a [^>]*>[^<]*</a>", body).group(0)
    assert first_link == '<a class="skip-link" href="#main">Skip to content</a>'
    assert '<main id="main" class="content" tabindex="-1">' in html


def test_pause_control_hidden_without_script(client):
    html = html_of(client.get("/events"))
    control = re.search(r'<div class="live-control"[^>]*>', html).group(0)
    assert " hidden" in control
    assert '<button type="button" id="live-toggle" aria-describedby="live-state">' in html
    assert '<span id="live-state" class="live-state" role="status"></span>' in html


def test_live_event_matches_script(client):
    script = client.get("/static/taskboard.js")
    source = script.get_data(as_text=True)
    script.close()
    assert f'var LIVE_EVENT = "{LIVE_REFRESH_EVENT}";' in source


def test_pages_send_server_time(client):
    html = html_of(client.get("/"))
    meta = re.search(r'<meta name="server-time" content="([^"]+)">', html)
    assert meta, "no server-time meta element"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", meta.group(1))


def test_live_regions_use_refresh_event(client):
    task = submit()
    pages = [html_of(client.get("/")), html_of(client.get("/events")),
             html_of(client.get(f"/tasks/{task.id}"))]
    for html in pages:
        triggers = re.findall(r'hx-trigger="([^"]+)"', html)
        live = [trigger for trigger in triggers if trigger.split(",")[0] == LIVE_REFRESH_EVENT]
        assert live, "a page without a live region"
        assert not [trigger for trigger in triggers if "every " in trigger]


def test_refresh_interval_floor_100_ms(make_app):
    app = make_app(REFRESH_INTERVAL=0.0001)
    html = html_of(app.test_client().get("/"))
    body = re.search(r"<body[^>]*>", html).group(0)
    assert 'data-refresh-interval="100"' in body


# Run now and delete


def scheduled_task(delay_seconds=3600) -> Task:
    task, _ = queue.submit({"type": "word_count", "params": {"text": "later"},
                            "delay_seconds": delay_seconds})
    return task


def test_run_now_button_only_when_scheduled(client):
    later = scheduled_task()
    due = submit()
    assert "Run now" in html_of(client.get(f"/tasks/{later.id}"))
    assert "Run now" not in html_of(client.get(f"/tasks/{due.id}"))


def test_run_now_records_the_person(client):
    task = scheduled_task()
    token = csrf_token(client, f"/tasks/{task.id}")
    response = client.post(f"/tasks/{task.id}/run-now", data={"csrf_token": token},
                           follow_redirects=True)
    assert f"Task {task.id} is due now" in html_of(response)
    assert [claimed.task_id for claimed in queue.claim(WORKER, 1)] == [task.id]
    messages = [event.message for event in queries.task_events(task.id)]
    assert any("from the task page" in message for message in messages)


def test_run_now_twice_is_refused_without_change(client):
    task = scheduled_task()
    token = csrf_token(client, f"/tasks/{task.id}")
    client.post(f"/tasks/{task.id}/run-now", data={"csrf_token": token})
    events_before = len(queries.task_events(task.id))
    response = client.post(f"/tasks/{task.id}/run-now", data={"csrf_token": token},
                           headers=HTMX)
    assert response.status_code == 409
    assert "already due" in html_of(response)
    assert len(queries.task_events(task.id)) == events_before


def test_run_now_finished_task_rejected(client):
    task = succeeded_task()
    token = csrf_token(client, f"/tasks/{task.id}")
    response = client.post(f"/tasks/{task.id}/run-now", data={"csrf_token": token},
                           headers=HTMX)
    assert response.status_code == 409
    assert f"Cannot run task {task.id} now: its status is SUCCEEDED" in html_of(response)


def test_delete_asks_for_confirmation_first(client):
    task = succeeded_task()
    token = csrf_token(client, f"/tasks/{task.id}")
    response = client.post(f"/tasks/{task.id}/delete", data={"csrf_token": token})
    assert response.status_code == 200
    assert f"Delete task {task.id}?" in html_of(response)
    assert reload(task.id) is not None


def test_delete_confirmed_removes_task_and_events(client):
    task_id = succeeded_task().id
    token = csrf_token(client, f"/tasks/{task_id}")
    response = client.post(f"/tasks/{task_id}/delete",
                           data={"csrf_token": token, "confirmed": "1"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/tasks"
    db.session.rollback()
    assert db.session.get(Task, task_id) is None
    assert count_rows("task_events") == 0
    again = client.post(f"/tasks/{task_id}/delete",
                        data={"csrf_token": token, "confirmed": "1"})
    assert again.status_code == 404


def test_delete_of_a_running_task_is_refused(client):
    task = submit()
    claim_next()
    token = csrf_token(client, f"/tasks/{task.id}")
    assert "Delete task" not in html_of(client.get(f"/tasks/{task.id}"))
    response = client.post(f"/tasks/{task.id}/delete",
                           data={"csrf_token": token, "confirmed": "1"},
                           follow_redirects=True)
    assert "Cannot delete task" in html_of(response)
    assert reload(task.id).status == TaskStatus.PROCESSING


# The hint shown while no worker runs


def test_dashboard_says_when_no_worker_runs(client):
    html = html_of(client.get("/"))
    assert "No worker is running" in html


def test_dashboard_hint_gone_with_a_live_worker(client):
    from app.tasks import worker_registry

    worker_registry.register_worker("worker-live", hostname="host", pid=1, queues=None,
                                    concurrency=1)
    assert "No worker is running" not in html_of(client.get("/"))
    partial = html_of(client.get("/partials/tasks", headers=HTMX))
    assert '<div id="worker-hint" hx-swap-oob="true">' in partial
    assert "No worker is running" not in partial
