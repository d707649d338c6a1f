"""Time every page, htmx partial and JSON read of Taskboard on the seeded databases.

    .venv/bin/python -m bench.seed_pages      # once: 1,000,000 tasks, 5,000,000 events
    .venv/bin/python -m bench.pages           # both databases, 20 timed requests each
    .venv/bin/python -m bench.pages --database sqlite --only /events

Requests go through Flask's test client in this process, so a timing is the
server's time for the request: routing, queries and template rendering,
without a network or a browser. The GET routes come from app.url_map, and
each needs an entry in REQUESTS (or a reason in NOT_TIMED). A route without
one stops the run, so that a new page cannot go unmeasured.

The results go to bench/results/pages-<time>.json and pages-latest.json, and
the Markdown tables to pages-latest.md, for docs/benchmarks.md.
"""

import argparse
import json
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata

from sqlalchemy import event, func, select

from bench.common import RESULTS_DIR, ROOT, percentile
from bench.seed_pages import (
    DATABASES,
    DEFAULT_EVENTS,
    DEFAULT_TASKS,
    create_bench_app,
    current_revision,
    database_exists,
    head_revision,
    index_differences,
    row_counts,
)

TARGET_MEDIAN_MS = 100.0
DEFAULT_REQUESTS = 20
DEFAULT_WARMUP = 3
# Statements per request kept in the results, slowest first.
SLOW_STATEMENTS_KEPT = 3


@dataclass(frozen=True)
class PageRequest:
    """One URL to time, and whether it goes out as htmx sends it (HX-Request: true)."""

    label: str
    url: str
    htmx: bool = False

    def headers(self) -> dict:
        return {"HX-Request": "true"} if self.htmx else {}


@dataclass
class Sample:
    """The rows the request URLs point at, read from the seeded database."""

    newest_task: int
    deep_task_cursor: int
    succeeded_task: int
    failed_task: int
    processing_task: int
    busiest_task: int
    busiest_task_events: int
    deep_event_cursor: int
    # Cursors of the tasks page ("<sort value>_<id>") at the first finished
    # task from deep_task_cursor on.
    deep_created_cursor: str
    deep_finished_cursor: str
    # A day-long window of created_at a week before the newest task, as ISO dates.
    week_ago: str
    week_ago_next_day: str


def read_sample(app) -> Sample:
    """Pick the tasks, cursors and dates the requests use."""
    from app.extensions import db
    from app.tasks.models import Task, TaskEvent

    with app.app_context():
        session = db.session

        def newest(status: str) -> int:
            task_id = session.scalar(select(func.max(Task.id)).where(Task.status == status))
            if task_id is None:
                raise SystemExit(f"error: the seeded database has no {status} task; reseed it "
                                 "with python -m bench.seed_pages --reset")
            return task_id

        first_task = session.scalar(select(func.min(Task.id)))
        first_event = session.scalar(select(func.min(TaskEvent.id)))
        # The task with the most events has the longest timeline. The look-up
        # counts only the newest 100,000 events, so that it stays short.
        newest_event = session.scalar(select(func.max(TaskEvent.id)))
        busiest = session.execute(
            select(TaskEvent.task_id, func.count().label("events"))
            .where(TaskEvent.id > newest_event - 100_000)
            .group_by(TaskEvent.task_id)
            .order_by(func.count().desc())
            .limit(1)
        ).one()
        deep_task = session.scalars(
            select(Task).where(Task.id >= first_task + 1000, Task.finished_at.is_not(None))
            .order_by(Task.id).limit(1)).one()
        newest_created = session.scalar(select(func.max(Task.created_at)))
        week_ago = (newest_created - timedelta(days=7)).date()
        return Sample(
            newest_task=session.scalar(select(func.max(Task.id))),
            deep_task_cursor=first_task + 1000,
            succeeded_task=newest("SUCCEEDED"),
            failed_task=newest("FAILED"),
            processing_task=newest("PROCESSING"),
            busiest_task=busiest.task_id,
            busiest_task_events=busiest.events,
            deep_event_cursor=first_event + 1000,
            deep_created_cursor=_cursor(deep_task.created_at, deep_task.id),
            deep_finished_cursor=_cursor(deep_task.finished_at, deep_task.id),
            week_ago=week_ago.isoformat(),
            week_ago_next_day=(week_ago + timedelta(days=1)).isoformat(),
        )


def _cursor(moment: datetime, task_id: int) -> str:
    """Format a tasks page cursor as the page's own "next" links do."""
    return f"{moment.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}_{task_id}"


# The requests of each GET endpoint. Lists get their first page, typical
# filters and a keyset page far back, whose cursor is 1,000 rows above the
# oldest row. Detail pages get typical rows and the task with the most events.


def _tasks_list(prefix: str, htmx: bool = False) -> Callable[[Sample], list[PageRequest]]:
    def requests(sample: Sample) -> list[PageRequest]:
        return [
            PageRequest("first page", prefix, htmx),
            PageRequest("status=FAILED", f"{prefix}?status=FAILED", htmx),
            PageRequest("status=RETRYING", f"{prefix}?status=RETRYING", htmx),
            PageRequest("type=flaky", f"{prefix}?type=flaky", htmx),
            PageRequest("status=FAILED, type=fail", f"{prefix}?status=FAILED&type=fail", htmx),
            PageRequest("deep page", f"{prefix}?before={sample.deep_task_cursor}", htmx),
            PageRequest("deep page, status=FAILED",
                        f"{prefix}?status=FAILED&before={sample.deep_task_cursor}", htmx),
        ]
    return requests


def _task_list_page(prefix: str, htmx: bool = False) -> Callable[[Sample], list[PageRequest]]:
    """Return the requests of the tasks page: filters, sorts, search and deep keyset pages."""
    def requests(sample: Sample) -> list[PageRequest]:
        cases = [
            ("first page", ""),
            ("status=FAILED", "status=FAILED"),
            ("status=RETRYING", "status=RETRYING"),
            ("type=flaky", "type=flaky"),
            ("queue=reports", "queue=reports"),
            ("status, type and queue", "status=FAILED&type=flaky&queue=bulk"),
            ("created on one day", f"created_after={sample.week_ago}"
                                   f"&created_before={sample.week_ago_next_day}"),
            ("oldest first", "order=asc"),
            ("sort=started", "sort=started"),
            ("sort=finished", "sort=finished"),
            ("sort=duration", "sort=duration"),
            ("sort=duration, status=FAILED", "sort=duration&status=FAILED"),
            ("search a common word", "q=invoice"),
            ("search an error text", "q=read-only"),
            ("search a task id", f"q=%23{sample.failed_task}"),
            ("deep page", f"after={sample.deep_created_cursor}"),
            ("deep page, status=FAILED", f"status=FAILED&after={sample.deep_created_cursor}"),
            ("deep page, sort=finished", f"sort=finished&after={sample.deep_finished_cursor}"),
        ]
        return [PageRequest(label, f"{prefix}?{query}" if query else prefix, htmx)
                for label, query in cases]
    return requests


def _events_list(prefix: str, task_parameter: str,
                 htmx: bool = False) -> Callable[[Sample], list[PageRequest]]:
    def requests(sample: Sample) -> list[PageRequest]:
        return [
            PageRequest("first page", prefix, htmx),
            PageRequest("kind=failed", f"{prefix}?kind=failed", htmx),
            PageRequest("level=error", f"{prefix}?level=error", htmx),
            PageRequest("kind=requeued", f"{prefix}?kind=requeued", htmx),
            PageRequest("one task", f"{prefix}?{task_parameter}={sample.failed_task}", htmx),
            PageRequest("deep page", f"{prefix}?before={sample.deep_event_cursor}", htmx),
            PageRequest("deep page, kind=log",
                        f"{prefix}?kind=log&before={sample.deep_event_cursor}", htmx),
        ]
    return requests


def _task_pages(prefix: str, htmx: bool = False) -> Callable[[Sample], list[PageRequest]]:
    def requests(sample: Sample) -> list[PageRequest]:
        return [
            PageRequest("SUCCEEDED task", f"{prefix}/{sample.succeeded_task}", htmx),
            PageRequest("FAILED task", f"{prefix}/{sample.failed_task}", htmx),
            PageRequest("PROCESSING task", f"{prefix}/{sample.processing_task}", htmx),
            PageRequest(f"task with {sample.busiest_task_events} events",
                        f"{prefix}/{sample.busiest_task}", htmx),
        ]
    return requests


def _task_event_lists(sample: Sample) -> list[PageRequest]:
    return [
        PageRequest("FAILED task", f"/api/tasks/{sample.failed_task}/events"),
        PageRequest(f"task with {sample.busiest_task_events} events",
                    f"/api/tasks/{sample.busiest_task}/events"),
    ]


def _one(label: str, url: str, htmx: bool = False) -> Callable[[Sample], list[PageRequest]]:
    return lambda sample: [PageRequest(label, url, htmx)]


REQUESTS: dict[str, Callable[[Sample], list[PageRequest]]] = {
    "pages.dashboard": _one("dashboard", "/"),
    "pages.tasks_partial": _tasks_list("/partials/tasks", htmx=True),
    "pages.latest_events_partial": _one("latest events", "/partials/latest-events", htmx=True),
    "pages.params_partial": _one("type=word_count", "/partials/params?type=word_count",
                                 htmx=True),
    "pages.task_detail": _task_pages("/tasks"),
    "pages.task_live_partial": _task_pages("/partials/tasks", htmx=True),
    "pages.events": _events_list("/events", "task"),
    "pages.events_partial": _events_list("/partials/events", "task", htmx=True),
    "api.list_tasks": _tasks_list("/api/tasks"),
    "api.get_task": lambda sample: [PageRequest("FAILED task",
                                                f"/api/tasks/{sample.failed_task}")],
    "api.get_task_events": _task_event_lists,
    "api.list_events": _events_list("/api/events", "task_id"),
    "task_list.tasks": _task_list_page("/tasks"),
    "task_list.task_list_partial": _task_list_page("/partials/task-list", htmx=True),
    "insights.queues": _one("all queues", "/queues"),
    "insights.queues_partial": _one("all queues", "/partials/queues", htmx=True),
    "insights.workers": _one("all workers", "/workers"),
    "insights.workers_partial": _one("all workers", "/partials/workers", htmx=True),
    "insights.metrics": _one("charts page", "/metrics"),
    "insights.charts_partial": _one("all charts", "/partials/charts", htmx=True),
    "api.list_queues": _one("all queues", "/api/queues"),
    "api.list_workers": _one("all workers", "/api/workers"),
}

# GET endpoints left out, with the reason.
NOT_TIMED = {
    "static": "serves files from app/static, which touches no database",
}


def plan_requests(app, sample: Sample, only: str | None) -> list[tuple[str, PageRequest]]:
    """Return (route, request) for every GET route; exit listing the routes with no entry."""
    routes: dict[str, str] = {}
    for rule in app.url_map.iter_rules():
        if "GET" in (rule.methods or ()):
            # "<int(max=9223372036854775807):task_id>" reads as "<task_id>" in the tables.
            routes.setdefault(rule.endpoint, re.sub(r"<[^>]*:([^>]+)>", r"<\1>", rule.rule))
    unknown = sorted(f"{rule} ({endpoint})" for endpoint, rule in routes.items()
                     if endpoint not in REQUESTS and endpoint not in NOT_TIMED)
    if unknown:
        raise SystemExit(
            "error: bench/pages.py does not know how to request these GET routes: "
            + ", ".join(unknown)
            + ". Add each endpoint to REQUESTS in bench/pages.py, or to NOT_TIMED with a reason.")

    planned = []
    # Pages first, then their partials, then the JSON API.
    def order(endpoint: str) -> tuple:
        rule = routes[endpoint]
        return (rule.startswith("/api/"), rule.startswith("/partials/"), rule)

    for endpoint in sorted(routes, key=order):
        if endpoint in NOT_TIMED:
            continue
        for page_request in REQUESTS[endpoint](sample):
            if only is None or only in page_request.url or only in routes[endpoint]:
                planned.append((routes[endpoint], page_request))
    return planned


class StatementRecorder:
    """Record the SELECT statements a request runs, then time and explain each one alone.

    The times that SQLAlchemy's cursor events see leave out fetching, and
    SQLite does most of its work while rows are fetched. So each recorded
    statement runs again on its own connection, rows fetched, to time it.
    """

    def __init__(self, engine):
        self.engine = engine
        self.recording = False
        self.captured: list[tuple[str, object]] = []
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, connection, cursor, statement, parameters, context, executemany):
        if self.recording and statement.lstrip().upper().startswith("SELECT"):
            self.captured.append((statement, parameters))

    def record(self, client, page_request: PageRequest) -> list[dict]:
        """Send one request; return its statements with their times alone, slowest first."""
        self.captured, self.recording = [], True
        try:
            client.get(page_request.url, headers=page_request.headers())
        finally:
            self.recording = False
        timed = []
        with self.engine.connect() as connection:
            for statement, parameters in self.captured:
                started = time.perf_counter()
                connection.exec_driver_sql(statement, parameters).fetchall()
                elapsed = (time.perf_counter() - started) * 1000
                timed.append({"ms": round(elapsed, 2), "sql": statement, "parameters": parameters})
        return sorted(timed, key=lambda item: item["ms"], reverse=True)

    def explain(self, statement: str, parameters) -> str:
        """Return the plan of one statement: EXPLAIN ANALYZE on PostgreSQL, EXPLAIN QUERY PLAN on SQLite."""
        with self.engine.connect() as connection:
            if self.engine.dialect.name == "postgresql":
                rows = connection.exec_driver_sql(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).fetchall()
                return "\n".join(row[0] for row in rows)
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                              parameters).fetchall()
        depth = {0: -1}
        lines = []
        for node, parent, _, detail in rows:
            depth[node] = depth.get(parent, -1) + 1
            lines.append("  " * depth[node] + detail)
        return "\n".join(lines)


def time_request(client, page_request: PageRequest, *, warmup: int, requests: int) -> dict:
    """Send `warmup` untimed requests, then `requests` timed ones; return the timings in ms."""
    statuses: set[int] = set()
    size = 0
    for _ in range(warmup):
        response = client.get(page_request.url, headers=page_request.headers())
        statuses.add(response.status_code)
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(page_request.url, headers=page_request.headers())
        timings.append((time.perf_counter() - started) * 1000)
        statuses.add(response.status_code)
        size = len(response.data)
    return {
        "median_ms": round(statistics.median(timings), 2),
        "p95_ms": round(percentile(timings, 0.95), 2),
        "min_ms": round(min(timings), 2),
        "max_ms": round(max(timings), 2),
        "statuses": sorted(statuses),
        "bytes": size,
    }


def _json_safe(parameters):
    """Return statement parameters as JSON can store them: times and other objects as text."""
    if isinstance(parameters, dict):
        return {name: _json_safe(value) for name, value in parameters.items()}
    if isinstance(parameters, (list, tuple)):
        return [_json_safe(value) for value in parameters]
    if parameters is None or isinstance(parameters, (str, int, float, bool)):
        return parameters
    return str(parameters)


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def check_database(kind: str, app) -> dict[str, int]:
    """Exit with a clear error unless the database is seeded, migrated and indexed as now.

    Return the row count of each seeded table.
    """
    if not database_exists(kind):
        raise SystemExit(f"error: {kind}: no page benchmark database; "
                         f"create it with python -m bench.seed_pages --database {kind}")
    revision, head = current_revision(app), head_revision()
    if revision != head:
        raise SystemExit(f"error: {kind}: the database is at migration {revision}, not {head}; "
                         f"run python -m bench.seed_pages --database {kind} --upgrade")
    differences = index_differences(kind)
    if differences:
        raise SystemExit(
            f"error: {kind}: these indexes differ from the ones the migrations create today: "
            f"{', '.join(differences)}; run python -m bench.seed_pages --database {kind} "
            "--rebuild-indexes")
    counts = row_counts(kind)
    if counts.get("tasks", 0) == 0:
        raise SystemExit(f"error: {kind}: the database has no tasks; "
                         f"run python -m bench.seed_pages --database {kind}")
    return counts


def measure(kind: str, *, requests: int, warmup: int, only: str | None) -> dict:
    """Time every planned request on one database and return its results."""
    from app.extensions import db

    app = create_bench_app(kind)
    counts = check_database(kind, app)
    sample = read_sample(app)
    planned = plan_requests(app, sample, only)
    with app.app_context():
        recorder = StatementRecorder(db.engine)
    client = app.test_client()

    print(f"{kind}: {counts['tasks']:,} tasks, {counts['task_events']:,} events; "
          f"timing {len(planned)} requests, {requests} times each", flush=True)
    load_before = load_average()
    results = []
    for route, page_request in planned:
        timing = time_request(client, page_request, warmup=warmup, requests=requests)
        statements = recorder.record(client, page_request)
        slowest = [{"ms": item["ms"], "sql": " ".join(item["sql"].split()),
                    "parameters": _json_safe(item["parameters"])}
                   for item in statements[:SLOW_STATEMENTS_KEPT]]
        if statements and timing["median_ms"] >= TARGET_MEDIAN_MS:
            slowest[0]["plan"] = recorder.explain(statements[0]["sql"],
                                                  statements[0]["parameters"])
        result = {
            "route": route,
            "label": page_request.label,
            "url": page_request.url,
            "htmx": page_request.htmx,
            **timing,
            "statements": len(statements),
            "slowest_statements": slowest,
        }
        results.append(result)
        flag = "" if timing["statuses"] == [200] else f"  status {timing['statuses']}"
        over = "  over target" if timing["median_ms"] >= TARGET_MEDIAN_MS else ""
        print(f"  {route:<40} {page_request.label:<28} median {timing['median_ms']:8.1f} ms"
              f"  p95 {timing['p95_ms']:8.1f} ms{flag}{over}", flush=True)

    with app.app_context():
        db.engine.dispose()
    return {
        "revision": current_revision(app),
        "counts": counts,
        "sample": asdict(sample),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "results": results,
    }


# Machine and source description


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as file:
        for line in file:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _postgres_version() -> str | None:
    import psycopg

    from bench.common import POSTGRES_ADMIN_URL

    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
            return connection.execute("SHOW server_version").fetchone()[0]
    except psycopg.OperationalError:
        return None


def describe_run() -> dict:
    """Return the machine, software versions and source commit the numbers come from."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()

    with open("/proc/meminfo") as file:
        memory_kib = next(int(line.split()[1]) for line in file if line.startswith("MemTotal:"))
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": _postgres_version(),
        "packages": {name: metadata.version(name)
                     for name in ("Flask", "Flask-SQLAlchemy", "SQLAlchemy", "psycopg")},
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": git("status", "--porcelain", "--", "app", "migrations").splitlines(),
    }


# Markdown


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_table(report: dict) -> str:
    machine = report["machine"]
    loads = [f"{kind}: {run['load_average_before']} before, {run['load_average_after']} after"
             for kind, run in report["databases"].items()]
    source = f"commit {machine['commit'][:10]}"
    if machine["uncommitted_changes"]:
        source += f", with {len(machine['uncommitted_changes'])} uncommitted files in app/ or migrations/"
    rows = [
        ["CPU", f"{machine['cpu_model']}, {machine['cores']} cores (shared with other work)"],
        ["memory", f"{machine['memory_gib']} GiB"],
        ["software", f"Python {machine['python']}, SQLite {machine['sqlite']}, "
                     f"PostgreSQL {machine['postgresql']}, "
                     + ", ".join(f"{name} {version}" for name, version in machine["packages"].items())],
        ["source", source],
        ["date", f"{report['started_at']} to {report['finished_at']}"],
        ["load average (1, 5, 15 min)", "; ".join(loads)],
        ["requests", f"{report['warmup']} untimed, then {report['requests']} timed per row"],
    ]
    return _table(["", ""], rows)


def results_table(report: dict) -> str:
    """Return one row per request with the median and p95 on each database."""
    runs = report["databases"]
    kinds = [kind for kind in DATABASES if kind in runs]
    keyed = {kind: {(r["route"], r["label"]): r for r in runs[kind]["results"]} for kind in kinds}
    order = []
    for kind in kinds:
        for result in runs[kind]["results"]:
            if (result["route"], result["label"]) not in order:
                order.append((result["route"], result["label"]))

    header = ["route", "request"]
    for kind in kinds:
        name = "SQLite" if kind == "sqlite" else "PostgreSQL"
        header += [f"{name} median ms", f"{name} p95 ms"]
    header.append(f"median < {TARGET_MEDIAN_MS:g} ms")
    rows = []
    for route, label in order:
        row = [f"`{route}`", label]
        met = True
        for kind in kinds:
            result = keyed[kind].get((route, label))
            if result is None:
                row += ["", ""]
                continue
            status = "" if result["statuses"] == [200] else f" (status {result['statuses']})"
            row += [f"{result['median_ms']:.1f}{status}", f"{result['p95_ms']:.1f}"]
            met = met and result["median_ms"] < TARGET_MEDIAN_MS and result["statuses"] == [200]
        row.append("met" if met else "**missed**")
        rows.append(row)
    return _table(header, rows)


def slow_statements(report: dict) -> str:
    """Return the slowest statement of each request over the target, as a Markdown list."""
    lines = []
    for kind, run in report["databases"].items():
        for result in run["results"]:
            if result["median_ms"] < TARGET_MEDIAN_MS or not result["slowest_statements"]:
                continue
            slowest = result["slowest_statements"][0]
            lines.append(f"- {kind}, `{result['url']}`: {result['median_ms']:.0f} ms median, "
                         f"{result['statements']} SELECT statements; the slowest takes "
                         f"{slowest['ms']:.0f} ms alone: `{_shorten(slowest['sql'])}`")
    return "\n".join(lines)


def _shorten(sql: str) -> str:
    """Replace a long select list by "...", keeping FROM, WHERE and ORDER BY readable."""
    head, separator, rest = sql.partition(" FROM ")
    if separator and len(head) > 80:
        head = head[:60] + " ..."
    return (head + separator + rest)[:400]


def targets_summary(report: dict) -> str:
    """Return one sentence per database: how many requests met the target, and which missed."""
    sentences = []
    for kind, run in report["databases"].items():
        results = run["results"]
        missed = [result["url"] for result in results
                  if result["median_ms"] >= TARGET_MEDIAN_MS or result["statuses"] != [200]]
        name = "SQLite" if kind == "sqlite" else "PostgreSQL"
        sentence = (f"{name}: {len(results) - len(missed)} of {len(results)} requests have a "
                    f"median under {TARGET_MEDIAN_MS:g} ms")
        if missed:
            sentence += "; missed: " + ", ".join(f"`{url}`" for url in missed)
        sentences.append(sentence + ".")
    return "\n\n".join(sentences)


def markdown(report: dict) -> str:
    parts = [machine_table(report), "", results_table(report), "", targets_summary(report)]
    slow = slow_statements(report)
    if slow:
        parts += ["", "Requests over the target, with their slowest statement:", "", slow]
    return "\n".join(parts) + "\n"


# Command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pages",
        description="Time every page, htmx partial and JSON read on the databases that "
                    "python -m bench.seed_pages built.")
    parser.add_argument("--database", choices=(*DATABASES, "all"), default="all",
                        help="which database to measure (default: all)")
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS,
                        help=f"timed requests per URL (default: {DEFAULT_REQUESTS})")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                        help=f"untimed requests per URL before timing (default: {DEFAULT_WARMUP})")
    parser.add_argument("--only", metavar="TEXT",
                        help="time only the URLs or route rules that contain TEXT")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error(f"--requests must be at least 1, got {args.requests}")
    if args.warmup < 0:
        parser.error(f"--warmup must not be negative, got {args.warmup}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    kinds = DATABASES if args.database == "all" else (args.database,)
    report = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_run(),
        "requests": args.requests,
        "warmup": args.warmup,
        "target_median_ms": TARGET_MEDIAN_MS,
        "databases": {},
    }
    for kind in kinds:
        report["databases"][kind] = measure(kind, requests=args.requests, warmup=args.warmup,
                                            only=args.only)
    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")

    os.makedirs(RESULTS_DIR, exist_ok=True)
    stamp = report["started_at"].replace(":", "").replace("+0000", "Z")
    for name in (f"pages-{stamp}.json", "pages-latest.json"):
        with open(os.path.join(RESULTS_DIR, name), "w") as file:
            json.dump(report, file, indent=2)
    text = markdown(report)
    with open(os.path.join(RESULTS_DIR, "pages-latest.md"), "w") as file:
        file.write(text)
    print()
    print(text)

    counts_differ = [kind for kind, run in report["databases"].items()
                     if (run["counts"]["tasks"], run["counts"]["task_events"])
                     != (DEFAULT_TASKS, DEFAULT_EVENTS)]
    if counts_differ:
        print(f"note: {', '.join(counts_differ)} not seeded at the default size of "
              f"{DEFAULT_TASKS:,} tasks and {DEFAULT_EVENTS:,} events", file=sys.stderr)
    failed = [f"{kind} {result['url']} {result['statuses']}"
              for kind, run in report["databases"].items() for result in run["results"]
              if result["statuses"] != [200]]
    if failed:
        print("error: requests without status 200: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
