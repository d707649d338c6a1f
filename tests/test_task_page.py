"""The task page, attempt by attempt: each claim starts an attempt in the task's history.

Attempts come from the event log that the queue operations write, so these
tests drive a task through real claims, failures, releases and lease expiry
on each database, then read the page as a browser would.
"""

import re
import threading
from datetime import timedelta
from html import unescape

import pytest

from app.extensions import db
from app.tasks import Task, queries, queue
from app.tasks.timeutil import utcnow
from app.web.attempts import MAX_LOG_LINES, Attempt, derive_attempts, load_attempts
from conftest import wait_for

HTMX = {"HX-Request": "true"}
WORKER = "worker-a"
OTHER_WORKER = "worker-b"


def submit(type_name="noop", **fields) -> Task:
    task, _ = queue.submit({"type": type_name, "params": {}, **fields})
    return task


def claim(worker=WORKER):
    """Claim the one due task, waiting for a retry's short backoff to pass."""
    claims = wait_for(lambda: queue.claim(worker, 1), timeout=5)
    return claims[0]


def attempts_of(task_id):
    db.session.rollback()
    task = db.session.get(Task, task_id, populate_existing=True)
    return load_attempts(task)


def page(client, task_id) -> str:
    return client.get(f"/tasks/{task_id}").get_data(as_text=True)


def attempt_block(html: str, sequence: int) -> str:
    """Return the markup of one attempt card, found by its id."""
    match = re.search(rf'<li class="attempt[^"]*" id="attempt-{sequence}">(.*?)\n</li>', html, re.S)
    assert match, f"no attempt-{sequence} on the page"
    return match.group(1)


def outcome_badge(block: str) -> str:
    match = re.search(r'<span class="status ([\w-]+)">([^<]+)</span>', block)
    assert match, "no outcome badge in the attempt"
    return f"{match.group(1)} {match.group(2)}"


def fail_until_success(failures: int) -> Task:
    task = submit(max_attempts=failures + 1)
    for number in range(1, failures + 1):
        queue.fail(claim(), f"ConnectionError: refused on attempt {number}",
                   f"Traceback (most recent call last):\n  attempt {number}")
    queue.succeed(claim(), {"ok": True})
    return task


# Deriving attempts


def test_attempts_none_before_claim(app):
    task = submit()
    attempts, history = attempts_of(task.id)
    assert attempts == []
    assert [kind for kind, _ in history] == ["event"]
    assert history[0][1].kind == "submitted"


def test_attempts_one_per_claim(app):
    task = fail_until_success(2)
    attempts, history = attempts_of(task.id)
    assert [attempt.number for attempt in attempts] == [1, 2, 3]
    assert [attempt.outcome for attempt in attempts] == [
        "Failed, retry scheduled", "Failed, retry scheduled", "Succeeded"]
    assert [kind for kind, _ in history] == ["event", "attempt", "attempt", "attempt"]


def test_attempt_records_worker_and_times(app):
    task = submit()
    queue.succeed(claim(OTHER_WORKER), None)
    attempt = attempts_of(task.id)[0][0]
    assert attempt.worker_id == OTHER_WORKER
    assert attempt.started_at.tzinfo is not None
    assert attempt.ended_at >= attempt.started_at
    assert attempt.duration_seconds >= 0


def test_attempt_running_until_outcome(app):
    task = submit()
    running_claim = claim()
    attempt = attempts_of(task.id)[0][0]
    assert attempt.running
    assert attempt.outcome == "Running"
    assert attempt.ended_at is None
    assert attempt.duration_seconds is None

    queue.succeed(running_claim, None)
    attempt = attempts_of(task.id)[0][0]
    assert not attempt.running


def test_attempt_logs_grouped_by_attempt(app):
    task = submit(max_attempts=2)
    first = claim()
    queue.write_log(task.id, "first attempt line", attempt=1, worker_id=WORKER)
    queue.fail(first, "ValueError: bad input")
    second = claim()
    queue.write_log(task.id, "second attempt line", attempt=2, worker_id=WORKER)
    queue.succeed(second, None)
    attempts, _ = attempts_of(task.id)
    assert [line.message for line in attempts[0].logs] == ["first attempt line"]
    assert [line.message for line in attempts[1].logs] == ["second attempt line"]


def test_earlier_attempt_error_from_message(app):
    task = fail_until_success(2)
    attempts, _ = attempts_of(task.id)
    assert attempts[0].error_text == "ConnectionError: refused on attempt 1"
    assert attempts[0].outcome_message.startswith("Attempt 1 of 3 failed: ")


@pytest.mark.parametrize("message, error", [
    ("Attempt 1 of 3 failed: ValueError: x. Retrying in 2.5 s.", "ValueError: x"),
    ("Attempt 3 of 3 failed: KeyError: 'a'. No attempts left.", "KeyError: 'a'"),
    ("Attempt 1 of 3 failed: Boom!\nsecond line The error is not retryable.", "Boom!\nsecond line"),
    ("Cancelled by a person while attempt 1 of 3 ran", "Cancelled by a person while attempt 1 of 3 ran"),
])
def test_error_text_from_outcome_message(message, error):
    attempt = Attempt(sequence=1, number=1, worker_id=WORKER, started_at=utcnow(),
                      outcome_message=message)
    assert attempt.error_text == error


def test_each_failed_attempt_keeps_its_traceback(app):
    task = fail_until_success(2)
    attempts, _ = attempts_of(task.id)
    assert attempts[0].error is None
    assert attempts[0].failed
    assert attempts[0].traceback.endswith("attempt 1")
    assert attempts[1].error == "ConnectionError: refused on attempt 2"
    assert attempts[1].traceback.endswith("attempt 2")
    assert attempts[2].error is None
    assert not attempts[2].failed


def test_released_attempt_not_counted(app):
    task = submit()
    queue.release([claim()], reason="the worker is stopping")
    queue.succeed(claim(OTHER_WORKER), None)
    attempts, _ = attempts_of(task.id)
    assert [attempt.number for attempt in attempts] == [1, 1]
    assert attempts[0].outcome == "Released, not counted"
    assert attempts[0].worker_id == WORKER
    assert attempts[1].outcome == "Succeeded"
    assert attempts[1].worker_id == OTHER_WORKER


def test_lost_lease_marks_attempt(app):
    task = submit(max_attempts=2)
    claim()
    recovered = queue.recover_expired_leases(now=utcnow() + timedelta(hours=1))
    assert recovered == 1
    attempt = attempts_of(task.id)[0][0]
    assert attempt.lease_expired
    assert attempt.outcome == "Worker lost: failed, retry scheduled"
    assert "worker lost" in attempt.error


def test_person_retry_between_attempts(app):
    task = submit(max_attempts=1)
    queue.fail(claim(), "RuntimeError: boom")
    queue.retry(task.id, source="a test")
    queue.succeed(claim(), None)
    _, history = attempts_of(task.id)
    kinds = [entry.kind if kind == "event" else f"attempt {entry.number}" for kind, entry in history]
    assert kinds == ["submitted", "attempt 1", "requeued", "attempt 2"]


def test_late_log_after_outcome_in_history(app):
    task = submit()
    first = claim()
    queue.succeed(first, None)
    queue.write_log(task.id, "late line", attempt=1, worker_id=WORKER)
    attempts, history = attempts_of(task.id)
    assert attempts[0].logs == []
    assert history[-1][1].message == "late line"


def test_log_lines_capped_per_attempt(app):
    task = submit()
    running_claim = claim()
    for number in range(MAX_LOG_LINES + 5):
        queue.write_log(task.id, f"line {number}", attempt=1, worker_id=WORKER)
    queue.succeed(running_claim, None)
    attempt = attempts_of(task.id)[0][0]
    assert attempt.log_count == MAX_LOG_LINES + 5
    assert len(attempt.logs) == MAX_LOG_LINES
    assert attempt.logs[0].message == "line 5"
    assert attempt.hidden_log_count == 5


def test_load_matches_derive_from_all_events(app):
    task = submit(max_attempts=3)
    first = claim()
    queue.write_log(task.id, "first", attempt=1, worker_id=WORKER)
    queue.fail(first, "ValueError: bad input")
    queue.write_log(task.id, "from code, no attempt")
    second = claim()
    queue.write_log(task.id, "second", attempt=2, worker_id=WORKER)
    queue.succeed(second, None)
    loaded_attempts, loaded_history = attempts_of(task.id)
    task = db.session.get(Task, task.id)
    all_attempts, all_history = derive_attempts(task, queries.task_events(task.id))
    assert [(a.number, a.outcome, [line.message for line in a.logs]) for a in loaded_attempts] == \
        [(a.number, a.outcome, [line.message for line in a.logs]) for a in all_attempts]
    assert [entry.id if kind == "event" else entry.sequence for kind, entry in loaded_history] == \
        [entry.id if kind == "event" else entry.sequence for kind, entry in all_history]


def test_load_counts_unread_log_lines(app):
    task = submit(max_attempts=2)
    first = claim()
    for number in range(MAX_LOG_LINES + 30):
        queue.write_log(task.id, f"first {number}", attempt=1, worker_id=WORKER)
    queue.fail(first, "ValueError: bad input")
    second = claim()
    queue.write_log(task.id, "second 0", attempt=2, worker_id=WORKER)
    queue.succeed(second, None)
    attempts, _ = attempts_of(task.id)
    assert attempts[0].log_count == MAX_LOG_LINES + 30
    assert attempts[0].hidden_log_count == 30
    assert attempts[0].logs[0].message == "first 30"
    assert attempts[0].logs[-1].message == f"first {MAX_LOG_LINES + 29}"
    assert attempts[1].log_count == 1
    assert attempts[1].hidden_log_count == 0


# The page


def test_task_page_shows_each_attempt(client):
    task = fail_until_success(2)
    html = page(client, task.id)
    assert outcome_badge(attempt_block(html, 1)) == "status-retrying Failed, retry scheduled"
    assert outcome_badge(attempt_block(html, 2)) == "status-retrying Failed, retry scheduled"
    assert outcome_badge(attempt_block(html, 3)) == "status-succeeded Succeeded"
    assert f"<dd>{WORKER}</dd>" in attempt_block(html, 3)


def test_task_page_attempt_error_in_details(client):
    task = fail_until_success(2)
    html = page(client, task.id)
    first = attempt_block(html, 1)
    second = attempt_block(html, 2)
    assert '<details class="error-details" id="attempt-1-error">' in first
    assert "refused on attempt 1" in first
    assert '<pre class="traceback">Traceback (most recent call last):\n  attempt 1</pre>' in first
    assert '<details class="error-details" id="attempt-2-error" open>' in second
    assert '<pre class="traceback">Traceback (most recent call last):\n  attempt 2</pre>' in second
    assert "error-details" not in attempt_block(html, 3)


def test_task_page_reads_one_snapshot(app, client, monkeypatch):
    """A failure committed during a page read shows whole on the next page, not half."""
    task = submit(max_attempts=1)
    running_claim = claim()
    read_task = queries.get_task

    def fail_elsewhere():
        with app.app_context():
            queue.fail(running_claim, "RuntimeError: disk full", "Traceback: disk full")

    def read_task_then_fail(task_id):
        found = read_task(task_id)
        # The attempt fails between the page's read of the task and of its events.
        worker = threading.Thread(target=fail_elsewhere)
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive()
        return found

    monkeypatch.setattr(queries, "get_task", read_task_then_fail)
    during = attempt_block(page(client, task.id), 1)
    monkeypatch.setattr(queries, "get_task", read_task)
    after = attempt_block(page(client, task.id), 1)

    assert outcome_badge(during) == "status-processing Running"
    assert "error-details" not in during
    assert outcome_badge(after) == "status-failed Failed"
    assert '<details class="error-details" id="attempt-1-error" open>' in after


def test_task_page_failed_task_error_escaped(client):
    task = submit(max_attempts=1)
    queue.fail(claim(), "RuntimeError: disk <full>", "Traceback:\n  <b>boom</b>", retryable=False)
    html = page(client, task.id)
    block = attempt_block(html, 1)
    assert outcome_badge(block) == "status-failed Failed"
    assert '<pre class="error-text">RuntimeError: disk &lt;full&gt;</pre>' in block
    assert "&lt;b&gt;boom&lt;/b&gt;" in block
    assert "<b>boom</b>" not in html


def test_task_page_running_attempt_live(client):
    task = submit()
    running_claim = claim()
    queue.report_progress(running_claim, 40, "step 2 of 5")
    queue.write_log(task.id, "loaded <rows>", attempt=1, worker_id=WORKER)
    html = client.get(f"/partials/tasks/{task.id}", headers=HTMX).get_data(as_text=True)
    block = attempt_block(html, 1)
    assert outcome_badge(block) == "status-processing Running"
    assert '<progress value="40" max="100"' in block
    assert "step 2 of 5" in block
    assert '<details class="log-details" id="attempt-1-log" open>' in block
    assert "loaded &lt;rows&gt;" in block
    assert 'data-scroll-end tabindex="0"' in block
    live = re.search(r'<div id="task-live"[^>]*>', html).group(0)
    assert 'hx-trigger="live-refresh"' in live


def test_task_page_refresh_shows_new_log_lines(client):
    task = submit()
    running_claim = claim()
    before = client.get(f"/partials/tasks/{task.id}", headers=HTMX).get_data(as_text=True)
    queue.write_log(task.id, "a new line", attempt=1, worker_id=WORKER)
    after = client.get(f"/partials/tasks/{task.id}", headers=HTMX).get_data(as_text=True)
    queue.succeed(running_claim, None)
    assert "a new line" not in before
    assert "a new line" in after
    assert "Log: 1 line</summary>" in after


def test_task_page_terminal_stops_refresh(client):
    task = fail_until_success(1)
    html = client.get(f"/partials/tasks/{task.id}", headers=HTMX).get_data(as_text=True)
    live = re.search(r'<div id="task-live"[^>]*>', html).group(0)
    assert "hx-trigger" not in live
    assert "hx-get" not in live


def test_task_page_capped_log_links_event_log(client):
    task = submit()
    running_claim = claim()
    for number in range(MAX_LOG_LINES + 1):
        queue.write_log(task.id, f"line {number}", attempt=1, worker_id=WORKER)
    queue.succeed(running_claim, None)
    html = page(client, task.id)
    assert f"Log: {MAX_LOG_LINES + 1} lines" in html
    assert f"Showing the last {MAX_LOG_LINES} lines." in html
    assert f'href="/events?task={task.id}&amp;kind=log"' in html
    assert ">line 0<" not in html
    assert ">line 1<" in html


def test_task_page_without_attempt(client):
    task = submit(delay_seconds=600)
    html = page(client, task.id)
    assert "No attempt yet. The task is due " in html
    assert '<span class="status status-pending">PENDING</span>' in html
    assert 'id="attempt-1"' not in html


def test_task_page_released_attempt_ids_distinct(client):
    task = submit()
    queue.release([claim()], reason="the worker is stopping")
    queue.succeed(claim(), None)
    html = page(client, task.id)
    assert outcome_badge(attempt_block(html, 1)) == "status-pending Released, not counted"
    assert outcome_badge(attempt_block(html, 2)) == "status-succeeded Succeeded"
    assert html.count('<h3 id="attempt-1-heading">Attempt 1</h3>') == 1
    assert html.count('<h3 id="attempt-2-heading">Attempt 1</h3>') == 1


def test_task_page_times_relative_with_exact(client):
    task = submit()
    queue.succeed(claim(), None)
    html = page(client, task.id)
    block = attempt_block(html, 1)
    started = re.search(r'<time datetime="([^"]+)" title="([^"]+)" data-relative>([^<]+)</time>'
                        r'\s*<span class="exact-time">([^<]+)</span>', block)
    assert started, "no relative time with its exact time in the attempt"
    assert started.group(2) == started.group(4)
    assert started.group(2).endswith(" UTC")
    assert re.fullmatch(r"now|\d+ s ago", started.group(3))


def test_task_page_cancel_keeps_attempt_history(client):
    task = submit()
    claim()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page(client, task.id)).group(1)
    response = client.post(f"/tasks/{task.id}/cancel", data={"csrf_token": token}, headers=HTMX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Asked task" in unescape(html)
    assert outcome_badge(attempt_block(html, 1)) == "status-processing Running"
    assert "Cancellation requested from the task page" in attempt_block(html, 1)
