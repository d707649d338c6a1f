"""Save screenshots of Taskboard's pages for the README.

Run it with `make screenshots`, or as `python -m scripts.screenshots [FOLDER]`.
It creates a SQLite database in a temporary folder and serves Taskboard with
its embedded worker on a free port of 127.0.0.1. Through the JSON API it
submits a mix of tasks in several queues, one of them paused: finished,
failed with a traceback, retrying, running with progress, scheduled and
cancelled. Chromium, driven by Playwright, then saves each page as a PNG
file. The database and the server are gone when it ends.

This is a script, not a test or a benchmark, so it lives apart from tests/
and bench/. It uses only built-in task types, so the pictures show what a new
user sees.
"""

import argparse
import os
import sys
import tempfile
import threading
import time

from flask_migrate import upgrade
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright
from werkzeug.serving import WSGIRequestHandler, make_server

from app import create_app
from app.extensions import db

DEFAULT_CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# Milliseconds a page load or a wait in the browser may take.
TIMEOUT_MS = 20_000
# Seconds to wait for the seeded tasks to reach the states shown.
SEED_TIMEOUT = 60.0
# The running task sleeps this long, and the pictures are taken once it has
# reported at least MIN_PROGRESS percent.
RUNNING_SECONDS = 120
MIN_PROGRESS = 10
# Full-page pictures stop at this height in pixels, which keeps each file
# near 300 KB or under.
MAX_HEIGHT = 1600

APP_CONFIG = {
    "SECRET_KEY": "screenshots-only",
    "LOG_LEVEL": "WARNING",
    "WORKER_CONCURRENCY": 4,
    "WORKER_POLL_INTERVAL": 0.2,
    "HEARTBEAT_INTERVAL": 1.0,
    # Long enough that a failed attempt of the mail task is still waiting
    # for its retry when the pictures are taken.
    "RETRY_BACKOFF_BASE": 600.0,
}

TEXTS = [
    "Quarterly revenue grew in every region except the north.",
    "Ship the release notes before Friday.\nThen update the changelog.",
    "The quick brown fox jumps over the lazy dog.",
    "Meeting notes: hiring plan approved, budget review moved to March.",
    "Invoice 2291 was paid on time.",
    "Customer feedback mentions faster page loads and a clearer dashboard.",
]

# Each entry is (name, path, viewport, colour scheme, full page).
SHOTS = [
    ("dashboard", "/", DESKTOP, "light", True),
    ("tasks", "/tasks", DESKTOP, "light", True),
    ("task-failed", "/tasks/{failed}", DESKTOP, "light", True),
    ("task-running", "/tasks/{running}", DESKTOP, "light", True),
    ("events", "/events", DESKTOP, "light", False),
    ("queues", "/queues", DESKTOP, "light", True),
    ("workers", "/workers", DESKTOP, "light", True),
    ("metrics", "/metrics", DESKTOP, "light", True),
    ("dashboard-phone", "/", PHONE, "light", False),
    ("dashboard-dark", "/", DESKTOP, "dark", False),
]


class QuietRequestHandler(WSGIRequestHandler):
    """A request handler that leaves out the access log, a line per refresh."""

    def log_request(self, code="-", size="-") -> None:
        pass


def build_app(folder: str):
    """Create the database in `folder`, then the application that serves it with a worker."""
    database_url = f"sqlite:///{os.path.join(folder, 'taskboard.db')}"
    migrating = create_app({**APP_CONFIG, "DATABASE_URL": database_url, "EMBEDDED_WORKER": False},
                           instance_path=os.path.join(folder, "migrate"))
    with migrating.app_context():
        upgrade()
        db.engine.dispose()
    # Outside a `flask` command and with TESTING off, create_app starts the
    # embedded worker, as under a WSGI server.
    return create_app({**APP_CONFIG, "DATABASE_URL": database_url, "EMBEDDED_WORKER": True},
                      instance_path=os.path.join(folder, "instance"))


class Seeder:
    """Submit the sample tasks through the JSON API and wait for the states the pictures show."""

    def __init__(self, request):
        self.request = request

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        response = self.request.fetch(path, method=method, data=body)
        if not response.ok:
            raise RuntimeError(f"{method} {path} failed with {response.status}: {response.text()}")
        return response.json()

    def submit(self, body: dict) -> int:
        return self.call("POST", "/api/tasks", body)["id"]

    def wait_for(self, task_id: int, description: str, predicate) -> dict:
        deadline = time.monotonic() + SEED_TIMEOUT
        while time.monotonic() < deadline:
            task = self.call("GET", f"/api/tasks/{task_id}")
            if predicate(task):
                return task
            time.sleep(0.2)
        raise RuntimeError(f"task {task_id} did not reach {description} within {SEED_TIMEOUT:g} s")

    def seed(self) -> dict:
        """Submit the sample tasks, and return the ids of the running and the failed one."""
        finished = [self.submit({"type": "word_count", "params": {"text": text}})
                    for text in TEXTS]
        finished.append(self.submit({"type": "noop", "queue": "maintenance"}))
        finished.append(self.submit({"type": "sleep", "params": {"seconds": 1.5},
                                     "queue": "reports"}))
        failed = self.submit({
            "type": "fail", "queue": "reports", "max_attempts": 1,
            "params": {"message": "Report template quarterly.html not found"},
        })
        finished.append(failed)
        retrying = self.submit({
            "type": "fail", "queue": "mail", "max_attempts": 5,
            "params": {"message": "SMTP server did not respond within 30 s"},
        })
        running = self.submit({"type": "sleep", "params": {"seconds": RUNNING_SECONDS},
                               "queue": "reports", "priority": 10})
        self.submit({"type": "word_count", "queue": "reports", "delay_seconds": 3600,
                     "params": {"text": "Nightly summary of yesterday's orders."}})
        cancelled = self.submit({"type": "sleep", "params": {"seconds": 30}, "queue": "mail",
                                 "delay_seconds": 600})
        self.call("POST", f"/api/tasks/{cancelled}/cancel")
        self.call("POST", "/api/queues/maintenance/pause")
        self.submit({"type": "noop", "queue": "maintenance"})

        for task_id in finished:
            self.wait_for(task_id, "a final status",
                          lambda task: task["status"] in ("SUCCEEDED", "FAILED"))
        self.wait_for(retrying, "RETRYING", lambda task: task["status"] == "RETRYING")
        self.wait_for(running, f"{MIN_PROGRESS}% progress",
                      lambda task: task["status"] == "PROCESSING"
                      and task["progress"] >= MIN_PROGRESS)
        return {"running": running, "failed": failed}


def take_screenshots(browser, base_url: str, folder: str, ids: dict) -> list[str]:
    """Save every picture in SHOTS into `folder` and return the file paths."""
    paths = []
    for name, path, viewport, scheme, full_page in SHOTS:
        context = browser.new_context(base_url=base_url, viewport=viewport, color_scheme=scheme)
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = context.new_page()
            response = page.goto(path.format(**ids), wait_until="load")
            if response is None or not response.ok:
                status = response.status if response else "no response"
                raise RuntimeError(f"{path} returned {status}")
            page.evaluate("document.fonts.ready")
            output = os.path.join(folder, f"{name}.png")
            clip = None
            if full_page:
                height = page.evaluate("document.documentElement.scrollHeight")
                clip = {"x": 0, "y": 0, "width": viewport["width"],
                        "height": min(height, MAX_HEIGHT)}
            page.screenshot(path=output, full_page=full_page, clip=clip, animations="disabled")
            paths.append(output)
        finally:
            context.close()
    return paths


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="docs/screenshots",
                        help="folder for the PNG files (default: docs/screenshots)")
    parser.add_argument("--chromium", default=DEFAULT_CHROMIUM,
                        help=f"Chromium binary to drive (default: {DEFAULT_CHROMIUM})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    # Messages go through print: the Alembic migration configures logging
    # from alembic.ini, which turns off loggers created before it.
    if not os.access(arguments.chromium, os.X_OK):
        print(f"No Chromium at {arguments.chromium}. Install Debian's chromium package, "
              "or pass --chromium.", file=sys.stderr)
        return 1
    os.makedirs(arguments.folder, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="taskboard-screenshots-") as temporary:
        app = build_app(temporary)
        server = make_server("127.0.0.1", 0, app, threaded=True,
                             request_handler=QuietRequestHandler)
        base_url = f"http://127.0.0.1:{server.server_port}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=arguments.chromium,
                                                     timeout=TIMEOUT_MS)
                request = playwright.request.new_context(base_url=base_url)
                print(f"Seeding tasks on {base_url}")
                ids = Seeder(request).seed()
                paths = take_screenshots(browser, base_url, arguments.folder, ids)
                request.dispose()
                browser.close()
        except (PlaywrightError, RuntimeError) as error:
            print(f"Taking the screenshots failed: {error}", file=sys.stderr)
            return 1
        finally:
            server.shutdown()
            server.server_close()
            app.extensions["taskboard.worker"].stop(timeout=2)
            with app.app_context():
                db.engine.dispose()

    for path in paths:
        print(f"Saved {path} ({os.path.getsize(path) // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
