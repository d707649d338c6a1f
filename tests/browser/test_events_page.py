"""The event log in Chromium: filters in the URL and new events arriving live."""

import re

import pytest

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright is not installed; run make install-dev")
expect = sync_api.expect


def test_level_filter_shows_only_errors(page, problems, api):
    failing = api.submit({"type": "fail", "params": {"message": "disk full"}, "max_attempts": 1})
    finished = api.submit({"type": "noop"})
    api.wait_until_finished([failing, finished])
    page.goto("/events")

    page.get_by_label("Level").select_option("error")
    page.get_by_role("button", name="Filter").click()

    expect(page).to_have_url(re.compile(r"/events\?(.*&)?level=error"))
    rows = page.locator("#events tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(f"#{failing}")
    expect(rows.first).to_contain_text("disk full")
    expect(page.get_by_role("link", name="Clear filters")).to_be_visible()
    assert problems.all() == []


def test_new_events_appear_without_reload(page, problems, api):
    page.goto("/events")
    page.evaluate("window.taskboardTestMark = 'still the same document'")

    task_id = api.submit({"type": "word_count", "params": {"text": "live events"}})

    task_rows = page.locator("#events tbody tr").filter(
        has=page.get_by_role("link", name=f"#{task_id}", exact=True))
    expect(task_rows.filter(has_text="succeeded")).to_have_count(1)
    expect(task_rows.filter(has_text="submitted")).to_have_count(1)
    assert page.evaluate("window.taskboardTestMark") == "still the same document"
    assert problems.all() == []
