"""The queues page in Chromium: pause and resume a queue from its row."""

import pytest

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright is not installed; run make install-dev")
expect = sync_api.expect
Error = sync_api.Error


def queue_row(page, name: str):
    return page.locator("#queues tbody tr").filter(
        has=page.get_by_role("rowheader", name=name, exact=True))


def test_pause_and_resume_queue(page, problems, api):
    api.wait_until_finished([api.submit({"type": "noop", "queue": "reports"})])
    page.goto("/queues")
    row = queue_row(page, "reports")
    expect(row).to_contain_text("Running")

    page.get_by_role("button", name="Pause queue reports").click()

    expect(row).to_contain_text("Paused")
    expect(page.get_by_role("button", name="Resume queue reports")).to_be_visible()
    waiting = api.submit({"type": "noop", "queue": "reports"})
    # Workers read the pause at every claim, so the task waits; the page
    # counts it once a refresh has run.
    expect(row.locator("td").nth(2)).to_have_text("1")
    assert api.get(waiting)["status"] == "PENDING"

    page.get_by_role("button", name="Resume queue reports").click()

    expect(row).to_contain_text("Running")
    assert api.wait_until_finished([waiting])[0]["status"] == "SUCCEEDED"
    assert problems.all() == []


def test_pause_during_refresh_logs_no_error(page, problems, api):
    """Pause clicked while a refresh is in flight works, and nothing is logged as an error."""
    api.wait_until_finished([api.submit({"type": "noop", "queue": "reports"})])
    page.goto("/queues")
    expect(queue_row(page, "reports")).to_contain_text("Running")
    held_refreshes = []

    def hold_first(route):
        # The first refresh stays in flight until the end of the test, so the click lands meanwhile.
        if held_refreshes:
            route.continue_()
        else:
            held_refreshes.append(route)

    page.route("**/partials/queues", hold_first)
    with page.expect_request("**/partials/queues"):
        pass

    page.get_by_role("button", name="Pause queue reports").click()

    expect(queue_row(page, "reports")).to_contain_text("Paused")
    page.unroute("**/partials/queues")
    for route in held_refreshes:
        try:
            route.continue_()
        except Error:
            pass  # the page aborted the request, so there is nothing to continue
    assert problems.all() == []
