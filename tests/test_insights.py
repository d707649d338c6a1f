"""The queues, workers and metrics pages, their live partials, and pausing queues from a page."""

import logging
import re
from datetime import timedelta

import pytest

from app.extensions import db
from app.tasks import queue, queue_control, stats, worker_registry
from app.tasks.models import QueueState, WorkerProcess
from conftest import count_rows

HTMX = {"HX-Request": "true"}


def csrf_token(client, path="/queues") -> str:
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, f"no csrf_token input on {path}"
    return match.group(1)


def _submit(queue_name="default", **fields):
    task, _ = queue.submit({"type": "noop", "queue": queue_name, **fields})
    return task


def _paused(name) -> bool | None:
    db.session.rollback()
    state = db.session.get(QueueState, name, populate_existing=True)
    return None if state is None else state.paused


# Queues page


def test_queues_page_lists_queues_with_counts(client):
    _submit("mail")
    _submit("mail")
    _submit("reports")
    queue.claim("worker-a", 1, queues=["reports"])

    response = client.get("/queues")
    html = response.get_data(as_text=True)

    assert response.status_code == 200
    assert '<th scope="row" class="queue-name">mail</th>' in html
    assert '<th scope="row" class="queue-name">reports</th>' in html
    mail_row = html[html.index(">mail</th>"):html.index(">reports</th>")]
    assert re.findall(r'<td class="number">([\d,]+)</td>', mail_row) == ["2", "0", "0", "0", "0", "0"]
    assert "Running</span>" in mail_row


def test_queues_page_shows_oldest_due_age(client):
    _submit("mail")

    html = client.get("/queues").get_data(as_text=True)

    assert "(due <time" in html
    assert "none waiting" not in html


def test_queues_page_shows_scheduled_only_queue(client):
    _submit("mail", delay_seconds=3600)

    html = client.get("/queues").get_data(as_text=True)

    assert "none due yet; 1 scheduled for later" in html


def test_queues_page_nav_marks_current_page(client):
    html = client.get("/queues").get_data(as_text=True)

    assert re.search(r'href="/queues"\s+aria-current="page">Queues</a>', html)
    assert 'href="/workers"' in html
    assert 'href="/metrics"' in html


def test_queues_page_without_queues_says_so(client):
    html = client.get("/queues").get_data(as_text=True)

    assert "No queues yet." in html


def test_queues_partial_is_live_region(client):
    response = client.get("/partials/queues")
    html = response.get_data(as_text=True)

    assert response.status_code == 200
    assert html.startswith("\n<div id=\"queues\"") or html.lstrip().startswith('<div id="queues"')
    assert 'hx-trigger="live-refresh"' in html
    assert 'hx-swap="outerHTML"' in html
    assert "<html" not in html


def test_pause_queue_form_redirects_and_pauses(client):
    _submit("mail")
    token = csrf_token(client)

    response = client.post("/queues/pause", data={"csrf_token": token, "queue": "mail"})

    assert response.status_code == 303
    assert response.headers["Location"].endswith("/queues")
    assert _paused("mail") is True
    page = client.get("/queues").get_data(as_text=True)
    assert "Queue mail paused." in page
    assert "Paused</span>" in page
    assert 'aria-label="Resume queue mail"' in page


def test_resume_queue_form_resumes(client):
    queue_control.pause_queue("mail")
    token = csrf_token(client)

    response = client.post("/queues/resume", data={"csrf_token": token, "queue": "mail"})

    assert response.status_code == 303
    assert _paused("mail") is False


def test_pause_queue_htmx_returns_table_with_notice(client):
    _submit("mail")
    token = csrf_token(client)

    response = client.post("/queues/pause", data={"queue": "mail"},
                           headers={**HTMX, "X-CSRFToken": token})
    html = response.get_data(as_text=True)

    assert response.status_code == 200
    assert '<div id="queues"' in html
    assert "Queue mail paused." in html
    assert 'aria-label="Resume queue mail"' in html
    assert _paused("mail") is True


def test_pause_queue_logs_the_page(client, caplog):
    token = csrf_token(client)

    with caplog.at_level(logging.INFO, logger="app.tasks.queue_control"):
        client.post("/queues/pause", data={"csrf_token": token, "queue": "mail"})

    [record] = [r for r in caplog.records if getattr(r, "event", None) == "queue_paused"]
    assert record.getMessage() == "Queue mail paused from the queues page"
    assert record.source == "the queues page"


def test_pause_queue_before_it_has_tasks(client):
    token = csrf_token(client)

    client.post("/queues/pause", data={"csrf_token": token, "queue": "nightly"})

    assert _paused("nightly") is True
    assert ">nightly</th>" in client.get("/queues").get_data(as_text=True)


@pytest.mark.parametrize(("name", "message"), [
    ("", "Cannot pause a queue: the queue name is missing."),
    ("bad name", "Cannot pause queue &#39;bad name&#39;: the queue name must be 1 to 100 letters"),
    ("x" * 101, "Cannot pause queue &#39;" + "x" * 100 + "…&#39;: the queue name must be"),
])
def test_pause_queue_rejects_bad_name(client, name, message):
    token = csrf_token(client)

    response = client.post("/queues/pause", data={"csrf_token": token, "queue": name})
    html = response.get_data(as_text=True)

    assert response.status_code == 422
    assert message in html
    assert 'class="field-error" id="queue-name-error"' in html
    assert count_rows("queues") == 0


def test_pause_queue_htmx_rejects_bad_name(client):
    token = csrf_token(client)

    response = client.post("/queues/pause", data={"queue": "a/b"},
                           headers={**HTMX, "X-CSRFToken": token})
    html = response.get_data(as_text=True)

    assert response.status_code == 422
    assert 'class="notice notice-error" role="alert"' in html
    assert "Cannot pause queue &#39;a/b&#39;" in html
    assert count_rows("queues") == 0


def test_pause_queue_escapes_rejected_name(client):
    token = csrf_token(client)

    html = client.post("/queues/pause", data={"csrf_token": token, "queue": "<b>x</b>"}
                       ).get_data(as_text=True)

    assert "<b>x</b>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html


def test_pause_queue_without_csrf_rejected(client):
    response = client.post("/queues/pause", data={"queue": "mail"})

    assert response.status_code == 400
    assert count_rows("queues") == 0


def test_pause_queue_get_not_allowed(client):
    assert client.get("/queues/pause").status_code == 405


# Workers page


def _age_heartbeat(worker_id, seconds):
    worker = db.session.get(WorkerProcess, worker_id)
    worker.heartbeat_at = worker.heartbeat_at - timedelta(seconds=seconds)
    db.session.commit()


def test_workers_page_lists_live_worker_with_tasks(client):
    worker_registry.register_worker("host-a:11:abc", hostname="host-a", pid=11,
                                    queues=["mail", "reports"], concurrency=4)
    task = _submit("mail")
    queue.claim("host-a:11:abc", 1)

    response = client.get("/workers")
    html = response.get_data(as_text=True)

    assert response.status_code == 200
    assert '<code class="worker-id">host-a:11:abc</code>' in html
    assert "mail, reports" in html
    assert f'href="/tasks/{task.id}">#{task.id}</a>' in html
    assert "1 of 4" in html
    assert '<span class="worker-state worker-state-live">Live</span>' in html
    assert "1 live" in html


def test_workers_page_marks_gone_worker(client):
    worker_registry.register_worker("live-1", hostname="a", pid=1, queues=None, concurrency=1)
    worker_registry.register_worker("gone-1", hostname="b", pid=2, queues=None, concurrency=1)
    _age_heartbeat("gone-1", 120)

    html = client.get("/workers").get_data(as_text=True)

    assert html.index("live-1") < html.index("gone-1")
    assert '<tr class="worker-gone">' in html
    assert '<span class="worker-state worker-state-gone">Gone</span>' in html
    assert "no heartbeat for longer than 30 s" in html
    assert "1 gone" in html


def test_workers_page_without_workers_says_so(client):
    html = client.get("/workers").get_data(as_text=True)

    assert "No worker is registered." in html


def test_workers_page_lists_tasks_of_unregistered_worker(client):
    task = _submit("mail")
    queue.claim("forgotten-worker", 1)

    html = client.get("/workers").get_data(as_text=True)

    assert "Running tasks of unregistered workers" in html
    assert f'href="/tasks/{task.id}"' in html


def test_workers_page_caps_tasks_per_worker(client):
    worker_registry.register_worker("busy", hostname="a", pid=1, queues=None, concurrency=30)
    for _ in range(23):
        _submit("mail")
    queue.claim("busy", 23)

    html = client.get("/workers").get_data(as_text=True)

    assert html.count('href="/tasks/') == 20
    assert "and 3 more" in html


def test_workers_partial_is_live_region(client):
    html = client.get("/partials/workers").get_data(as_text=True)

    assert html.lstrip().startswith('<div id="workers"')
    assert 'hx-trigger="live-refresh"' in html
    assert "<html" not in html


# Metrics page


def test_metrics_page_draws_charts_with_tables(client):
    task = _submit("mail")
    claims = queue.claim("worker-a", 1)
    queue.succeed(claims[0], None)
    stats.record_queue_sample()
    assert task.id

    response = client.get("/metrics")
    html = response.get_data(as_text=True)

    assert response.status_code == 200
    assert html.count("<svg") == 4
    assert html.count('role="img"') == 4
    assert "Tasks finished per minute, last hour" in html
    assert "In the last hour 1 task succeeded and 0 failed" in html
    assert "Waiting tasks per queue, last hour" in html
    assert "<summary>Numbers for this chart</summary>" in html
    assert '<th scope="row">noop</th>' in html
    assert "These come from the one task that succeeded or failed in the last hour." in html


def test_metrics_page_without_data_says_so(client):
    html = client.get("/metrics").get_data(as_text=True)

    assert "No task succeeded or failed in the last hour." in html
    assert "No queue depth samples in the last hour." in html


def test_charts_partial_is_live_region(client):
    html = client.get("/partials/charts").get_data(as_text=True)

    assert html.lstrip().startswith('<div id="charts"')
    assert 'hx-trigger="live-refresh"' in html
    assert "<html" not in html


@pytest.mark.parametrize("path", ["/queues", "/workers", "/metrics",
                                  "/partials/queues", "/partials/workers", "/partials/charts"])
def test_insight_pages_have_no_inline_styles_or_scripts(client, path):
    _submit("mail")
    worker_registry.register_worker("w", hostname="a", pid=1, queues=None, concurrency=1)
    queue.claim("w", 1)

    html = client.get(path).get_data(as_text=True)

    assert " style=" not in html
    assert "<style" not in html
    assert not re.search(r"<script(?![^>]*\ssrc=)", html)
