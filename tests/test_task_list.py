"""The tasks page: filters, search, sort orders, keyset pages and actions from the page.

Every test runs on SQLite and on PostgreSQL. Forms are posted as a browser
without JavaScript posts them, with the CSRF token of the page.
"""

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from sqlalchemy import select, text

from app.extensions import db
from app.tasks import Task, TaskEvent, TaskStatus, listing, queue

WORKER = "worker-list"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def submit(type_name="word_count", *, now=None, **fields) -> int:
    params = {"text": "one two"} if type_name == "word_count" else {}
    data = {"type": type_name, "params": fields.pop("params", params), **fields}
    task, _ = queue.submit(data, now=now)
    return task.id


def finished(created: float, started: float, ended: float, **fields) -> int:
    task_id = submit(now=at(created), **fields)
    claim = queue.claim(WORKER, 1, now=at(started))[0]
    assert claim.task_id == task_id
    queue.succeed(claim, {"ok": True}, now=at(ended))
    return task_id


def failed(error: str) -> int:
    task_id = submit(priority=100)
    claim = queue.claim(WORKER, 1)[0]
    assert claim.task_id == task_id
    queue.fail(claim, error, retryable=False)
    return task_id


def reload(task_id) -> Task | None:
    db.session.rollback()
    return db.session.get(Task, task_id, populate_existing=True)


def html_of(response) -> str:
    return response.get_data(as_text=True)


def row_ids(html: str) -> list[int]:
    return [int(match) for match in re.findall(r'<tr id="task-(\d+)"', html)]


def flash_text(client) -> str:
    html = html_of(client.get("/tasks"))
    messages = re.findall(r'<li class="flash[^"]*"[^>]*>([^<]*)</li>', html)
    return " ".join(unescape(message) for message in messages)


def csrf_token(client, path="/tasks") -> str:
    html = html_of(client.get(path))
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, f"no csrf_token on {path}"
    return match.group(1)


def post_action(client, fields: dict):
    return client.post("/tasks/actions", data={"csrf_token": csrf_token(client), **fields})


@pytest.fixture
def timeline(app):
    """Seven tasks with known times: four finished, one running, two waiting.

    Durations: a 5 s, b 20 s, c 1 s, g 5 s (a tie with a, broken by id).
    """
    ids = {
        "a": finished(0, 10, 15),
        "b": finished(1, 11, 31),
        "c": finished(2, 12, 13),
        "g": finished(6, 20, 25),
    }
    ids["d"] = submit(now=at(3))
    assert queue.claim(WORKER, 1, now=at(14))[0].task_id == ids["d"]
    ids["e"] = submit(now=at(4))
    ids["f"] = submit(now=at(5))
    return ids


def expected_order(sort: str, descending: bool) -> list[int]:
    """Sort every task in Python: by (key, id), with tasks without a key last, by id."""
    db.session.rollback()
    tasks = db.session.scalars(select(Task)).all()
    keys = {
        "created": lambda t: t.created_at,
        "started": lambda t: t.started_at,
        "finished": lambda t: t.finished_at,
        "duration": lambda t: t.duration_seconds,
    }
    key = keys[sort]
    with_key = sorted((t for t in tasks if key(t) is not None),
                      key=lambda t: (key(t), t.id), reverse=descending)
    without = sorted((t for t in tasks if key(t) is None), key=lambda t: t.id, reverse=descending)
    return [t.id for t in with_key + without]


def walk(filters=listing.TaskFilter(), *, sort, descending, limit=2, window=None) -> list[int]:
    """Follow next cursors from the first page to the last; return every id seen, in order."""
    dialect = db.engine.dialect.name
    seen, cursor = [], None
    for _ in range(100):
        page = listing.find_tasks(filters, sort=sort, descending=descending, cursor=cursor,
                                  limit=limit, window=window)
        seen += [task.id for task in page.items]
        if page.next_cursor is None:
            return seen
        cursor = listing.decode_cursor(page.next_cursor, sort, dialect)
    raise AssertionError("the pages did not end")


# Keyset pages under every sort


@pytest.mark.parametrize("sort", listing.SORT_KEYS)
@pytest.mark.parametrize("descending", [True, False])
def test_pages_follow_sort_order(timeline, sort, descending):
    assert walk(sort=sort, descending=descending) == expected_order(sort, descending)


def test_duration_sort_breaks_ties_by_id(timeline):
    order = walk(sort="duration", descending=False, limit=1)

    assert order[:4] == [timeline["c"], timeline["a"], timeline["g"], timeline["b"]]


def test_unfinished_tasks_come_last_in_finished_sort(timeline):
    for descending in (True, False):
        order = walk(sort="finished", descending=descending, limit=3)
        assert set(order[-3:]) == {timeline["d"], timeline["e"], timeline["f"]}


def test_cursor_rejects_garbage(app):
    for text_ in ("", "abc", "12", "x_1", "2026-01-01_x", "nan_3"):
        with pytest.raises(ValueError):
            listing.decode_cursor(text_, "created" if "2026" in text_ else "duration", "sqlite")


# Filters and search


def test_filter_by_status_type_queue(app):
    word = submit()
    mail = submit(queue="mail")
    noop = submit("noop")
    done = failed("RuntimeError: boom")

    assert walk(listing.TaskFilter(type="noop"), sort="created", descending=True) == [noop]
    assert walk(listing.TaskFilter(queue="mail"), sort="created", descending=True) == [mail]
    assert walk(listing.TaskFilter(status="FAILED"), sort="created", descending=True) == [done]
    assert word in walk(listing.TaskFilter(status="PENDING"), sort="created", descending=True)


def test_filter_by_created_range(timeline):
    found = walk(listing.TaskFilter(created_after=at(2), created_before=at(5)),
                 sort="created", descending=False)

    assert found == [timeline["c"], timeline["d"], timeline["e"]]


def test_search_finds_parameters_and_errors(app):
    needle = submit(params={"text": "a Needle in a haystack"})
    submit(params={"text": "plain hay"})
    broken = failed("RuntimeError: disk full on /var")

    assert walk(listing.TaskFilter(search="needle"), sort="created", descending=True) == [needle]
    assert walk(listing.TaskFilter(search="disk full"), sort="created", descending=True) == [broken]


def test_search_treats_wildcards_as_text(app):
    percent = submit(params={"text": "100% done"})
    submit(params={"text": "100 done"})

    assert walk(listing.TaskFilter(search="100%"), sort="created", descending=True) == [percent]


def test_search_finds_non_ascii_text(app):
    cafe = submit(params={"text": "un café noir"})
    submit(params={"text": "tea"})

    assert walk(listing.TaskFilter(search="café"), sort="created", descending=True) == [cafe]


def test_search_continues_past_window(app):
    target = submit(params={"text": "the needle"})
    for _ in range(5):
        submit(params={"text": "hay"})

    first = listing.find_tasks(listing.TaskFilter(search="needle"), limit=10, window=2)
    found = walk(listing.TaskFilter(search="needle"), sort="created", descending=True,
                 limit=10, window=2)

    assert first.items == []
    assert first.window_ended is True
    assert first.next_cursor is not None
    assert found == [target]


def test_parse_search_reads_ids(app):
    assert listing.parse_search("#42") == {"task_id": 42}
    assert listing.parse_search(" 7 ") == {"task_id": 7}
    assert listing.parse_search("disk 7") == {"search": "disk 7"}
    assert listing.parse_search("") == {}
    with pytest.raises(ValueError):
        listing.parse_search("x" * 201)


def test_bounded_count_stops_at_limit(app):
    for _ in range(4):
        submit()

    assert listing.count_tasks(listing.TaskFilter(), limit=3) == listing.BoundedCount(3, False)
    assert str(listing.count_tasks(listing.TaskFilter(), limit=3)) == "3+"
    assert listing.count_tasks(listing.TaskFilter(), limit=10) == listing.BoundedCount(4, True)


# The page


def test_nav_links_to_tasks_page(client):
    html = html_of(client.get("/"))

    assert 'href="/tasks"' in html
    assert ">Tasks</a>" in html


def test_tasks_page_lists_rows_with_checkboxes(client):
    task_id = submit()

    html = html_of(client.get("/tasks"))

    assert f'<tr id="task-{task_id}">' in html
    assert f'name="task_id" value="{task_id}"' in html
    assert "1 task matches." in html


def test_tasks_page_filters_from_query_string(client):
    keep = submit("noop")
    submit()

    html = html_of(client.get("/tasks?type=noop&status=pending"))

    assert row_ids(html) == [keep]
    assert '<option value="noop" selected>' in html


def test_tasks_page_searches_by_id(client):
    first = submit()
    submit()

    assert row_ids(html_of(client.get(f"/tasks?q=%23{first}"))) == [first]


def test_tasks_page_pages_with_cursor_links(client, app):
    app.config["PAGE_SIZE"] = 2
    ids = [submit() for _ in range(5)]
    seen = []
    path = "/tasks?sort=created&order=asc"
    for _ in range(5):
        html = html_of(client.get(path))
        seen += row_ids(html)
        match = re.search(r'<a href="([^"]+)">Next page</a>', html)
        if match is None:
            break
        path = unescape(match.group(1))

    assert seen == ids


@pytest.mark.parametrize("query, field", [
    ("status=DONE", "status"),
    ("created_after=yesterday", "created_after"),
    ("created_after=2026-01-02&created_before=2026-01-01", "created_before"),
    ("sort=name", "sort"),
    ("order=up", "order"),
    ("after=not-a-cursor", "after"),
    ("after=2026-01-01T00:00:00.000000Z_9999999999999999999", "after"),
    ("sort=duration&after=99999999999999999999_5", "after"),
    ("created_after=0001-01-01T00:00%2B05:00", "created_after"),
    ("queue=two%20words", "queue"),
    ("type=" + "x" * 101, "type"),
    ("q=" + "x" * 201, "q"),
    ("status=FAILED&status=PENDING", "status"),
])
def test_tasks_page_rejects_bad_filter(client, query, field):
    submit()

    response = client.get(f"/tasks?{query}")

    assert response.status_code == 400
    assert f"<li>{field} " in html_of(response)
    assert row_ids(html_of(response)) == []


def test_task_list_partial_is_fragment(client):
    task_id = submit()

    response = client.get("/partials/task-list", headers={"HX-Request": "true"})

    assert response.status_code == 200
    assert "<html" not in html_of(response)
    assert row_ids(html_of(response)) == [task_id]


def test_tasks_page_reports_bounded_count(client, monkeypatch):
    monkeypatch.setattr(listing, "COUNT_LIMIT", 2)
    for _ in range(3):
        submit()

    html = html_of(client.get("/tasks"))

    assert "More than 2 tasks match" in html


def test_dashboard_links_to_tasks_with_filters(client):
    html = html_of(client.get("/?status=FAILED"))

    assert 'href="/tasks?status=FAILED"' in html


# Actions from the page


def test_bulk_cancel_asks_confirmation_with_count(client):
    first, second = submit(), submit()

    response = post_action(client, {"action": "cancel", "scope": "selected",
                                    "task_id": [str(first), str(second)]})

    assert response.status_code == 200
    assert "Cancel 2 tasks?" in html_of(response)
    assert "Yes, cancel 2 tasks" in html_of(response)
    assert reload(first).status == TaskStatus.PENDING


def test_bulk_cancel_confirmed_changes_and_reports(client):
    first, second = submit(), submit()
    fields = {"action": "cancel", "scope": "selected", "task_id": [str(first), str(second)],
              "confirmed": "1", "status": "PENDING"}

    response = post_action(client, fields)

    assert response.status_code == 303
    assert response.headers["Location"] == "/tasks?status=PENDING"
    assert reload(first).status == TaskStatus.CANCELLED
    assert "2 tasks cancelled." in flash_text(client)
    event = db.session.scalars(select(TaskEvent).where(TaskEvent.task_id == first)
                               .order_by(TaskEvent.id.desc())).first()
    assert event.message == "Cancelled by a person from the tasks page"


def test_second_confirmed_click_says_nothing_changed(client):
    task_id = submit()
    fields = {"action": "cancel", "task_id": str(task_id), "confirmed": "1"}
    post_action(client, fields)
    client.get("/tasks")

    post_action(client, fields)

    assert "Nothing changed: 1 task skipped (1 already CANCELLED)." in flash_text(client)


def test_confirmation_lists_skipped_reasons(client):
    waiting = submit()
    done = failed("RuntimeError: x")

    html = html_of(post_action(client, {"action": "retry", "task_id": [str(waiting), str(done)]}))

    assert "Yes, retry 1 task" in html
    assert "1 status is PENDING" in html


def test_confirmation_without_changeable_task_has_no_button(client):
    task_id = submit()

    html = html_of(post_action(client, {"action": "retry", "task_id": str(task_id)}))

    assert "None of these tasks can be retried." in html
    assert "Yes, retry" not in html


def test_row_cancel_acts_without_confirmation(client):
    task_id = submit()

    response = post_action(client, {"row_action": f"cancel:{task_id}"})

    assert response.status_code == 303
    assert reload(task_id).status == TaskStatus.CANCELLED


def test_row_delete_asks_confirmation(client):
    task_id = submit()

    response = post_action(client, {"row_action": f"delete:{task_id}"})

    assert response.status_code == 200
    assert "Delete 1 task?" in html_of(response)
    assert reload(task_id) is not None


def test_row_run_now_makes_task_due(client):
    task_id = submit(delay_seconds=3600)
    assert "Run now" in html_of(client.get("/tasks"))

    post_action(client, {"row_action": f"run_now:{task_id}"})

    assert reload(task_id).run_at <= datetime.now(UTC)
    assert "1 task made due now." in flash_text(client)


def test_all_matching_confirmation_counts_and_applies(client):
    words = [submit() for _ in range(3)]
    noop = submit("noop")

    html = html_of(post_action(client, {"action": "delete", "scope": "matching",
                                        "type": "word_count"}))
    max_id = re.search(r'name="max_id" value="(\d+)"', html).group(1)
    later = submit()
    response = post_action(client, {"action": "delete", "scope": "matching", "type": "word_count",
                                    "confirmed": "1", "max_id": max_id})

    assert "<strong>3</strong> of them can be deleted" in html
    assert response.status_code == 303
    assert [reload(task_id) for task_id in words] == [None, None, None]
    assert reload(noop) is not None
    assert reload(later) is not None


def test_action_without_selection_flashes_error(client):
    submit()

    response = post_action(client, {"action": "cancel", "scope": "selected"})

    assert response.status_code == 303
    assert "No task is selected" in flash_text(client)


@pytest.mark.parametrize("fields", [
    {"action": "explode", "task_id": "1"},
    {"action": "cancel", "task_id": "one"},
    {"action": "cancel", "scope": "everything", "task_id": "1"},
    {"row_action": "cancel:x"},
    {"action": "cancel", "scope": "matching", "status": "NOPE"},
])
def test_action_rejects_bad_form(client, fields):
    task_id = submit()

    response = post_action(client, {**fields, "confirmed": "1"})

    assert response.status_code == 400
    assert reload(task_id).status == TaskStatus.PENDING


def test_action_needs_csrf_token(client):
    task_id = submit()

    response = client.post("/tasks/actions", data={"action": "cancel", "task_id": str(task_id),
                                                   "confirmed": "1"})

    assert response.status_code == 400
    assert reload(task_id).status == TaskStatus.PENDING


def test_task_text_is_escaped(client):
    failed("<script>alert(1)</script>")

    html = html_of(client.get("/tasks"))

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html


# Indexes


def test_tasks_page_indexes_exist(app):
    names = {"ix_tasks_started_at_id", "ix_tasks_finished_at_id", "ix_tasks_duration",
             "ix_tasks_status_created_at", "ix_tasks_type_created_at",
             "ix_tasks_queue_created_at", "ix_tasks_status_started_at",
             "ix_tasks_status_finished_at", "ix_tasks_status_duration",
             "ix_tasks_type_finished_at", "ix_tasks_type_duration", "ix_task_events_level_id"}
    if db.engine.dialect.name == "sqlite":
        query = text("SELECT name FROM sqlite_master WHERE type = 'index'")
    else:
        query = text("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")

    found = set(db.session.scalars(query))

    assert names <= found


def test_duration_sort_reads_its_index(app):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL plans a small table with a sequential scan")
    statement = listing._phase_statement(listing.TaskFilter(), "duration", True, None,
                                         null_phase=False).limit(51)
    compiled = str(statement.compile(db.engine, compile_kwargs={"literal_binds": True}))

    plan = " ".join(str(row) for row in db.session.connection().exec_driver_sql(
        f"EXPLAIN QUERY PLAN {compiled}"))

    assert "ix_tasks_duration" in plan
    assert "TEMP B-TREE" not in plan


def test_bad_filter_with_htmx_gets_422(client):
    response = client.get("/tasks?status=DONE", headers={"HX-Request": "true"})

    assert response.status_code == 422
    assert "<li>status must be one of" in html_of(response)


def test_page_scope_acts_on_rows_shown(client, app):
    app.config["PAGE_SIZE"] = 2
    older, newer, newest = submit(), submit(), submit()
    html = html_of(client.get("/tasks"))
    page_ids = re.findall(r'name="page_task_id" value="(\d+)"', html)

    response = post_action(client, {"action": "cancel", "scope": "page", "page_task_id": page_ids})

    assert page_ids == [str(newest), str(newer)]
    assert "Cancel 2 tasks?" in html_of(response)
    assert reload(older).status == TaskStatus.PENDING
