"""Every page in Chromium: no console errors or CSP violations, keyboard access, paced refresh."""

import re
import time

import pytest

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright is not installed; run make install-dev")
expect = sync_api.expect

# Every page a person reaches from the navigation, and the pages of the
# failed, finished, running and scheduled tasks that seed_mixed_tasks submits.
PAGES = ["/", "/tasks", "/tasks/1", "/tasks/2", "/tasks/3", "/tasks/4", "/events", "/queues",
         "/workers", "/metrics"]

LIVE_REGIONS = '[hx-trigger*="live-refresh"]'


def seed_mixed_tasks(api) -> None:
    """Submit a failed task with a traceback, a finished, a running and a scheduled one."""
    failing = api.submit({"type": "fail", "queue": "mail", "max_attempts": 1,
                          "params": {"message": "SMTP server did not respond within 30 s"}})
    finished = api.submit({"type": "word_count", "params": {"text": "one two"}})
    api.wait_until_finished([failing, finished])
    api.submit({"type": "sleep", "params": {"seconds": 30}, "queue": "reports"})
    api.submit({"type": "noop", "queue": "reports", "delay_seconds": 3600})


def wait_for_one_refresh(page) -> None:
    """Wait until a live region's refresh has come back, when the page has live regions."""
    if page.locator(LIVE_REGIONS).count() == 0:
        return
    with page.expect_response(lambda response: "/partials/" in response.url) as response_info:
        pass
    assert response_info.value.ok, f"{response_info.value.url} returned {response_info.value.status}"


def test_pages_log_no_errors(open_page, api):
    seed_mixed_tasks(api)
    found = {}

    for path in PAGES:
        page, problems = open_page()
        response = page.goto(path)

        assert response.status == 200, f"{path} returned {response.status}"
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        wait_for_one_refresh(page)
        page.close()
        if problems.failed_loads or problems.all():
            found[path] = [text for text, _ in problems.failed_loads] + problems.all()

    assert found == {}


def test_tables_fit_desktop_width(page, api):
    """At 1280 px no table is cut off or needs sideways scrolling."""
    seed_mixed_tasks(api)
    found = {}

    for path in ["/", "/tasks", "/events", "/queues", "/workers"]:
        page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()

        page_width = page.evaluate("document.documentElement.scrollWidth")
        overflowing = page.evaluate("""() => Array.from(document.querySelectorAll("table"))
            .map((table) => [table.closest("[id]")?.id || "no id", table.parentElement])
            .filter(([, box]) => box.scrollWidth > box.clientWidth + 1)
            .map(([id, box]) => `table in #${id}: ${box.scrollWidth} px in ${box.clientWidth} px`)""")
        if page_width > 1280:
            overflowing.append(f"page: {page_width} px")
        if overflowing:
            found[path] = overflowing

    assert found == {}


# The checks below concern only the browser side, which is the same on both
# databases, so they run on SQLite alone.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@sqlite_only
def test_pages_fit_phone_width(browser, live_server, api):
    """At 390 px no page scrolls sideways, because wide tables scroll inside their own box."""
    seed_mixed_tasks(api)
    context = browser.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    found = {}
    try:
        page = context.new_page()
        for path in PAGES:
            page.goto(path)
            expect(page.get_by_role("heading", level=1)).to_be_visible()
            page_width = page.evaluate("document.documentElement.scrollWidth")
            if page_width > 390:
                found[path] = page_width
    finally:
        context.close()

    assert found == {}


@sqlite_only
def test_csp_violation_is_detected(page, problems):
    """The CSP listener works: an inline script that the policy blocks is reported."""
    page.goto("/events")

    page.evaluate("""() => {
        const script = document.createElement("script");
        script.textContent = "window.inlineScriptRan = true";
        document.body.append(script);
    }""")

    expect(page.locator("body")).to_be_visible()
    assert page.evaluate("window.inlineScriptRan === undefined")
    page.wait_for_function("true")  # one round trip, so the reported violation has arrived
    assert len(problems.csp_violations) == 1
    assert problems.csp_violations[0].startswith("script-src")


def focused_names(page, max_presses: int = 120) -> list[str]:
    """Press Tab until focus leaves the page, and return each focused control as 'tag: label'.

    Every control that takes focus must have an accessible name; the test
    fails at the first one without.
    """
    names = []
    for _ in range(max_presses):
        page.keyboard.press("Tab")
        focused = page.locator("*:focus")
        if focused.count() == 0:
            break
        description = focused.evaluate(
            "element => element.tagName.toLowerCase()"
            " + (element.type ? '[' + element.type + ']' : '')"
            " + (element.id ? '#' + element.id : '')")
        expect(focused, f"{description} has no accessible name").to_have_accessible_name(
            re.compile(r"\S"))
        # A short label for the report: the tag and its visible or ARIA label.
        entry = focused.evaluate("""element => {
            const label = element.getAttribute("aria-label")
                || (element.labels && element.labels.length ? element.labels[0].innerText : "")
                || element.innerText || "";
            return element.tagName.toLowerCase() + ": " + label.replace(/\\s+/g, " ").trim();
        }""")
        names.append(entry)
    return names


def stop_refreshes(page, path: str) -> None:
    """Open `path` with the page's timers stopped, so no live refresh moves the focus meanwhile."""
    page.clock.install()
    page.goto(path)
    page.clock.pause_at(page.evaluate("Date.now()") + 1000)


@sqlite_only
def test_dashboard_keyboard_reaches_controls(page, problems):
    stop_refreshes(page, "/")

    names = focused_names(page)

    joined = "\n".join(names)
    for expected in ["a: Skip to content", "a: Dashboard", "a: Tasks", "a: Events",
                     "button: Pause live updates", "select: Task type", "textarea: Text",
                     "input: Priority", "button: Submit task"]:
        assert expected in joined, f"{expected!r} not reached with Tab; reached:\n{joined}"
    assert problems.all() == []


@sqlite_only
def test_tasks_page_keyboard_reaches_controls(page, problems, api):
    task_id = api.submit({"type": "noop"})
    api.wait_until_finished([task_id])
    stop_refreshes(page, "/tasks")

    names = focused_names(page)

    joined = "\n".join(names)
    for expected in ["input: Search", "select: Status", "button: Show tasks",
                     f"input: Tick task {task_id}", "select: Action",
                     "button: Apply to ticked tasks", f"a: #{task_id}"]:
        assert expected in joined, f"{expected!r} not reached with Tab; reached:\n{joined}"
    assert problems.all() == []


@sqlite_only
def test_task_page_keyboard_reaches_actions(page, problems, api):
    task_id = api.submit({"type": "sleep", "params": {"seconds": 30}})
    stop_refreshes(page, f"/tasks/{task_id}")
    expect(page.get_by_role("button", name="Cancel task")).to_be_visible()

    names = focused_names(page)

    joined = "\n".join(names)
    for expected in ["a: Dashboard", "button: Cancel task", "a: Every event of this task"]:
        assert expected in joined, f"{expected!r} not reached with Tab; reached:\n{joined}"
    assert problems.all() == []


@sqlite_only
def test_skip_link_moves_focus_to_main(page, problems):
    page.goto("/events")

    page.keyboard.press("Tab")
    expect(page.locator("*:focus")).to_have_text("Skip to content")
    page.keyboard.press("Enter")

    expect(page.locator("main")).to_be_focused()
    assert problems.all() == []


def count_live_requests(page) -> None:
    """Count the requests htmx starts from now on in window.liveRequests.

    window.liveInFlight counts those that have not come back yet.
    """
    page.evaluate("""() => {
        window.liveRequests = 0;
        window.liveInFlight = 0;
        document.addEventListener("htmx:beforeRequest", () => {
            window.liveRequests += 1;
            window.liveInFlight += 1;
        });
        document.addEventListener("htmx:afterRequest", () => { window.liveInFlight -= 1; });
    }""")


def wait_for_live_requests(page, expression: str = "window.liveInFlight === 0") -> None:
    """Wait in real time until `expression` is true in the page.

    The tests that install Playwright's clock pause the page's timers, so this
    polls from the test instead of with page.wait_for_function.
    """
    deadline = time.monotonic() + 10
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after 10 s: {expression}"
        time.sleep(0.02)


def set_visibility(page, state: str) -> None:
    """Make the document report `state` ("hidden" or "visible") and announce the change."""
    page.evaluate("""(state) => {
        Object.defineProperty(document, "visibilityState", {value: state, configurable: true});
        Object.defineProperty(document, "hidden", {value: state === "hidden", configurable: true});
        document.dispatchEvent(new Event("visibilitychange"));
    }""", state)


@sqlite_only
def test_refresh_pauses_while_hidden(page, problems):
    # The page's timers run on Playwright's clock, so the test moves time
    # forward itself and never waits for real intervals.
    page.clock.install()
    page.goto("/tasks")
    page.clock.pause_at(page.evaluate("Date.now()") + 1000)
    interval = int(page.locator("body").get_attribute("data-refresh-interval"))
    count_live_requests(page)

    page.clock.run_for(interval * 3)
    requests_visible = page.evaluate("window.liveRequests")
    assert requests_visible >= 1
    # A tick skips a region whose refresh is still in flight, which would hide
    # the made-up refresh below, so the last one comes back first.
    wait_for_live_requests(page)

    set_visibility(page, "hidden")
    page.evaluate("window.liveRequests = 0")
    page.clock.run_for(interval * 10)
    assert page.evaluate("window.liveRequests") == 0

    # Back in view, the skipped refresh is made up at once, and only once.
    set_visibility(page, "visible")
    wait_for_live_requests(page, "window.liveRequests >= 1")
    wait_for_live_requests(page)
    assert page.evaluate("window.liveRequests") == 1
    assert problems.all() == []


@sqlite_only
def test_pause_button_stops_refresh(page, problems):
    page.clock.install()
    page.goto("/tasks")
    page.clock.pause_at(page.evaluate("Date.now()") + 1000)
    interval = int(page.locator("body").get_attribute("data-refresh-interval"))
    count_live_requests(page)
    toggle = page.get_by_role("button", name="Pause live updates")

    toggle.click()

    expect(page.get_by_role("button", name="Resume live updates")).to_be_visible()
    expect(page.locator("#live-state")).to_have_text("Live updates paused.")
    page.clock.run_for(interval * 10)
    assert page.evaluate("window.liveRequests") == 0

    # The choice holds on the next page, until the reader resumes.
    page.goto("/")
    expect(page.get_by_role("button", name="Resume live updates")).to_be_visible()
    count_live_requests(page)
    page.get_by_role("button", name="Resume live updates").click()
    expect(page.get_by_role("button", name="Pause live updates")).to_be_visible()
    wait_for_live_requests(page, "window.liveRequests >= 1")
    assert problems.all() == []


def details_fragment(task_id: int, version: int, first_open: bool, second_open: bool) -> str:
    """Return a task page's live region holding two <details>, rendered open or closed."""
    def details(name: str, is_open: bool) -> str:
        return (f'<details id="{name}"{" open" if is_open else ""}>'
                f'<summary>{name.title()} panel</summary><p>Body of {name}</p></details>')

    url = f"/partials/tasks/{task_id}"
    return (f'<div id="task-live" hx-get="{url}" hx-trigger="live-refresh" hx-swap="outerHTML" '
            f'hx-sync="this:drop"><p id="version">{version}</p>'
            f'{details("first", first_open)}{details("second", second_open)}</div>')


@sqlite_only
def test_refresh_keeps_toggled_details(page, problems, api):
    """A <details> the reader toggled keeps their choice; the others follow the server."""
    task_id = api.submit({"type": "noop", "delay_seconds": 3600})
    served = {"version": 0, "first": False, "second": False}

    def serve_fragment(route):
        served["version"] += 1
        route.fulfill(status=200, content_type="text/html; charset=utf-8",
                      body=details_fragment(task_id, served["version"],
                                            served["first"], served["second"]))

    def next_refresh() -> None:
        """Wait until a fragment served from now on has replaced the region."""
        expect(page.locator("#version")).to_have_text(str(served["version"] + 1))

    page.route(f"**/partials/tasks/{task_id}", serve_fragment)
    page.goto(f"/tasks/{task_id}")
    first, second = page.locator("#first"), page.locator("#second")
    next_refresh()
    expect(first).to_have_js_property("open", False)

    page.get_by_text("Second panel").click()
    expect(second).to_have_js_property("open", True)
    # The server now renders the first panel open, as the task page does
    # with an attempt's error once the error is stored.
    served["first"] = True
    next_refresh()
    next_refresh()
    expect(first).to_have_js_property("open", True)
    expect(second).to_have_js_property("open", True)

    page.get_by_text("First panel").click()
    expect(first).to_have_js_property("open", False)
    next_refresh()
    next_refresh()
    expect(first).to_have_js_property("open", False)
    expect(second).to_have_js_property("open", True)
    assert problems.all() == []
