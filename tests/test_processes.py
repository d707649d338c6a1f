"""Worker processes under faults: kill -9, several workers, SIGTERM, wake-ups, many clients.

Each test starts `flask worker` (and `flask run`) as real processes on the
test's database, with short leases and polls, and kills whatever still runs
when it ends. Handlers come from tests/task_plugins/faults.py and record each
run in the side table task_runs, so a test can count runs per task.
"""

import concurrent.futures
import http.client
import importlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text

from app.extensions import db
from app.tasks import Task, TaskEvent, queue, registry
from conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
FLASK = Path(sys.executable).with_name("flask")
PLUGIN = "tests.task_plugins.faults"

# TASKBOARD_* settings of every process these tests start.
PROCESS_SETTINGS = {
    "EMBEDDED_WORKER": "false",
    "TASK_MODULES": PLUGIN,
    "SECRET_KEY": "test-secret-key",
    "LEASE_SECONDS": "2",
    "HEARTBEAT_INTERVAL": "0.3",
    "WORKER_POLL_INTERVAL": "0.1",
    "WORKER_CONCURRENCY": "4",
    "RETRY_BACKOFF_BASE": "0.05",
    "RETRY_BACKOFF_MAX": "0.2",
    "SHUTDOWN_GRACE_SECONDS": "1",
    "LOG_LEVEL": "INFO",
}

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


class Child:
    """One process started by a test, with its output in a log file."""

    def __init__(self, process: subprocess.Popen, log_path: Path):
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_id(self, timeout: float = 20.0) -> str:
        """Wait until the process logs that its worker started; return the worker's id."""

        def started():
            if self.process.poll() is not None:
                raise AssertionError(f"process {self.pid} exited early:\n{self.log()}")
            match = re.search(r"Worker (\S+) started", self.log())
            return match.group(1) if match else None

        started.__doc__ = f"the worker in process {self.pid} starts"
        return wait_for(started, timeout=timeout, interval=0.05)


@pytest.fixture
def fault_app(make_app):
    """An application whose registry has the fault task types, on a database with task_runs."""
    app = make_app(TASK_MODULES=[PLUGIN])
    faults = importlib.import_module(PLUGIN)
    with app.app_context():
        faults.create_runs_table(db.engine)
        yield app
        db.session.remove()
        faults.drop_runs_table(db.engine)
    for name in faults.TYPE_NAMES:
        registry.unregister(name)
    sys.modules.pop(PLUGIN, None)


@pytest.fixture
def children(fault_app, database_url, tmp_path):
    """Start Taskboard processes on this test's database; kill those still running at the end."""
    started: list[Child] = []
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("TASKBOARD_")
    }
    environment.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")

    def start(*arguments: str, **settings) -> Child:
        number = len(started)
        instance = tmp_path / f"instance-{number}"
        env = dict(environment)
        env.update({f"TASKBOARD_{name}": str(value)
                    for name, value in {**PROCESS_SETTINGS, **settings}.items()})
        env["TASKBOARD_DATABASE_URL"] = database_url
        # The factory call keeps each process out of the repository's instance/
        # folder, which may hold a developer's database and config.py.
        command = [str(FLASK), "--app", f"app:create_app(instance_path={str(instance)!r})",
                   *arguments]
        log_path = tmp_path / f"process-{number}.log"
        with open(log_path, "wb") as output:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                       stdout=output, stderr=subprocess.STDOUT)
        child = Child(process, log_path)
        started.append(child)
        return child

    yield start
    for child in started:
        if child.process.poll() is None:
            child.process.kill()
    for child in started:
        child.process.wait(10)


def _worker(children, *options: str, **settings) -> Child:
    return children("worker", *options, **settings)


def _scalar(sql: str, **params):
    db.session.rollback()
    return db.session.execute(text(sql), params).scalar_one()


def _statuses() -> Counter:
    db.session.rollback()
    return Counter(dict(db.session.execute(
        text("SELECT status, count(*) FROM tasks GROUP BY status")).all()))


def _wait_until_all_terminal(count: int, timeout: float) -> None:
    def finished():
        return _scalar(f"SELECT count(*) FROM tasks WHERE status IN {TERMINAL}") == count

    finished.__doc__ = f"all {count} tasks reach a terminal status"
    wait_for(finished, timeout=timeout, interval=0.2)


def _submit_many(count: int, task_type: str, params_of=lambda number: {}, **fields) -> list[int]:
    return [queue.submit({"type": task_type, "params": params_of(number), **fields})[0].id
            for number in range(count)]


def _insert_due_tasks(count: int, task_type: str) -> list[int]:
    """Store `count` due PENDING tasks, each with its "submitted" event, in one transaction.

    The rows get the columns queue.submit fills, with the model's defaults.
    One submit takes a few milliseconds (about 7 ms on PostgreSQL on a
    2-core machine), so thousands of them would take most of the test's time.
    """
    created_at = datetime.now(UTC) - timedelta(seconds=1)
    rows = [{"type": task_type, "params": {}, "max_attempts": 3, "timeout_seconds": 60,
             "created_at": created_at, "run_at": created_at} for _ in range(count)]
    task_ids = list(db.session.scalars(insert(Task.__table__).returning(Task.__table__.c.id),
                                       rows))
    db.session.execute(insert(TaskEvent.__table__), [
        {"task_id": task_id, "kind": "submitted", "level": "info", "attempt": 0,
         "message": "Submitted from test", "created_at": created_at}
        for task_id in task_ids
    ])
    db.session.commit()
    return task_ids


def _runs_per_task() -> Counter:
    db.session.rollback()
    return Counter(dict(db.session.execute(
        text("SELECT task_id, count(*) FROM task_runs GROUP BY task_id")).all()))


def _events_by_task() -> dict[int, list]:
    db.session.rollback()
    rows = db.session.execute(text(
        "SELECT task_id, attempt, kind, worker_id FROM task_events ORDER BY id")).all()
    events = defaultdict(list)
    for row in rows:
        events[row.task_id].append(row)
    return events


def _attempts_held_by(worker_id: str) -> list[tuple[int, int]]:
    """Return (task id, attempt) of each task that `worker_id` has in PROCESSING."""
    db.session.rollback()
    return [tuple(row) for row in db.session.execute(
        text("SELECT id, attempts FROM tasks WHERE status = 'PROCESSING' AND locked_by = :worker"),
        {"worker": worker_id}).all()]


# kill -9 in the middle of the work


def _wait_for_server_to_finish_statements() -> None:
    """On PostgreSQL, wait until no other session of this database runs a statement.

    A COMMIT that a killed worker sent just before it died still completes
    on the server, so the worker's last changes may land after its exit.
    """
    if db.engine.dialect.name != "postgresql":
        return

    def settled():
        return _scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid() AND state = 'active'") == 0

    settled.__doc__ = "the killed worker's statements on the server end"
    wait_for(settled, timeout=10, interval=0.05)


def test_kill_9_loses_no_task(fault_app, children):
    kills = 3
    task_ids = _submit_many(300, "slow_record",
                            params_of=lambda number: {"seconds": random.uniform(0.02, 0.05)},
                            max_attempts=10)
    lost_attempts = []

    for _ in range(kills):
        child = _worker(children)
        worker_id = child.worker_id()
        succeeded_before = _statuses()["SUCCEEDED"]
        wait_for(lambda: _statuses()["SUCCEEDED"] >= succeeded_before + 30, timeout=30)
        wait_for(lambda: _attempts_held_by(worker_id), timeout=10)

        child.process.send_signal(signal.SIGKILL)
        child.process.wait(10)
        killed_at = datetime.now(UTC)
        _wait_for_server_to_finish_statements()
        unfinished = _attempts_held_by(worker_id)
        assert unfinished, f"worker {worker_id} held no attempt when it was killed"
        lost_attempts += [(task_id, attempt, worker_id, killed_at)
                          for task_id, attempt in unfinished]

    _worker(children)
    _wait_until_all_terminal(len(task_ids), timeout=90)

    events = _events_by_task()
    succeeded = Counter(task_id for task_id, task_events in events.items()
                        for event in task_events if event.kind == "succeeded")
    runs = _runs_per_task()
    assert _statuses() == {"SUCCEEDED": len(task_ids)}
    assert set(succeeded) == set(task_ids)
    assert set(succeeded.values()) == {1}
    assert set(runs) == set(task_ids)
    assert _scalar("SELECT count(*) FROM (SELECT task_id, attempt FROM task_runs "
                   "GROUP BY task_id, attempt HAVING count(*) > 1) AS repeated") == 0
    assert len(lost_attempts) >= kills
    expired_at = {(event.task_id, event.attempt): event.created_at
                  for event in db.session.scalars(
                      select(TaskEvent).where(TaskEvent.kind == "lease_expired"))}
    # A lease runs out at most LEASE_SECONDS after the kill, and the next
    # worker, started at once, recovers it at one of its polls.
    recovery_bound = float(PROCESS_SETTINGS["LEASE_SECONDS"]) + 4
    for task_id, attempt, worker_id, killed_at in lost_attempts:
        of_attempt = [(e.kind, e.worker_id) for e in events[task_id] if e.attempt == attempt]
        assert of_attempt[:3] == [
            ("started", worker_id), ("lease_expired", worker_id), ("retry_scheduled", worker_id),
        ], f"task {task_id} attempt {attempt}"
        recovered_after = (expired_at[task_id, attempt] - killed_at).total_seconds()
        assert recovered_after < recovery_bound, f"task {task_id} attempt {attempt}"
    for task_id in task_ids:
        kinds = [e.kind for e in events[task_id]]
        assert kinds[0] == "submitted"
        assert kinds[-1] == "succeeded"
        assert kinds.count("started") == kinds.count("lease_expired") + 1, f"task {task_id}"
        for position, kind in enumerate(kinds):
            if kind == "lease_expired":
                assert kinds[position + 1] in {"retry_scheduled", "failed"}, f"task {task_id}"


# Several workers on one database


def test_workers_run_each_task_once(fault_app, children, database_url):
    on_postgres = database_url.startswith("postgresql")
    worker_count, task_count = (4, 3000) if on_postgres else (2, 2000)
    task_ids = _insert_due_tasks(task_count, "record_run")

    workers = [_worker(children) for _ in range(worker_count)]
    for child in workers:
        child.worker_id()
    _wait_until_all_terminal(task_count, timeout=120)

    runs = _runs_per_task()
    started = Counter(_events_kind_counts("started"))
    pids = {row[0] for row in db.session.execute(text("SELECT DISTINCT worker_pid FROM task_runs"))}
    assert _statuses() == {"SUCCEEDED": task_count}
    assert _scalar("SELECT count(*) FROM task_runs") == task_count
    assert set(runs) == set(task_ids)
    assert set(runs.values()) == {1}
    assert set(started.values()) == {1}
    assert _scalar("SELECT max(attempts) FROM tasks") == 1
    assert pids == {child.pid for child in workers}


def _events_kind_counts(kind: str) -> dict[int, int]:
    db.session.rollback()
    return dict(db.session.execute(
        text("SELECT task_id, count(*) FROM task_events WHERE kind = :kind GROUP BY task_id"),
        {"kind": kind}).all())


# SIGTERM


@pytest.mark.parametrize(
    "task_type, seconds",
    [("sleep", 30), ("slow_record", 30)],
    ids=["stops-when-asked", "ignores-stop"],
)
def test_sigterm_releases_long_task(fault_app, children, task_type, seconds):
    grace = 1
    [task_id] = _submit_many(1, task_type, params_of=lambda number: {"seconds": seconds})
    child = _worker(children, SHUTDOWN_GRACE_SECONDS=grace)
    worker_id = child.worker_id()
    wait_for(lambda: _attempts_held_by(worker_id), timeout=10)

    sent = time.monotonic()
    child.process.send_signal(signal.SIGTERM)
    try:
        returncode = child.process.wait(grace + 3)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker was still running {grace + 3} s after SIGTERM:\n{child.log()}")
    exit_seconds = time.monotonic() - sent

    db.session.rollback()
    task = db.session.get(Task, task_id, populate_existing=True)
    kinds = [event.kind for event in _events_by_task()[task_id]]
    assert returncode == 0, child.log()
    assert exit_seconds >= grace
    assert task.status == "PENDING"
    assert task.attempts == 0
    assert task.locked_by is None
    # The sleep handler's own log lines aside.
    assert [kind for kind in kinds if kind != "log"] == ["submitted", "started", "requeued"]
    assert "stopping gracefully" in child.log()
    assert f"Worker {worker_id} stopped" in child.log()


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_second_signal_exits_at_once(fault_app, children, signal_number):
    [task_id] = _submit_many(1, "slow_record", params_of=lambda number: {"seconds": 30})
    child = _worker(children, SHUTDOWN_GRACE_SECONDS=30)
    worker_id = child.worker_id()
    wait_for(lambda: _attempts_held_by(worker_id), timeout=10)

    child.process.send_signal(signal_number)
    wait_for(lambda: "stopping gracefully" in child.log(), timeout=5)
    sent = time.monotonic()
    child.process.send_signal(signal_number)
    returncode = child.process.wait(5)
    exit_seconds = time.monotonic() - sent

    assert returncode != 0
    assert exit_seconds < 2
    assert f"got a second {signal_number.name}: exiting at once" in child.log()
    assert _attempts_held_by(worker_id) == [(task_id, 1)]
    time.sleep(float(PROCESS_SETTINGS["LEASE_SECONDS"]) + 0.2)
    assert queue.recover_expired_leases() == 1
    assert _statuses() == {"RETRYING": 1}


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM],
                         ids=["SIGINT", "SIGTERM"])
def test_web_server_stop_releases_task(fault_app, children, signal_number):
    grace = 1
    [task_id] = _submit_many(1, "slow_record", params_of=lambda number: {"seconds": 30})
    server = children("run", "--host", "127.0.0.1", "--port", str(_free_port()), "--no-reload",
                      "--no-debugger", EMBEDDED_WORKER="true", SHUTDOWN_GRACE_SECONDS=grace)
    worker_id = server.worker_id()
    wait_for(lambda: _attempts_held_by(worker_id), timeout=10)

    server.process.send_signal(signal_number)
    try:
        server.process.wait(grace + 3)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server was still running {grace + 3} s after "
                    f"{signal_number.name}:\n{server.log()}")

    kinds = [event.kind for event in _events_by_task()[task_id]]
    assert _statuses() == {"PENDING": 1}, server.log()
    assert kinds == ["submitted", "started", "requeued"]


# Wake-ups across processes


def test_submit_wakes_worker_in_other_process(fault_app, children, database_url):
    if database_url.startswith("postgresql"):
        # A poll every 10 s: only NOTIFY can start the task within a second.
        poll_interval = 10
        child = _worker(children, WORKER_POLL_INTERVAL=poll_interval)
        child.worker_id()

        def listening():
            """the worker's connection runs LISTEN"""
            return _scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND query LIKE 'LISTEN%'")

        wait_for(listening, timeout=10)
        # Once this first task is done, the worker has finished its first
        # poll and the wake-up that follows each attempt.
        [warm_up] = _submit_many(1, "record_run")
        wait_for(lambda: _scalar("SELECT status FROM tasks WHERE id = :id", id=warm_up)
                 == "SUCCEEDED", timeout=10)
    else:
        poll_interval = 0.2
        child = _worker(children, WORKER_POLL_INTERVAL=poll_interval)
        child.worker_id()

    submitted = time.monotonic()
    [task_id] = _submit_many(1, "record_run")
    wait_for(lambda: _scalar("SELECT status FROM tasks WHERE id = :id", id=task_id)
             == "SUCCEEDED", timeout=poll_interval + 5)
    waited = time.monotonic() - submitted

    db.session.rollback()
    task = db.session.get(Task, task_id, populate_existing=True)
    assert (task.started_at - task.created_at).total_seconds() < 1
    assert waited < 2


# Many HTTP clients while two processes run tasks


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post_task(port: int, number: int) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = json.dumps({"type": "record_run", "idempotency_key": f"client-{number}"})
        connection.request("POST", "/api/tasks", body=body,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def test_many_clients_submit_while_workers_run(fault_app, children, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("this test is about SQLite's single writer; PostgreSQL has no such limit")
    clients, requests = 16, 800
    port = _free_port()
    server = children("run", "--host", "127.0.0.1", "--port", str(port), "--no-reload",
                      "--no-debugger", "--with-threads", EMBEDDED_WORKER="true")
    server.worker_id()
    extra = _worker(children)
    extra.worker_id()

    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        responses = list(pool.map(lambda number: _post_task(port, number), range(requests)))
    _wait_until_all_terminal(requests, timeout=90)

    statuses = Counter(status for status, _ in responses)
    task_ids = {json.loads(body)["id"] for status, body in responses if status == 201}
    runs = _runs_per_task()
    pids = {row[0] for row in db.session.execute(text("SELECT DISTINCT worker_pid FROM task_runs"))}
    assert statuses == {201: requests}
    assert not [body for _, body in responses if "database is locked" in body]
    assert len(task_ids) == requests
    assert _scalar("SELECT count(*) FROM tasks") == requests
    assert _statuses() == {"SUCCEEDED": requests}
    assert set(runs) == task_ids
    assert set(runs.values()) == {1}
    assert pids == {server.pid, extra.pid}
    for child in (server, extra):
        output = child.log()
        assert "database is locked" not in output
        assert "Traceback" not in output
        assert '" 500 ' not in output
