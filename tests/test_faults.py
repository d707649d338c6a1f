"""A worker whose database goes away: cut connections, a server restart, failed writes.

Tests that need a PostgreSQL server to cut or restart are skipped on SQLite
with that reason. The outcome-recording tests run on both databases.
"""

import logging
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.extensions import db
from app.tasks import Task, TaskStatus, queries, queue
from app.worker import Worker
from conftest import POSTGRES_ADMIN_URL, wait_for
from test_processes import (  # noqa: F401  (children and fault_app are fixtures)
    PLUGIN,
    children,
    fault_app,
)

POSTGRES_CONFIG = Path("/etc/postgresql")


def _reload(task_id) -> Task:
    db.session.rollback()
    task = db.session.get(Task, task_id, populate_existing=True)
    db.session.expunge(task)
    return task


def _kinds(task_id) -> list[str]:
    db.session.rollback()
    return [event.kind for event in queries.task_events(task_id)]


def _scalar(sql: str, **params):
    db.session.rollback()
    return db.session.execute(text(sql), params).scalar_one()


def _status_counts() -> dict[str, int]:
    db.session.rollback()
    return dict(db.session.execute(text("SELECT status, count(*) FROM tasks GROUP BY status")).all())


def _wait_until_all_succeeded(count: int, timeout: float) -> None:
    def finished():
        """every task reaches a terminal status"""
        return _scalar("SELECT count(*) FROM tasks WHERE status IN "
                       "('SUCCEEDED', 'FAILED', 'CANCELLED')") == count

    wait_for(finished, timeout=timeout, interval=0.2)


def _succeeded_events_per_task() -> dict[int, int]:
    db.session.rollback()
    return dict(db.session.execute(text(
        "SELECT task_id, count(*) FROM task_events WHERE kind = 'succeeded' GROUP BY task_id"
    )).all())


def _require_postgres(database_url: str) -> str:
    """Return the database name of a PostgreSQL URL; skip the test on SQLite."""
    if not database_url.startswith("postgresql"):
        pytest.skip("needs a PostgreSQL server whose connections the test can cut")
    return database_url.rsplit("/", 1)[1]


def _forget_connections() -> None:
    """Drop this process's pooled connections, which a cut or a restart left dead."""
    # invalidate() discards the session's connection without the ROLLBACK
    # that would fail on a dead one.
    db.session().invalidate()
    db.session.remove()
    db.engine.dispose()


# Every connection cut at once


def test_worker_survives_terminated_connections(fault_app, make_app, database_url, caplog):
    database = _require_postgres(database_url)
    caplog.set_level(logging.INFO, logger="app")
    worker_app = make_app(TASK_MODULES=[PLUGIN], LEASE_SECONDS=2, HEARTBEAT_INTERVAL=0.3)
    task_ids = [queue.submit({"type": "slow_record", "params": {"seconds": 0.05},
                              "max_attempts": 10})[0].id for _ in range(100)]
    # Polls are 5 s apart, so the later submit can only start within 1 s if
    # the listener, reconnected after the cut, passes NOTIFY on.
    worker = Worker(worker_app, concurrency=4, poll_interval=5)
    worker.start()
    try:
        wait_for(lambda: _status_counts().get("SUCCEEDED", 0) >= 20, timeout=20)
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
            ).fetchone()[0]
        _forget_connections()

        _wait_until_all_succeeded(len(task_ids), timeout=60)
        wait_for(lambda: any("Listening for task notifications again" in record.getMessage()
                             for record in caplog.records), timeout=10)
        later, _ = queue.submit({"type": "record_run"})
        wait_for(lambda: _reload(later.id).status == TaskStatus.SUCCEEDED, timeout=5)
    finally:
        worker.stop(timeout=2)

    later = _reload(later.id)
    messages = [(record.name, record.levelno, record.getMessage()) for record in caplog.records]
    lost = [message for name, level, message in messages
            if name.startswith("app.") and level >= logging.WARNING
            and "terminating connection due to administrator command" in message]
    assert cut >= 2
    assert _status_counts() == {"SUCCEEDED": len(task_ids) + 1}
    assert set(_succeeded_events_per_task().values()) == {1}
    assert lost, "no warning names the cut connection"
    assert any("Lost the connection that listens for task notifications" in message
               for _, _, message in messages)
    assert (later.started_at - later.created_at).total_seconds() < 1


def test_notification_ends_poll_pause(fault_app, make_app, database_url, monkeypatch):
    _require_postgres(database_url)
    worker_app = make_app(TASK_MODULES=[PLUGIN])
    real_claim = queue.claim
    failed = []

    def claim_failing_once(*args, **kwargs):
        if not failed:
            failed.append(time.monotonic())
            raise _transient_error()
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(queue, "claim", claim_failing_once)
    # After the failed first poll the worker pauses polling for one poll
    # interval (10 s); a notice shows that the database answers again.
    worker = Worker(worker_app, poll_interval=10)
    worker.start()
    try:
        wait_for(lambda: failed, timeout=5)
        wait_for(lambda: _scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                 "current_database() AND query LIKE 'LISTEN%'"), timeout=10)
        task, _ = queue.submit({"type": "record_run"})
        wait_for(lambda: _reload(task.id).status == TaskStatus.SUCCEEDED, timeout=15)
    finally:
        worker.stop(timeout=2)

    task = _reload(task.id)
    assert (task.started_at - task.created_at).total_seconds() < 1


# The server restarts


def _postgres_version() -> str | None:
    """Return the newest version under /etc/postgresql that has a cluster named main."""
    if not POSTGRES_CONFIG.is_dir():
        return None
    versions = [path.name for path in POSTGRES_CONFIG.iterdir() if (path / "main").is_dir()]
    if not versions:
        return None
    return max(versions, key=lambda name: [int(part) for part in re.findall(r"\d+", name)])


def _other_clients(database: str) -> list[str]:
    """Return the other databases that clients are connected to now."""
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT DISTINCT datname FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND pid <> pg_backend_pid() AND datname IS NOT NULL AND datname <> %s",
            (database,),
        ).fetchall()
    return sorted(row[0] for row in rows)


def _wait_for_server(timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"],
                               check=False, timeout=10)
        if ready.returncode == 0:
            return True
        time.sleep(0.5)
    return False


def test_worker_survives_postgres_restart(fault_app, children, database_url):
    database = _require_postgres(database_url)
    version = _postgres_version()
    if os.geteuid() != 0 or shutil.which("pg_ctlcluster") is None or version is None:
        pytest.skip("restarting PostgreSQL needs root and pg_ctlcluster with a cluster "
                    "named main under /etc/postgresql")
    if not POSTGRES_ADMIN_URL.startswith("postgresql://postgres@127.0.0.1:5432/"):
        pytest.skip(f"the server at {POSTGRES_ADMIN_URL} may not be the local cluster")
    others = _other_clients(database)
    if others:
        pytest.skip("a restart would cut off other clients of the server, connected to "
                    + ", ".join(others))

    task_ids = [queue.submit({"type": "slow_record", "params": {"seconds": 0.05},
                              "max_attempts": 10})[0].id for _ in range(100)]
    child = children("worker")
    child.worker_id()
    restart = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]
    try:
        wait_for(lambda: _status_counts().get("SUCCEEDED", 0) >= 10, timeout=20)
        subprocess.run(restart, check=True, timeout=60, capture_output=True)
    finally:
        if not _wait_for_server():
            subprocess.run(restart[:-1] + ["start"], check=False, timeout=60)
            _wait_for_server()
    _forget_connections()

    _wait_until_all_succeeded(len(task_ids), timeout=60)

    log = child.log()
    assert child.process.poll() is None, log
    assert _status_counts() == {"SUCCEEDED": len(task_ids)}
    assert set(_succeeded_events_per_task()) == set(task_ids)
    assert set(_succeeded_events_per_task().values()) == {1}
    assert re.search(r"cannot reach the database|could not record the outcome|"
                     r"could not renew its leases", log), log
    child.process.send_signal(signal.SIGTERM)
    assert child.process.wait(10) == 0


# Writes of an outcome that fail


def _transient_error() -> OperationalError:
    return OperationalError("UPDATE tasks SET status = ...", {},
                            Exception("server closed the connection unexpectedly"))


def _events_named(caplog, event: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if getattr(record, "event", None) == event]


def test_outcome_recording_retries_transient_error(app, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="app")
    real_succeed_many = queue.succeed_many
    calls = []

    def succeed_third_time(outcomes, **options):
        calls.extend(claim.attempt for claim, _ in outcomes)
        if len(calls) <= 2:
            raise _transient_error()
        return real_succeed_many(outcomes, **options)

    monkeypatch.setattr(queue, "succeed_many", succeed_third_time)
    task_id = queue.submit({"type": "noop"})[0].id
    worker = Worker(app)
    worker.start()
    try:
        wait_for(lambda: _reload(task_id).status == TaskStatus.SUCCEEDED, timeout=10)
    finally:
        worker.stop(timeout=2)

    retries = _events_named(caplog, "record_retry")
    task = _reload(task_id)
    assert calls == [1, 1, 1]
    assert task.attempts == 1
    assert _kinds(task_id) == ["submitted", "started", "succeeded"]
    assert len(retries) == 2
    assert all(record.levelno == logging.WARNING for record in retries)
    assert all("server closed the connection unexpectedly" in record.getMessage()
               for record in retries)
    assert all(record.task_ids == [task_id] for record in retries)


def test_outcome_recording_gives_up_at_lease_end(make_app, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="app")
    short_lease = make_app(LEASE_SECONDS=1, HEARTBEAT_INTERVAL=0.2)
    real_succeed_many = queue.succeed_many
    calls = []

    def succeed_from_second_attempt(outcomes, **options):
        calls.extend(claim.attempt for claim, _ in outcomes)
        if any(claim.attempt == 1 for claim, _ in outcomes):
            raise _transient_error()
        return real_succeed_many(outcomes, **options)

    monkeypatch.setattr(queue, "succeed_many", succeed_from_second_attempt)
    with short_lease.app_context():
        task_id = queue.submit({"type": "noop"})[0].id
        worker = Worker(short_lease)
        worker.start()
        try:
            wait_for(lambda: _reload(task_id).status == TaskStatus.SUCCEEDED, timeout=15)
        finally:
            worker.stop(timeout=2)

        task = _reload(task_id)
        gave_up = [record for record in caplog.records
                   if "could not record 1 result" in record.getMessage()
                   and record.levelno == logging.ERROR]
        assert task.attempts == 2
        assert calls.count(1) >= 3
        assert calls.count(2) == 1
        assert _kinds(task_id) == [
            "submitted", "started", "lease_expired", "retry_scheduled", "started", "succeeded",
        ]
        assert len(gave_up) == 1
        assert "recovered when their leases expire" in gave_up[0].getMessage()
        assert gave_up[0].task_ids == [task_id]


def test_outcome_recording_does_not_retry_other_errors(make_app, monkeypatch, caplog):
    short_lease = make_app(LEASE_SECONDS=1, HEARTBEAT_INTERVAL=0.2)
    real_succeed_many = queue.succeed_many
    calls = []

    def succeed_from_second_attempt(outcomes, **options):
        calls.extend(claim.attempt for claim, _ in outcomes)
        if any(claim.attempt == 1 for claim, _ in outcomes):
            raise ValueError("a bug in recording")
        return real_succeed_many(outcomes, **options)

    monkeypatch.setattr(queue, "succeed_many", succeed_from_second_attempt)
    with short_lease.app_context():
        task_id = queue.submit({"type": "noop"})[0].id
        worker = Worker(short_lease)
        worker.start()
        try:
            wait_for(lambda: _reload(task_id).status == TaskStatus.SUCCEEDED, timeout=15)
        finally:
            worker.stop(timeout=2)

        assert calls == [1, 2]
        assert not _events_named(caplog, "record_retry")
        assert _reload(task_id).attempts == 2
