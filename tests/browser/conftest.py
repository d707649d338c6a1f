"""Fixtures for browser tests: a served Taskboard with its worker, and Chromium pages.

Each test gets a real HTTP server on a free loopback port, serving an
application on a fresh database (SQLite and PostgreSQL, through the
`database_url` fixture of tests/conftest.py) with the embedded worker running.
Playwright drives Debian's Chromium, never a browser that Playwright downloads
itself. Every test is skipped, with the reason, when Playwright or Chromium is
missing.
"""

import os
import threading
import time

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server

from app.extensions import db

# Without Playwright the browser fixture skips each test. A skip raised here,
# while pytest loads this file, would stop the whole run instead.
try:
    from playwright import sync_api
except ImportError:
    sync_api = None

PLAYWRIGHT_MISSING = "Playwright is not installed; run make install-dev"

# TASKBOARD_TEST_CHROMIUM names another Chromium or Chrome binary.
CHROMIUM_PATH = os.environ.get("TASKBOARD_TEST_CHROMIUM") or "/usr/bin/chromium"

# Milliseconds that any single Playwright action or expectation may take.
# Every state that the tests wait for comes within a few seconds, so this
# only bounds how long a failing test hangs.
TIMEOUT_MS = 15_000

# Settings of the served application, on top of the suite's BASE_CONFIG (fast
# polls, short backoff). The refresh interval is shorter than the default 2 s,
# so tests wait less for a refresh.
SERVER_CONFIG = {
    "TESTING": False,
    "EMBEDDED_WORKER": True,
    "REFRESH_INTERVAL": 0.5,
    "WORKER_CONCURRENCY": 2,
}


def _chromium_reason() -> str | None:
    if os.path.isfile(CHROMIUM_PATH) and os.access(CHROMIUM_PATH, os.X_OK):
        return None
    return (f"no Chromium at {CHROMIUM_PATH}: install Debian's chromium package "
            "(make test does, as root) or set TASKBOARD_TEST_CHROMIUM")


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium shared by the session's tests, each in its own context."""
    if sync_api is None:
        pytest.skip(PLAYWRIGHT_MISSING)
    reason = _chromium_reason()
    if reason:
        pytest.skip(reason)
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, timeout=TIMEOUT_MS, headless=True)
        yield browser
        browser.close()


class QuietRequestHandler(WSGIRequestHandler):
    """A request handler that leaves out the access log, a line per poll."""

    def log_request(self, code="-", size="-") -> None:
        pass


class LiveServer:
    """A Taskboard application served over HTTP on 127.0.0.1 from a thread."""

    def __init__(self, app):
        self.app = app
        self._server = make_server("127.0.0.1", 0, app, threaded=True,
                                   request_handler=QuietRequestHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="browser-test-server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        worker = self.app.extensions.get("taskboard.worker")
        if worker is not None:
            worker.stop(timeout=1)


@pytest.fixture
def live_server(make_app):
    """Serve an application with its embedded worker, and stop both afterwards.

    TESTING is off, as in production, so that create_app starts the embedded
    worker itself and unexpected errors render the error page.
    """
    app = make_app(**SERVER_CONFIG)
    assert "taskboard.worker" in app.extensions, "the embedded worker did not start"
    server = LiveServer(app)
    server.start()
    yield server
    server.stop()
    with app.app_context():
        db.session.remove()


class PageProblems:
    """Console errors, uncaught exceptions and CSP violations that a page reported.

    Chromium logs every HTTP response with a 4xx or 5xx status as a console
    error ("Failed to load resource"). Those go to `failed_loads`, as
    (status text, URL), apart from the errors a script logged, because some
    are by design: a rejected form returns 422 and a refused action 409.
    """

    def __init__(self):
        self.console_errors: list[str] = []
        self.failed_loads: list[tuple[str, str]] = []
        self.page_errors: list[str] = []
        self.csp_violations: list[str] = []

    def record_console_message(self, message) -> None:
        if message.type != "error":
            return
        if message.text.startswith("Failed to load resource"):
            self.failed_loads.append((message.text, message.location.get("url", "")))
        else:
            self.console_errors.append(message.text)

    def record_csp_violation(self, description: str) -> None:
        self.csp_violations.append(description)

    def all(self) -> list[str]:
        """Return every problem but the failed loads, one line each."""
        return ([f"console error: {text}" for text in self.console_errors]
                + [f"uncaught exception: {text}" for text in self.page_errors]
                + [f"CSP violation: {text}" for text in self.csp_violations])


# Runs in every document before the page's own scripts. Playwright injects it
# through the DevTools protocol, so the page's Content-Security-Policy does not
# apply to it.
CSP_LISTENER_SCRIPT = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportCspViolation(
    `${event.violatedDirective} blocked ${event.blockedURI || "inline code"}`
    + ` at ${event.sourceFile || document.location.href}:${event.lineNumber}`);
});
"""


@pytest.fixture
def context(browser, live_server):
    """A fresh browser context (cookies, storage) whose relative URLs go to the live server."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    yield context
    context.close()


class TaskApi:
    """Submit tasks and read them through the JSON API, as a script beside the browser would."""

    TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")

    def __init__(self, request_context):
        self._request = request_context

    def submit(self, body: dict) -> int:
        """Submit one task and return its id."""
        response = self._request.post("/api/tasks", data=body)
        assert response.status == 201, response.text()
        return response.json()["id"]

    def get(self, task_id: int) -> dict:
        response = self._request.get(f"/api/tasks/{task_id}")
        assert response.status == 200, response.text()
        return response.json()

    def wait_until_finished(self, task_ids, timeout: float = TIMEOUT_MS / 1000) -> list[dict]:
        """Wait until every task is SUCCEEDED, FAILED or CANCELLED, and return them."""
        deadline = time.monotonic() + timeout
        while True:
            tasks = [self.get(task_id) for task_id in task_ids]
            if all(task["status"] in self.TERMINAL for task in tasks):
                return tasks
            if time.monotonic() > deadline:
                raise AssertionError(f"tasks not finished within {timeout} s: "
                                     f"{[(task['id'], task['status']) for task in tasks]}")
            time.sleep(0.05)


@pytest.fixture
def api(context):
    return TaskApi(context.request)


@pytest.fixture
def problems():
    return PageProblems()


def open_watched_page(context, problems: PageProblems):
    """Open a page that records its console errors, uncaught exceptions and CSP violations."""
    page = context.new_page()
    page.on("console", problems.record_console_message)
    page.on("pageerror", lambda error: problems.page_errors.append(str(error)))
    page.expose_function("reportCspViolation", problems.record_csp_violation)
    page.add_init_script(CSP_LISTENER_SCRIPT)
    return page


@pytest.fixture
def open_page(context):
    """Return a function that opens one more watched page and returns it with its PageProblems."""

    def open_page():
        problems = PageProblems()
        return open_watched_page(context, problems), problems

    return open_page


@pytest.fixture
def page(context, problems):
    """A page that records what goes wrong in it in `problems`."""
    return open_watched_page(context, problems)

