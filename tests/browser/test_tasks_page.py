"""The tasks page in Chromium: filters in the URL, ticked tasks and bulk actions."""

import re

import pytest

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright is not installed; run make install-dev")
expect = sync_api.expect


def list_row(page, task_id: int):
    return page.locator(f"#task-list tr#task-{task_id}")


def tick_box(page, task_id: int):
    return page.get_by_role("checkbox", name=f"Tick task {task_id}", exact=True)


def seed_failed_and_succeeded(api) -> tuple[list[int], list[int]]:
    """Submit three tasks that fail at once and two that succeed, and wait for all five."""
    failed = [api.submit({"type": "fail", "params": {"message": f"disk {number} full"},
                          "max_attempts": 1})
              for number in (1, 2, 3)]
    succeeded = [api.submit({"type": "noop"}) for _ in range(2)]
    api.wait_until_finished(failed + succeeded)
    return failed, succeeded


def test_status_filter_goes_into_url(page, problems, api):
    failed, succeeded = seed_failed_and_succeeded(api)
    page.goto("/tasks")
    expect(page.locator("#task-list tbody tr")).to_have_count(5)

    page.get_by_label("Status").select_option("FAILED")
    page.get_by_role("button", name="Show tasks").click()

    expect(page).to_have_url(re.compile(r"/tasks\?(.*&)?status=FAILED"))
    expect(page.locator("#task-list tbody tr")).to_have_count(3)
    for task_id in failed:
        expect(list_row(page, task_id).locator(".status")).to_have_text("FAILED")
    for task_id in succeeded:
        expect(list_row(page, task_id)).to_have_count(0)
    expect(page.locator("#list-summary")).to_contain_text("3 tasks match")
    assert problems.all() == []


def test_filter_url_reload_and_back(page, problems, api):
    """A filtered view survives a reload, and the back button returns to the full list."""
    failed, _ = seed_failed_and_succeeded(api)
    page.goto("/tasks")
    expect(page.locator("#task-list tbody tr")).to_have_count(5)

    page.get_by_label("Search").fill("disk 2 full")
    page.get_by_role("button", name="Show tasks").click()
    expect(page).to_have_url(re.compile(r"q=disk(\+|%20)2(\+|%20)full"))
    expect(page.locator("#task-list tbody tr")).to_have_count(1)

    page.reload()
    expect(page.get_by_label("Search")).to_have_value("disk 2 full")
    expect(page.locator("#task-list tbody tr")).to_have_count(1)
    expect(list_row(page, failed[1])).to_have_count(1)

    page.go_back()
    expect(page).to_have_url(re.compile(r"/tasks$"))
    expect(page.locator("#task-list tbody tr")).to_have_count(5)
    assert problems.all() == []


def test_bulk_retry_ticked_tasks(page, problems, api):
    failed, _ = seed_failed_and_succeeded(api)
    page.goto("/tasks?status=FAILED")
    expect(page.locator("#task-list tbody tr")).to_have_count(3)

    tick_box(page, failed[0]).check()
    tick_box(page, failed[2]).check()
    page.get_by_label("Action", exact=True).select_option("retry")
    page.get_by_role("button", name="Apply to ticked tasks").click()

    # Acting on several tasks first shows a confirmation with the number that will change.
    expect(page.get_by_role("heading", level=1)).to_have_text("Retry 2 tasks?")
    # The form lists the ticked ids in the table's order, newest first.
    expect(page.locator("main")).to_contain_text(
        f"2 tasks will be retried: #{failed[2]}, #{failed[0]}.")
    page.get_by_role("button", name="Yes, retry 2 tasks").click()

    expect(page).to_have_url(re.compile(r"/tasks\?(.*&)?status=FAILED"))
    expect(page.get_by_role("status").filter(has_text="retried")).to_contain_text("2 tasks")
    # The retried tasks ran their extra attempt, which failed again; the
    # unticked task kept its single attempt.
    tasks = api.wait_until_finished(failed)
    assert [task["attempts"] for task in tasks] == [2, 1, 2]
    expect(list_row(page, failed[0])).to_contain_text("2 / 2")
    expect(list_row(page, failed[1])).to_contain_text("1 / 1")
    expect(list_row(page, failed[2])).to_contain_text("2 / 2")
    assert problems.all() == []


def test_bulk_retry_every_matching_task(page, problems, api):
    failed, succeeded = seed_failed_and_succeeded(api)
    page.goto("/tasks?status=FAILED")
    expect(page.locator("#task-list tbody tr")).to_have_count(3)

    page.get_by_label("Action", exact=True).select_option("retry")
    page.get_by_role("button", name="Apply to every matching task").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Retry every matching task?")
    expect(page.locator("main")).to_contain_text("status FAILED")
    page.get_by_role("button", name="Yes, retry 3 tasks").click()

    expect(page.get_by_role("status").filter(has_text="retried")).to_contain_text("3 tasks")
    tasks = api.wait_until_finished(failed + succeeded)
    assert [task["attempts"] for task in tasks] == [2, 2, 2, 1, 1]
    assert problems.all() == []


def test_bulk_action_back_leaves_tasks_alone(page, problems, api):
    failed, _ = seed_failed_and_succeeded(api)
    page.goto("/tasks?status=FAILED")
    tick_box(page, failed[0]).check()
    page.get_by_label("Action", exact=True).select_option("delete")
    page.get_by_role("button", name="Apply to ticked tasks").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Delete 1 task?")

    page.get_by_role("link", name="Back to the tasks").click()

    expect(page).to_have_url(re.compile(r"/tasks\?(.*&)?status=FAILED"))
    expect(page.locator("#task-list tbody tr")).to_have_count(3)
    assert api.get(failed[0])["status"] == "FAILED"
    assert problems.all() == []


def test_bulk_action_nothing_ticked_says_so(page, problems, api):
    seed_failed_and_succeeded(api)
    page.goto("/tasks")
    expect(page.locator("#task-list tbody tr")).to_have_count(5)

    page.get_by_role("button", name="Apply to ticked tasks").click()

    expect(page.get_by_role("alert")).to_contain_text("No task is selected")
    expect(page.locator("#task-list tbody tr")).to_have_count(5)
    assert problems.all() == []


def test_refresh_keeps_ticks_and_typed_text(page, problems, api):
    """A live refresh that changes a ticked row keeps the tick, and typed text stays."""
    running = api.submit({"type": "sleep", "params": {"seconds": 3}})
    page.goto("/tasks")
    expect(list_row(page, running).locator(".status")).to_have_text("PROCESSING")

    tick_box(page, running).check()
    search = page.get_by_label("Search")
    search.fill("not submitted yet")

    # The row changes only through a refresh that replaces the table.
    expect(list_row(page, running).locator(".status")).to_have_text("SUCCEEDED")
    expect(tick_box(page, running)).to_be_checked()
    expect(search).to_have_value("not submitted yet")
    expect(search).to_be_focused()
    assert problems.all() == []


def test_filter_and_bulk_retry_without_javascript(browser, live_server, api):
    """With scripts off, the filter form and the bulk action still work as plain forms."""
    failed, _ = seed_failed_and_succeeded(api)
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto("/tasks")
        page.get_by_label("Status").select_option("FAILED")
        page.get_by_role("button", name="Show tasks").click()
        expect(page).to_have_url(re.compile(r"/tasks\?(.*&)?status=FAILED"))
        expect(page.locator("#task-list tbody tr")).to_have_count(3)

        tick_box(page, failed[1]).check()
        page.get_by_label("Action", exact=True).select_option("retry")
        page.get_by_role("button", name="Apply to ticked tasks").click()
        page.get_by_role("button", name="Yes, retry 1 task").click()

        expect(page.locator(".flash-success")).to_contain_text("1 task retried")
    finally:
        context.close()
    tasks = api.wait_until_finished(failed)
    assert [task["attempts"] for task in tasks] == [1, 2, 1]
