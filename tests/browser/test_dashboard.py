"""The dashboard and task pages in Chromium: submit, watch, cancel, retry, run now and delete."""

import pytest

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright is not installed; run make install-dev")
expect = sync_api.expect
Error = sync_api.Error


def task_row(page, task_id: int):
    """Return the dashboard table row of one task, found by the link to its page."""
    link = page.get_by_role("link", name=f"#{task_id}", exact=True)
    return page.locator("#tasks tbody tr").filter(has=link)


def task_status(page):
    """Return the status badge on a task page."""
    return page.get_by_role("region", name="Status").locator(".status").first


def mark_document(page) -> None:
    """Tag the current document, so that a later check can tell whether the page reloaded."""
    page.evaluate("window.taskboardTestMark = 'still the same document'")


def assert_same_document(page) -> None:
    mark = page.evaluate("window.taskboardTestMark")
    assert mark == "still the same document", "the page reloaded or navigated"


def test_submit_form_row_reaches_succeeded(page, problems):
    page.goto("/")
    mark_document(page)

    page.get_by_label("Text").fill("one two three\nfour")
    page.get_by_role("button", name="Submit task").click()

    notice = page.locator("#submit-form").get_by_role("status")
    expect(notice).to_contain_text("Task #1 submitted (word_count).")
    row = task_row(page, 1)
    expect(row).to_have_count(1)
    expect(row.locator(".status")).to_have_text("SUCCEEDED")
    expect(row).to_contain_text("word_count")
    expect(row).to_contain_text("1 / 3")
    # The form came back empty for the next task, on the type just used.
    expect(page.get_by_label("Text")).to_have_value("")
    expect(page.get_by_label("Task type")).to_have_value("word_count")
    assert_same_document(page)
    assert problems.all() == []


def test_submit_form_browser_checks_range(page, problems):
    page.goto("/")
    requests = []
    page.on("request", lambda request: requests.append(request)
            if request.method == "POST" else None)

    page.get_by_label("Priority").fill("500")
    page.get_by_label("Text").fill("some text")
    page.get_by_role("button", name="Submit task").click()

    # The field's max attribute stops the submission in the browser.
    message = page.get_by_label("Priority").evaluate("field => field.validationMessage")
    assert "100" in message
    assert requests == []
    assert problems.all() == []


def test_submit_form_server_error_names_field(page, problems, live_server):
    """With the browser's checks off, the server rejects the value and names the field."""
    page.goto("/")
    mark_document(page)
    page.locator("#submit-form").evaluate("form => { form.noValidate = true; }")

    page.get_by_label("Priority").fill("500")
    page.get_by_label("Text").fill("some text")
    page.get_by_role("button", name="Submit task").click()

    error = page.locator("#submit-form .field-error")
    expect(error).to_have_count(1)
    expect(error).to_contain_text("100")
    expect(page.locator("#submit-form .has-error")).to_contain_text("Priority")
    # The typed text survives the rejection, and no task was made.
    expect(page.get_by_label("Text")).to_have_value("some text")
    expect(page.locator("#tasks")).to_contain_text("No tasks yet")
    assert_same_document(page)
    # The 422 response carries the form with its errors, which htmx swaps in
    # like a success. Chromium logs the status, and no script logs an error.
    assert [url for _, url in problems.failed_loads] == [f"{live_server.url}/"]
    assert problems.all() == []


def test_type_change_shows_its_fields(page, problems):
    page.goto("/")

    page.get_by_label("Task type").select_option("sleep")

    expect(page.get_by_label("Seconds", exact=True)).to_be_visible()
    expect(page.get_by_label("Text")).to_have_count(0)
    page.get_by_label("Seconds", exact=True).fill("0")
    page.get_by_role("button", name="Submit task").click()

    expect(page.locator("#submit-form").get_by_role("status")).to_contain_text(
        "Task #1 submitted (sleep).")
    expect(task_row(page, 1).locator(".status")).to_have_text("SUCCEEDED")
    assert problems.all() == []


def test_submit_without_javascript(browser, live_server):
    """The form works as a plain POST with a redirect when scripts are off."""
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto("/")
        page.get_by_label("Text").fill("alpha beta")
        with page.expect_navigation():
            page.get_by_role("button", name="Submit task").click()

        assert page.url == f"{live_server.url}/"
        expect(page.locator(".flash-success")).to_have_text("Task #1 submitted (word_count).")
        expect(task_row(page, 1)).to_have_count(1)
    finally:
        context.close()


def test_cancel_then_retry_from_task_page(page, problems, api):
    task_id = api.submit({"type": "sleep", "params": {"seconds": 60}})
    page.goto(f"/tasks/{task_id}")
    mark_document(page)
    status = task_status(page)
    expect(status).to_have_text("PROCESSING")

    page.get_by_role("button", name="Cancel task").click()

    # The sleep handler checks for a cancel while it waits, so the task ends
    # CANCELLED within a heartbeat, and the live part shows it without a reload.
    expect(status).to_have_text("CANCELLED")
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)
    retry = page.get_by_role("button", name="Retry task")
    expect(retry).to_be_visible()

    with page.expect_response(f"**/tasks/{task_id}/retry") as retry_response:
        retry.click()

    # The next refresh replaces the notice, so the test reads it from the response.
    assert retry_response.value.status == 200
    assert f"Task {task_id} requeued" in retry_response.value.text()
    expect(status).to_have_text("PROCESSING")
    expect(page.get_by_role("region", name="Status")).to_contain_text("2 / ")
    page.get_by_role("button", name="Cancel task").click()
    expect(status).to_have_text("CANCELLED")
    expect(page.get_by_role("heading", name="Attempt 2", exact=True)).to_be_visible()
    assert_same_document(page)
    assert problems.all() == []


def test_cancel_during_refresh_logs_no_error(page, problems, api):
    """Cancel clicked while a refresh is in flight works, and nothing is logged as an error."""
    task_id = api.submit({"type": "sleep", "params": {"seconds": 60}})
    page.goto(f"/tasks/{task_id}")
    expect(task_status(page)).to_have_text("PROCESSING")
    held_refreshes = []

    def hold_first(route):
        # The first refresh stays in flight until the end of the test, so the click lands meanwhile.
        if held_refreshes:
            route.continue_()
        else:
            held_refreshes.append(route)

    page.route(f"**/partials/tasks/{task_id}", hold_first)
    with page.expect_request(f"**/partials/tasks/{task_id}"):
        pass

    page.get_by_role("button", name="Cancel task").click()

    expect(task_status(page)).to_have_text("CANCELLED")
    page.unroute(f"**/partials/tasks/{task_id}")
    for route in held_refreshes:
        try:
            route.continue_()
        except Error:
            pass  # the page aborted the request, so there is nothing to continue
    assert problems.all() == []


def test_failed_task_shows_traceback_and_retries(page, problems, api):
    task_id = api.submit({"type": "fail", "params": {"message": "disk full"},
                         "max_attempts": 1})
    page.goto(f"/tasks/{task_id}")
    status = task_status(page)

    expect(status).to_have_text("FAILED")
    expect(page.locator("#task-live")).to_contain_text("RuntimeError: disk full")
    # The traceback of a failed attempt shows without a click.
    expect(page.get_by_text("Traceback (most recent call last)").first).to_be_visible()

    page.get_by_role("button", name="Retry task").click()

    # The retry adds the attempt the task lacked, and that attempt fails again.
    expect(page.get_by_role("region", name="Status")).to_contain_text("2 / 2")
    expect(status).to_have_text("FAILED")
    expect(page.get_by_role("button", name="Retry task")).to_be_visible()
    assert problems.all() == []


def test_task_page_unknown_id_404(page, problems, live_server):
    response = page.goto("/tasks/999999")

    assert response.status == 404
    expect(page.get_by_role("heading", level=1)).to_contain_text("404")
    expect(page.locator("main")).to_contain_text("Task 999999 not found")
    assert [url for _, url in problems.failed_loads] == [f"{live_server.url}/tasks/999999"]
    assert problems.all() == []


def test_dashboard_shows_other_clients_tasks(page, problems, api):
    """A task submitted elsewhere appears, and finishes, through the live refresh alone."""
    page.goto("/")
    mark_document(page)
    expect(page.locator("#tasks")).to_contain_text("No tasks yet")

    task_id = api.submit({"type": "word_count", "params": {"text": "from the API"}})

    expect(task_row(page, task_id).locator(".status")).to_have_text("SUCCEEDED")
    succeeded_count = page.locator("#status-counts li").filter(has_text="SUCCEEDED")
    expect(succeeded_count.locator(".count-number")).to_have_text("1")
    assert_same_document(page)
    assert problems.all() == []


def test_type_select_arrow_keys_log_no_error(page, problems):
    """Arrow keys on the type select fetch fields for each type they pass, and the last one shows."""
    page.goto("/")
    select = page.get_by_label("Task type")
    select.select_option("fail")
    expect(page.get_by_label("Message")).to_be_visible()

    select.focus()
    for _ in range(3):
        page.keyboard.press("ArrowDown")

    expect(select).to_have_value("sleep")
    expect(page.get_by_label("Seconds", exact=True)).to_be_visible()
    assert problems.all() == []


def test_run_now_from_task_page(page, problems, api):
    task_id = api.submit({"type": "noop", "delay_seconds": 3600})
    page.goto(f"/tasks/{task_id}")
    status = task_status(page)
    expect(status).to_have_text("PENDING")

    page.get_by_role("button", name="Run now").click()

    expect(status).to_have_text("SUCCEEDED")
    expect(page.get_by_role("button", name="Run now")).to_have_count(0)
    assert problems.all() == []


def test_delete_from_task_page_after_confirmation(page, problems, api, live_server):
    task_id = api.submit({"type": "noop"})
    api.wait_until_finished([task_id])
    page.goto(f"/tasks/{task_id}")

    page.get_by_role("button", name="Delete task…").click()

    expect(page.get_by_role("heading", level=1)).to_have_text(f"Delete task {task_id}?")
    page.get_by_role("button", name=f"Delete task {task_id}").click()
    expect(page).to_have_url(f"{live_server.url}/tasks")
    expect(page.locator(".flash-success")).to_have_text(f"Task {task_id} deleted, with its events.")
    assert page.request.get(f"/api/tasks/{task_id}").status == 404
    assert problems.all() == []
