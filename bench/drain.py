"""Measure how fast one in-process worker drains no-op tasks, and submit-to-start latency.

    .venv/bin/python bench/drain.py --database sqlite --tasks 2000 --runs 3
    .venv/bin/python bench/drain.py --database postgresql --tasks 2000 --runs 3

Each run uses a new, migrated database: a file in a temporary folder for
SQLite, a new database on the server named by TASKBOARD_TEST_POSTGRES_URL
(default postgresql://postgres@127.0.0.1:5432/test) for PostgreSQL. Every
task writes its submitted, started and succeeded events, as in production.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid

import psycopg
from flask_migrate import upgrade
from sqlalchemy import func, select

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app import create_app  # noqa: E402
from app.extensions import db  # noqa: E402
from app.tasks import Task, queue  # noqa: E402
from app.worker import Worker  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get(
    "TASKBOARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


class Database:
    """A fresh database for one run, removed afterwards."""

    def __init__(self, kind: str):
        self.kind = kind
        self.folder = tempfile.TemporaryDirectory(prefix="taskboard-bench-")
        if kind == "sqlite":
            self.url = f"sqlite:///{self.folder.name}/bench.db"
            self.name = None
        else:
            self.name = f"taskboard_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{self.name}"')
            self.url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.name

    def app(self, **config):
        settings = {
            "DATABASE_URL": self.url,
            "EMBEDDED_WORKER": False,
            "SECRET_KEY": "bench",
            "LOG_LEVEL": "WARNING",
            **config,
        }
        return create_app(settings, instance_path=self.folder.name)

    def close(self):
        if self.name:
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.folder.cleanup()


def count_succeeded() -> int:
    db.session.rollback()
    return db.session.scalar(
        select(func.count()).select_from(Task).where(Task.status == "SUCCEEDED")
    )


def drain_run(kind: str, tasks: int, concurrency: int) -> dict:
    """Submit `tasks` no-op tasks, then time one worker draining them."""
    database = Database(kind)
    try:
        app = database.app(WORKER_POLL_INTERVAL=0.05)
        with app.app_context():
            upgrade()
            started = time.perf_counter()
            for _ in range(tasks):
                queue.submit({"type": "noop"}, source="the benchmark")
            submit_seconds = time.perf_counter() - started

            worker = Worker(app, concurrency=concurrency)
            started = time.perf_counter()
            worker.start()
            try:
                while count_succeeded() < tasks:
                    time.sleep(0.02)
                drain_seconds = time.perf_counter() - started
            finally:
                worker.stop()
            db.session.remove()
            db.engine.dispose()
        return {"submit_per_second": tasks / submit_seconds, "drain_per_second": tasks / drain_seconds}
    finally:
        database.close()


def latency_run(kind: str, samples: int) -> list[float]:
    """Submit tasks one at a time to an idle worker; return started_at - created_at in ms."""
    database = Database(kind)
    try:
        # A long poll interval shows that the in-process wake-up, not polling, starts the task.
        app = database.app(WORKER_POLL_INTERVAL=5.0)
        with app.app_context():
            upgrade()
            worker = Worker(app, concurrency=1)
            worker.start()
            time.sleep(0.2)
            latencies = []
            try:
                for _ in range(samples):
                    task, _ = queue.submit({"type": "noop"}, source="the benchmark")
                    task_id = task.id
                    while True:
                        db.session.rollback()
                        row = db.session.get(Task, task_id, populate_existing=True)
                        if row.status == "SUCCEEDED":
                            break
                        time.sleep(0.005)
                    latencies.append((row.started_at - row.created_at).total_seconds() * 1000)
            finally:
                worker.stop()
            db.session.remove()
            db.engine.dispose()
        return latencies
    finally:
        database.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per drain run")
    parser.add_argument("--runs", type=int, default=3, help="drain runs; the median is reported")
    parser.add_argument("--concurrency", type=int, default=4, help="worker threads")
    parser.add_argument("--latency-samples", type=int, default=50)
    args = parser.parse_args()

    runs = [drain_run(args.database, args.tasks, args.concurrency) for _ in range(args.runs)]
    latencies = latency_run(args.database, args.latency_samples)
    report = {
        "database": args.database,
        "tasks": args.tasks,
        "runs": args.runs,
        "concurrency": args.concurrency,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "submit_per_second_median": round(statistics.median(r["submit_per_second"] for r in runs)),
        "drain_per_second_median": round(statistics.median(r["drain_per_second"] for r in runs)),
        "drain_per_second_runs": [round(r["drain_per_second"]) for r in runs],
        "submit_to_start_ms_median": round(statistics.median(latencies), 2),
        "submit_to_start_ms_p95": round(percentile(latencies, 0.95), 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
