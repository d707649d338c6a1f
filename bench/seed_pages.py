"""Seed the page benchmark's databases with 1,000,000 tasks and 5,000,000 events.

    .venv/bin/python -m bench.seed_pages                      # both databases
    .venv/bin/python -m bench.seed_pages --database sqlite --reset
    .venv/bin/python -m bench.seed_pages --upgrade            # new migrations only

Each database is first brought to the latest migration through Flask-Migrate,
so its tables and indexes are the ones the migrations create. The seed then
drops the secondary indexes of tasks and task_events, loads the rows (COPY on
PostgreSQL, executemany in one transaction on SQLite with its journal off),
and recreates each index from the definition the database reported before the
drop. CHECK constraints stay on during the load, so a row that breaks an
invariant stops the seed.

The rows are a snapshot of a deployment that ran for SPAN_DAYS days: task ids
grow with created_at, event ids grow with event time, every event lies in the
past, and each task's events follow its lifecycle. The data is the same on
both databases for the same --random-seed.
"""

import argparse
import heapq
import json
import math
import os
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from bench.common import POSTGRES_ADMIN_URL, ROOT

DATABASES = ("sqlite", "postgresql")
SQLITE_PATH = os.path.join(ROOT, "instance", "bench_pages.db")
POSTGRES_DATABASE = "taskboard_bench_pages"

DEFAULT_TASKS = 1_000_000
DEFAULT_EVENTS = 5_000_000
DEFAULT_RANDOM_SEED = 20261204

SPAN_DAYS = 30
MICROSECONDS = 1_000_000
MINUTE = 60 * MICROSECONDS
HOUR = 60 * MINUTE
DAY = 24 * HOUR

TASK_COLUMNS = (
    "id", "type", "params", "queue", "status", "priority", "attempts", "max_attempts",
    "timeout_seconds", "progress", "progress_message", "idempotency_key", "cancel_requested",
    "locked_by", "lease_expires_at", "created_at", "run_at", "started_at", "finished_at",
    "result", "last_error", "last_traceback",
)
TASK_TIME_COLUMNS = frozenset({"lease_expires_at", "created_at", "run_at", "started_at",
                               "finished_at"})
EVENT_COLUMNS = ("id", "task_id", "kind", "level", "attempt", "worker_id", "message", "created_at")
# Migration 0008 added task_events.traceback: the traceback of the attempt
# that the event ends. It is written when the table has it.
EVENT_TRACEBACK = "traceback"

# Queues with their share of submissions. The reports queue was paused
# REPORTS_PAUSED_FOR before the snapshot, so its newer tasks wait as a backlog.
QUEUES = {"default": 0.60, "bulk": 0.20, "reports": 0.12, "critical": 0.08}
PAUSED_QUEUE = "reports"
REPORTS_PAUSED_FOR = 6 * HOUR
LIMITED_QUEUE, LIMITED_QUEUE_CONCURRENCY = "bulk", 2

# Registered worker processes at the snapshot, each running up to
# WORKER_CONCURRENCY attempts. Workers restart on each deploy, every
# DEPLOY_INTERVAL, so older events name older worker ids.
WORKER_HOSTS = ("web-1", "web-2", "worker-1", "worker-2")
WORKER_CONCURRENCY = 4
DEPLOY_INTERVAL = 2 * DAY
CURRENT_DEPLOY_AGE = 31 * HOUR
# The newest tasks are sleeps that are still running at the snapshot.
RUNNING_AT_SNAPSHOT = 8

# Queue depth samples kept: each new sample deletes those older than a day
# (SAMPLE_RETENTION in app/tasks/stats.py).
SAMPLE_DAYS = 1

SUBMISSION_SOURCES = (("the JSON API", 0.70), ("code", 0.22), ("the dashboard form", 0.08))
WORDS = ("invoice customer shipment order report archive export import batch ledger "
         "account refund payment receipt summary monthly weekly daily region warehouse "
         "stock item price total tax discount vendor contract renewal notice").split()


@dataclass
class TaskPlan:
    """One task at the snapshot: its row and its events, apart from extra log lines.

    `row` maps TASK_COLUMNS to values with times in microseconds since the
    epoch. `events` contains (time, kind, level, attempt, worker_id, message).
    `log_windows` contains one (attempt, start, end, worker_id) for each attempt
    that ran, the stretch of time where its extra log lines go.
    """

    row: dict
    events: list = field(default_factory=list)
    log_windows: list = field(default_factory=list)


@dataclass(frozen=True)
class Shape:
    tasks: int
    events: int
    random_seed: int
    now: int

    @property
    def start(self) -> int:
        return self.now - SPAN_DAYS * DAY


# Task plans


def _weighted(rng: random.Random, choices) -> str:
    roll = rng.random()
    for value, weight in choices:
        roll -= weight
        if roll < 0:
            return value
    return choices[-1][0]


def worker_id_at(moment: int, shape: Shape, slot: int) -> str:
    """Return the id of the worker process that served `slot` at `moment`.

    The id has the shape the worker gives itself: host, pid and a random
    suffix. It changes at each deploy. The running workers were deployed
    CURRENT_DEPLOY_AGE before the snapshot, the ones before them every
    DEPLOY_INTERVAL earlier.
    """
    deployed_at = shape.now - CURRENT_DEPLOY_AGE
    deploy = 0 if moment >= deployed_at else 1 + (deployed_at - moment - 1) // DEPLOY_INTERVAL
    host = WORKER_HOSTS[slot % len(WORKER_HOSTS)]
    pid = 1000 + (deploy * 7919 + slot * 104729) % 60000
    suffix = f"{(deploy * 2654435761 + slot * 40503 + 12345) % 0xFFFFFF:06x}"
    return f"{host}:{pid}:{suffix}"


def _text(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(1, 4)):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))))
    return "\n".join(lines)


def _params(rng: random.Random, task_type: str) -> dict:
    if task_type == "word_count":
        return {"text": _text(rng)}
    if task_type == "sleep":
        return {"seconds": rng.choice((0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0))}
    if task_type == "flaky":
        return {"failure_rate": rng.choice((0.05, 0.1, 0.2, 0.3, 0.5))}
    if task_type == "fail":
        return {"message": rng.choice(("This task always fails.",
                                       "Upstream rejected the request: 503 Service Unavailable",
                                       "Export target is read-only"))}
    return {}


def _duration(rng: random.Random, task_type: str, params: dict) -> int:
    """Return how long one attempt runs, in microseconds."""
    if task_type == "sleep":
        return int(params["seconds"] * MICROSECONDS) + rng.randint(500, 20_000)
    if task_type == "word_count":
        return rng.randint(300, 3000) + len(params["text"]) * 2
    return rng.randint(200, 5000)


def _traceback(function: str, line: int, statement: str, error: str) -> str:
    return (
        "Traceback (most recent call last):\n"
        '  File "/srv/taskboard/app/worker/worker.py", line 494, in run_handler\n'
        "    result = task_type.handler(attempt.context, **claim.params)\n"
        "             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        f'  File "/srv/taskboard/app/handlers/__init__.py", line {line}, in {function}\n'
        f"    {statement}\n"
        f"{error}\n"
    )


def _attempt_error(rng: random.Random, task_type: str, params: dict) -> tuple[str, str] | None:
    """Return (error, traceback) when an attempt of this task fails, else None."""
    if task_type == "fail":
        error = f"RuntimeError: {params['message']}"
        return error, _traceback("fail", 50, "raise RuntimeError(message)", error)
    if task_type == "flaky" and rng.random() < params["failure_rate"]:
        error = f"RuntimeError: flaky task failed (failure rate {params['failure_rate']:g})"
        return error, _traceback(
            "flaky", 64,
            'raise RuntimeError(f"flaky task failed (failure rate {failure_rate:g})")', error)
    return None


def _result(rng: random.Random, task_type: str, params: dict, attempt: int):
    if task_type == "word_count":
        text = params["text"]
        return {"words": len(text.split()), "lines": len(text.splitlines()),
                "characters": len(text)}
    if task_type == "sleep":
        return {"slept_seconds": params["seconds"]}
    if task_type == "flaky":
        return {"attempt": attempt}
    return None


def _retry_delay(rng: random.Random, attempt: int) -> int:
    """Return the backoff before the next attempt, as the default settings compute it."""
    delay = min(2.0 * 2 ** (attempt - 1), 3600.0)
    return int(delay * (1 - rng.random() / 2) * MICROSECONDS)


class Planner:
    """Draw the task plans of one seed, in id order, from one random generator.

    Two planners with the same shape return the same plans, which lets the
    seed count the events in a first pass and write them in a second.
    """

    def __init__(self, shape: Shape):
        self.shape = shape
        self.rng = random.Random(shape.random_seed)
        self.step = SPAN_DAYS * DAY // shape.tasks
        self.running = 0
        self.idempotency_serial = 0

    def plans(self) -> Iterator[TaskPlan]:
        for task_id in range(1, self.shape.tasks + 1):
            yield self.plan(task_id)

    def plan(self, task_id: int) -> TaskPlan:
        rng, shape = self.rng, self.shape
        created = shape.start + (task_id - 1) * self.step + rng.randrange(self.step)
        age = shape.now - created
        queue = _weighted(rng, tuple(QUEUES.items()))
        newest = task_id > shape.tasks - RUNNING_AT_SNAPSHOT

        fate = "run"
        if newest:
            task_type = "sleep"
        elif queue == PAUSED_QUEUE and age < REPORTS_PAUSED_FOR:
            fate, task_type = "backlog", "word_count"
        elif rng.random() < 0.012:
            fate, task_type = "scheduled", _weighted(rng, (("word_count", 0.5), ("noop", 0.3),
                                                           ("sleep", 0.2)))
        elif age < 3 * HOUR and queue == "bulk" and rng.random() < 0.4:
            # An upstream outage in the last hours: these attempts fail and back off.
            fate, task_type = "retrying", "flaky"
        else:
            task_type = _weighted(rng, (("word_count", 0.42), ("noop", 0.2), ("sleep", 0.18),
                                        ("flaky", 0.15), ("fail", 0.05)))
        params = _params(rng, task_type)
        if newest:
            params = {"seconds": 120.0}
        if fate == "retrying":
            params = {"failure_rate": 0.9}

        max_attempts = _weighted(rng, ((3, 0.8), (5, 0.12), (1, 0.05), (10, 0.03)))
        if fate == "retrying":
            max_attempts = 10
        timeout = 3660.0 if task_type == "sleep" else 300.0
        if task_type == "sleep" and rng.random() < 0.05:
            timeout = 30.0
        key = None
        if rng.random() < 0.1:
            self.idempotency_serial += 1
            key = f"{queue}-{task_type}-{self.idempotency_serial:08d}"

        row = {
            "id": task_id, "type": task_type, "params": params, "queue": queue,
            "status": "PENDING", "priority": _weighted(rng, ((0, 0.85), (10, 0.08), (-5, 0.05),
                                                             (50, 0.02))),
            "attempts": 0, "max_attempts": max_attempts, "timeout_seconds": timeout,
            "progress": 0, "progress_message": None, "idempotency_key": key,
            "cancel_requested": False, "locked_by": None, "lease_expires_at": None,
            "created_at": created, "run_at": created, "started_at": None, "finished_at": None,
            "result": None, "last_error": None, "last_traceback": None,
        }
        plan = TaskPlan(row)
        source = _weighted(rng, SUBMISSION_SOURCES)

        if fate == "scheduled":
            row["run_at"] = shape.now + rng.randint(MINUTE, 14 * DAY)
            if rng.random() < 0.12:
                return self._cancel_waiting(plan, source)
            due = _datetime(row["run_at"]).isoformat(timespec="seconds")
            plan.events.append((created, "submitted", "info", 0, None,
                                f"Submitted from {source}; due at {due}"))
            return plan

        plan.events.append((created, "submitted", "info", 0, None, f"Submitted from {source}"))
        if fate == "backlog":
            return plan
        if fate == "retrying":
            return self._retrying(plan)
        return self._run(plan, newest)

    def _cancel_waiting(self, plan: TaskPlan, source: str) -> TaskPlan:
        row, rng = plan.row, self.rng
        cancelled = row["created_at"] + rng.randint(MINUTE, max(MINUTE, self.shape.now
                                                                 - row["created_at"] - MINUTE))
        cancelled = max(row["created_at"], min(cancelled, self.shape.now - MICROSECONDS))
        row["run_at"] = max(row["run_at"], cancelled + HOUR)
        due = _datetime(row["run_at"]).isoformat(timespec="seconds")
        plan.events.append((row["created_at"], "submitted", "info", 0, None,
                            f"Submitted from {source}; due at {due}"))
        plan.events.append((cancelled, "cancelled", "warning", 0, None,
                            "Cancelled by a person from the task page"))
        row.update(status="CANCELLED", finished_at=cancelled)
        return plan

    def _retrying(self, plan: TaskPlan) -> TaskPlan:
        """Plan a task whose attempts failed so far and whose next one is due after the snapshot.

        The attempts sit in equal slots between created_at and the snapshot.
        Each starts at most a quarter slot before its slot boundary and lasts
        at most a quarter slot, so every event lies in the past and attempts
        never overlap.
        """
        row, rng, now = plan.row, self.rng, self.shape.now
        created, attempts = row["created_at"], rng.randint(1, 6)
        slot = (now - created) // (attempts + 1)
        starts = [created + number * slot - rng.randint(0, slot // 4)
                  for number in range(1, attempts + 1)]
        error = "RuntimeError: flaky task failed (failure rate 0.9)"
        traceback = _traceback(
            "flaky", 64,
            'raise RuntimeError(f"flaky task failed (failure rate {failure_rate:g})")', error)
        for attempt, start in enumerate(starts, 1):
            end = start + min(rng.randint(2 * MICROSECONDS, 15 * MICROSECONDS), slot // 4)
            worker = worker_id_at(start, self.shape, rng.randrange(len(WORKER_HOSTS)))
            if attempt < attempts:
                run_at = max(end, starts[attempt] - rng.randint(0, 1000))
            else:
                run_at = now + rng.randint(10 * MICROSECONDS, HOUR)
            plan.events.append((start, "started", "info", attempt, worker,
                                f"Attempt {attempt} of {row['max_attempts']} started"))
            plan.log_windows.append((attempt, start, end, worker))
            plan.events.append((end, "retry_scheduled", "warning", attempt, worker,
                                f"Attempt {attempt} of {row['max_attempts']} failed: {error}. "
                                f"Retrying in {(run_at - end) / MICROSECONDS:.1f} s.",
                                traceback))
            row.update(started_at=start, run_at=run_at)
        row.update(status="RETRYING", attempts=attempts, last_error=error,
                   last_traceback=traceback)
        return plan

    def _run(self, plan: TaskPlan, newest: bool) -> TaskPlan:
        """Plan the attempts of a task up to the snapshot, which fixes its status."""
        row, rng, shape = plan.row, self.rng, self.shape
        task_type, params, max_attempts = row["type"], row["params"], row["max_attempts"]
        due = row["run_at"]
        requeued = False
        attempt = 0
        while True:
            attempt += 1
            start = due + rng.randint(2000, 1_500_000)
            if start >= shape.now:
                row["status"] = "PENDING" if attempt == 1 or requeued else "RETRYING"
                return plan
            worker = worker_id_at(start, shape, rng.randrange(len(WORKER_HOSTS)))
            duration = _duration(rng, task_type, params)
            timeout = int(row["timeout_seconds"] * MICROSECONDS)
            end = start + min(duration, timeout)
            if end >= shape.now or newest:
                if self.running >= len(WORKER_HOSTS) * WORKER_CONCURRENCY:
                    row["status"] = "PENDING" if attempt == 1 or requeued else "RETRYING"
                    return plan
                return self._processing(plan, attempt, start)

            row.update(attempts=attempt, started_at=start)
            plan.events.append((start, "started", "info", attempt, worker,
                                f"Attempt {attempt} of {max_attempts} started"))
            if task_type == "sleep" and rng.random() < 0.03:
                return self._cancel_running(plan, attempt, start, end, worker)

            if duration > timeout:
                error, traceback = f"TaskTimeout: timed out after {row['timeout_seconds']:g} s", None
            elif rng.random() < 0.0005:
                # The worker died: its lease ran out and another worker recovered the attempt.
                lease_end = start + rng.randint(10, 30) * MICROSECONDS
                recovered = lease_end + rng.randint(1, 5) * MICROSECONDS
                if recovered >= shape.now:
                    return self._processing(plan, attempt, start)
                error = (f"WorkerLost: worker lost; {worker} stopped renewing its lease, which "
                         f"expired at {_datetime(lease_end).isoformat(timespec='seconds')}")
                traceback = None
                plan.events.append((recovered, "lease_expired", "warning", attempt, worker,
                                    f"Lease of {worker} expired; the attempt is lost"))
                end = recovered
            else:
                failure = _attempt_error(rng, task_type, params)
                if failure is None:
                    plan.log_windows.append((attempt, start, end, worker))
                    return self._succeed(plan, attempt, end, worker)
                error, traceback = failure
                if task_type == "fail":
                    plan.events.append((start + (end - start) // 2, "log", "warning", attempt,
                                        worker,
                                        f"Attempt {attempt} of {max_attempts} is about to raise"))
            plan.log_windows.append((attempt, start, min(end, start + duration), worker))

            row.update(last_error=error, last_traceback=traceback)
            header = f"Attempt {attempt} of {max_attempts} failed: {error}."
            if attempt < max_attempts:
                delay = _retry_delay(rng, attempt)
                plan.events.append((end, "retry_scheduled", "warning", attempt, worker,
                                    f"{header} Retrying in {delay / MICROSECONDS:.1f} s.",
                                    traceback))
                due = end + delay
                row["run_at"] = due
                if due >= shape.now:
                    row["status"] = "RETRYING"
                    return plan
                continue

            plan.events.append((end, "failed", "error", attempt, worker,
                                f"{header} No attempts left.", traceback))
            row.update(status="FAILED", finished_at=end)
            if requeued or rng.random() >= 0.08:
                return plan
            # A person looked at the failure and retried the task by hand.
            requeue_at = end + rng.randint(MINUTE, DAY)
            if requeue_at >= shape.now:
                return plan
            requeued = True
            plan.events.append((requeue_at, "requeued", "info", attempt, None,
                                f"Retried by a person from the task page; attempt {attempt + 1} "
                                "is due now"))
            row.update(status="PENDING", run_at=requeue_at, finished_at=None,
                       max_attempts=max(max_attempts, attempt + 1))
            max_attempts = row["max_attempts"]
            due = requeue_at

    def _processing(self, plan: TaskPlan, attempt: int, start: int) -> TaskPlan:
        row, shape = plan.row, self.shape
        self.running += 1
        worker = worker_id_at(shape.now, shape, (self.running - 1) % len(WORKER_HOSTS))
        if start < shape.now - 30 * MICROSECONDS:
            start = shape.now - self.rng.randint(1, 30) * MICROSECONDS
        start = max(start, row["run_at"])
        seconds = row["params"].get("seconds") if row["type"] == "sleep" else None
        row.update(status="PROCESSING", attempts=attempt, started_at=start, locked_by=worker,
                   lease_expires_at=shape.now + self.rng.randint(20, 30) * MICROSECONDS)
        if seconds:
            elapsed = (shape.now - start) / MICROSECONDS
            row.update(progress=min(99, int(100 * elapsed / seconds)),
                       progress_message=f"{elapsed:.1f} of {seconds:g} s")
        plan.events.append((start, "started", "info", attempt, worker,
                            f"Attempt {attempt} of {row['max_attempts']} started"))
        plan.log_windows.append((attempt, start, shape.now - 1, worker))
        return plan

    def _cancel_running(self, plan: TaskPlan, attempt: int, start: int, end: int,
                        worker: str) -> TaskPlan:
        row, rng = plan.row, self.rng
        requested = start + rng.randint(1, max(1, end - start - 1))
        stopped = requested + rng.randint(1000, 500_000)
        seconds = row["params"]["seconds"]
        elapsed = min(seconds, (stopped - start) / MICROSECONDS)
        error = f"TaskCancelled: cancelled after {elapsed:.1f} of {seconds:g} s"
        plan.log_windows.append((attempt, start, requested, worker))
        plan.events.append((requested, "log", "warning", attempt, None,
                            "Cancellation requested from the task page; "
                            "the running handler is asked to stop"))
        plan.events.append((stopped, "cancelled", "warning", attempt, worker,
                            f"Cancelled by a person while attempt {attempt} of "
                            f"{row['max_attempts']} ran; the handler stopped with {error}"))
        row.update(status="CANCELLED", finished_at=stopped, cancel_requested=True,
                   last_error=error)
        return plan

    def _succeed(self, plan: TaskPlan, attempt: int, end: int, worker: str) -> TaskPlan:
        row = plan.row
        if row["type"] == "word_count":
            text = row["params"]["text"]
            words, lines = len(text.split()), len(text.splitlines())
            plan.events.append((end - 50, "log", "info", attempt, worker,
                                f"Counted {words} word{'s' * (words != 1)} in "
                                f"{lines} line{'s' * (lines != 1)}"))
        plan.events.append((end, "succeeded", "info", attempt, worker,
                            f"Attempt {attempt} succeeded"))
        row.update(status="SUCCEEDED", finished_at=end, progress=100,
                   result=_result(self.rng, row["type"], row["params"], attempt))
        return plan


# Extra log lines and the event stream


def _log_message(rng: random.Random, task_type: str, params: dict, index: int, count: int) -> str:
    if task_type == "sleep":
        seconds = params["seconds"]
        return f"{seconds * (index + 1) / (count + 1):.1f} of {seconds:g} s slept"
    if task_type == "word_count":
        return f"Read chunk {index + 1} of {count} ({rng.randint(200, 4000)} characters)"
    if task_type == "flaky":
        return f"Calling the upstream service, try {index + 1}"
    if task_type == "fail":
        return f"Checking the input, step {index + 1} of {count}"
    return f"Step {index + 1} of {count} done"


def count_planned(shape: Shape) -> tuple[int, int]:
    """Return the lifecycle events and the attempts with a log window that `shape` plans."""
    events = windows = 0
    for plan in Planner(shape).plans():
        events += len(plan.events)
        windows += len(plan.log_windows)
    return events, windows


def generate(shape: Shape, lifecycle_events: int, windows: int) -> Iterator[tuple[str, tuple]]:
    """Yield ("task", row) and ("event", row) in the order they can be inserted.

    Tasks come in id order. Events get ids in time order: an event is
    yielded once no task still to come can have an earlier one. No event of
    a task precedes its created_at, so the next task's created_at is that bound. The extra log lines
    share out exactly `shape.events - lifecycle_events` among the `windows`
    attempts that ran, so the total is exact.
    """
    log_rng = random.Random(shape.random_seed + 1)
    logs_left = shape.events - lifecycle_events
    windows_left = windows
    pending: list = []
    event_id = 0

    for plan in Planner(shape).plans():
        row = plan.row
        while pending and pending[0][0] < row["created_at"]:
            event_id += 1
            yield "event", _event_row(event_id, heapq.heappop(pending))

        yield "task", row
        for order, event in enumerate(plan.events):
            heapq.heappush(pending, (event[0], row["id"], order, event))
        for attempt, start, end, worker in plan.log_windows:
            mean = logs_left / windows_left
            count = logs_left if windows_left == 1 else min(
                logs_left, int(log_rng.expovariate(1 / (mean + 0.5))))
            logs_left -= count
            windows_left -= 1
            for index, moment in enumerate(sorted(log_rng.randint(start, end)
                                                  for _ in range(count))):
                level = _weighted(log_rng, (("info", 0.86), ("debug", 0.10), ("warning", 0.04)))
                message = _log_message(log_rng, row["type"], row["params"], index, count)
                event = (moment, "log", level, attempt, worker, message)
                heapq.heappush(pending, (moment, row["id"], 1000 + index, event))

    while pending:
        event_id += 1
        yield "event", _event_row(event_id, heapq.heappop(pending))


def _event_row(event_id: int, item) -> dict:
    _, task_id, _, (time_, kind, level, attempt, worker, message, *traceback) = item
    return {"id": event_id, "task_id": task_id, "kind": kind, "level": level,
            "attempt": attempt, "worker_id": worker, "message": message, "created_at": time_,
            EVENT_TRACEBACK: traceback[0] if traceback else None}


def queue_samples(shape: Shape) -> Iterator[dict]:
    """Yield one depth sample per queue and minute over the last SAMPLE_DAYS.

    The waiting counts are drawn at random, not counted from the tasks,
    because the depth chart only needs rows of the right number and range.
    """
    rng = random.Random(shape.random_seed + 2)
    paused_at = shape.now - REPORTS_PAUSED_FOR
    first = shape.now - SAMPLE_DAYS * DAY
    first += MINUTE - first % MINUTE
    per_minute = shape.tasks / (SPAN_DAYS * 24 * 60)
    for moment in range(first, shape.now, MINUTE):
        for queue, share in QUEUES.items():
            waiting = int(rng.expovariate(1 / max(0.1, per_minute * share * 0.2)))
            if queue == PAUSED_QUEUE and moment >= paused_at:
                waiting += int((moment - paused_at) / MINUTE * per_minute * share)
            processing = min(rng.randint(0, 2), len(WORKER_HOSTS) * WORKER_CONCURRENCY)
            yield {"sampled_at": moment, "queue": queue, "waiting": waiting,
                   "processing": processing}


# Values as each database takes them


EPOCH = datetime(1970, 1, 1)


def _datetime(microseconds: int) -> datetime:
    return (EPOCH + timedelta(microseconds=microseconds)).replace(tzinfo=UTC)


def sqlite_time(microseconds: int | None) -> str | None:
    """Format a time as the naive UTC text SQLAlchemy stores for DateTime on SQLite."""
    if microseconds is None:
        return None
    return (EPOCH + timedelta(microseconds=microseconds)).isoformat(" ", "microseconds")


def postgres_time(microseconds: int | None) -> str | None:
    if microseconds is None:
        return None
    return (EPOCH + timedelta(microseconds=microseconds)).isoformat(" ", "microseconds") + "+00"


def _json(value) -> str | None:
    return None if value is None else json.dumps(value)


def task_values(row: dict, format_time, true, false) -> tuple:
    values = []
    for column in TASK_COLUMNS:
        value = row[column]
        if column in TASK_TIME_COLUMNS:
            value = format_time(value)
        elif column in ("params", "result"):
            value = _json(value)
        elif column == "cancel_requested":
            value = true if value else false
        values.append(value)
    return tuple(values)


def event_values(row: dict, format_time, columns=EVENT_COLUMNS) -> tuple:
    return tuple(format_time(row[c]) if c == "created_at" else row[c] for c in columns)


def event_columns(kind: str) -> tuple[str, ...]:
    """Return the task_events columns the seed writes: EVENT_COLUMNS, and the traceback if present."""
    if kind == "sqlite":
        connection = sqlite3.connect(SQLITE_PATH)
        try:
            names = {row[1] for row in connection.execute("PRAGMA table_info(task_events)")}
        finally:
            connection.close()
    else:
        with psycopg.connect(database_url(kind)) as connection:
            names = {name for (name,) in connection.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = 'task_events'")}
    return EVENT_COLUMNS + ((EVENT_TRACEBACK,) if EVENT_TRACEBACK in names else ())


# Database handling


def database_url(kind: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{SQLITE_PATH}"
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + POSTGRES_DATABASE


def create_bench_app(kind: str):
    """Create the Taskboard app on the page benchmark's database, without an embedded worker."""
    from app import create_app

    return create_app({"DATABASE_URL": database_url(kind), "EMBEDDED_WORKER": False,
                       "LOG_LEVEL": "WARNING"})


def head_revision() -> str:
    from app import MIGRATIONS_DIRECTORY

    return ScriptDirectory(MIGRATIONS_DIRECTORY).get_current_head()


def current_revision(app) -> str | None:
    from app.extensions import db

    with app.app_context(), db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def database_exists(kind: str) -> bool:
    if kind == "sqlite":
        return os.path.exists(SQLITE_PATH)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                             (POSTGRES_DATABASE,)).fetchone() is not None


def drop_database(kind: str) -> None:
    if kind == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            if os.path.exists(SQLITE_PATH + suffix):
                os.remove(SQLITE_PATH + suffix)
        return
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{POSTGRES_DATABASE}" WITH (FORCE)')


def create_database(kind: str) -> None:
    if kind == "sqlite":
        os.makedirs(os.path.dirname(SQLITE_PATH), exist_ok=True)
        return
    if not database_exists(kind):
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{POSTGRES_DATABASE}"')


def upgrade_database(kind: str) -> tuple[str | None, str]:
    """Run the migrations up to head; return the revisions before and after."""
    from flask_migrate import upgrade

    from app.extensions import db

    app = create_bench_app(kind)
    before = current_revision(app)
    with app.app_context():
        upgrade()
    after = current_revision(app)
    # The seed writes through connections of its own; a pooled SQLite
    # connection left open would stop it from turning the journal off.
    with app.app_context():
        db.engine.dispose()
    return before, after


def row_counts(kind: str) -> dict[str, int]:
    """Return the row count of each seeded table that exists."""
    tables = ("tasks", "task_events", "workers", "queues", "queue_samples")
    if kind == "sqlite":
        connection = sqlite3.connect(SQLITE_PATH)
        try:
            present = {name for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                    for table in tables if table in present}
        finally:
            connection.close()
    with psycopg.connect(database_url(kind)) as connection:
        present = {name for (name,) in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in tables if table in present}


def index_definitions(url: str) -> dict[str, str]:
    """Return {name: CREATE INDEX statement} of the secondary indexes in the database at `url`."""
    if url.startswith("sqlite:///"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return dict(connection.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
        finally:
            connection.close()
    with psycopg.connect(url) as connection:
        return dict(connection.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"))


def reference_indexes(kind: str) -> dict[str, str]:
    """Return the index definitions that the migrations create today on an empty database.

    A migration edited after the benchmark database was migrated leaves that
    database with other indexes than a new one gets; comparing with a
    freshly migrated database finds them.
    """
    from flask_migrate import upgrade

    from app import create_app
    from app.extensions import db

    with tempfile.TemporaryDirectory(prefix="taskboard-pages-") as folder:
        if kind == "sqlite":
            url = f"sqlite:///{os.path.join(folder, 'reference.db')}"
        else:
            name = f"{POSTGRES_DATABASE}_reference"
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                admin.execute(f'CREATE DATABASE "{name}"')
            url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        try:
            app = create_app({"DATABASE_URL": url, "EMBEDDED_WORKER": False,
                              "LOG_LEVEL": "WARNING"}, instance_path=folder)
            with app.app_context():
                upgrade()
                db.engine.dispose()
            return index_definitions(url)
        finally:
            if kind == "postgresql":
                with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _comparable(definition: str | None) -> str | None:
    """Drop casts, parentheses and spaces from an index definition before comparing it.

    PostgreSQL prints a partial index's WHERE clause with other casts once
    the index was created again from its printed definition, as the seed does.
    """
    if definition is None:
        return None
    return re.sub(r"::[a-z ]+(\[\])?|[()\s]", "", definition)


def index_differences(kind: str) -> dict[str, tuple[str | None, str | None]]:
    """Return {index: (definition here, definition the migrations create now)} where they differ."""
    seeded, reference = index_definitions(database_url(kind)), reference_indexes(kind)
    return {name: (seeded.get(name), reference.get(name))
            for name in sorted(set(seeded) | set(reference))
            if _comparable(seeded.get(name)) != _comparable(reference.get(name))}


def rebuild_indexes(kind: str, differences: dict[str, tuple[str | None, str | None]]) -> None:
    """Drop the indexes that differ from the migrations' and create them as the migrations do."""
    url = database_url(kind)
    if kind == "sqlite":
        connection = sqlite3.connect(SQLITE_PATH, isolation_level=None)
        try:
            for name, (_, definition) in differences.items():
                connection.execute(f'DROP INDEX IF EXISTS "{name}"')
                if definition:
                    connection.execute(definition)
        finally:
            connection.close()
        return
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SET maintenance_work_mem = '1GB'")
        for name, (_, definition) in differences.items():
            connection.execute(f'DROP INDEX IF EXISTS "{name}"')
            if definition:
                connection.execute(definition)
        connection.execute("ANALYZE")


def check_indexes(kind: str, *, rebuild: bool) -> None:
    """Exit naming each index that differs from the migrations', or rebuild them when asked."""
    differences = index_differences(kind)
    if not differences:
        return
    names = ", ".join(differences)
    if not rebuild:
        raise SystemExit(
            f"error: {kind}: these indexes differ from the ones the migrations create today, "
            f"probably because a migration changed after this database was migrated: {names}. "
            "Run python -m bench.seed_pages --rebuild-indexes to recreate them, or --reset")
    print(f"{kind}: rebuilding indexes that differ from the migrations: {names}", flush=True)
    rebuild_indexes(kind, differences)


class Progress:
    """Print how many rows were written, at most every few seconds."""

    def __init__(self, label: str, tasks: int, events: int):
        self.label, self.tasks, self.events = label, tasks, events
        self.started = self.last = time.monotonic()
        self.written = {"task": 0, "event": 0}

    def count(self, kind: str) -> None:
        self.written[kind] += 1
        if self.written[kind] % 50_000 == 0 and time.monotonic() - self.last >= 5:
            self.last = time.monotonic()
            self.print()

    def print(self, note: str = "") -> None:
        elapsed = time.monotonic() - self.started
        print(f"  {self.label}: {self.written['task']:,}/{self.tasks:,} tasks, "
              f"{self.written['event']:,}/{self.events:,} events, {elapsed:.0f} s{note}",
              flush=True)


def _workers_and_queues(shape: Shape) -> tuple[list[dict], list[dict]]:
    workers = []
    for slot, host in enumerate(WORKER_HOSTS):
        worker_id = worker_id_at(shape.now, shape, slot)
        workers.append({"id": worker_id, "hostname": host, "pid": int(worker_id.split(":")[1]),
                        "queues": None, "concurrency": WORKER_CONCURRENCY,
                        "started_at": shape.now - CURRENT_DEPLOY_AGE + slot * MICROSECONDS,
                        "heartbeat_at": shape.now - slot * MICROSECONDS})
    queues = [
        {"name": PAUSED_QUEUE, "paused": True, "concurrency_limit": None,
         "updated_at": shape.now - REPORTS_PAUSED_FOR},
        {"name": LIMITED_QUEUE, "paused": False, "concurrency_limit": LIMITED_QUEUE_CONCURRENCY,
         "updated_at": shape.start + DAY},
    ]
    return workers, queues


# SQLite


def seed_sqlite(shape: Shape, lifecycle_events: int, windows: int, *, with_samples: bool) -> None:
    columns = event_columns("sqlite")
    connection = sqlite3.connect(SQLITE_PATH, isolation_level=None)
    try:
        # The seed is rebuilt from scratch after a crash, so it needs
        # neither the journal nor fsync. CHECK constraints stay on.
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA foreign_keys=OFF")
        connection.execute("PRAGMA cache_size=-1000000")
        indexes = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            "AND tbl_name IN ('tasks', 'task_events')").fetchall()
        connection.execute("BEGIN")
        for name, _ in indexes:
            connection.execute(f'DROP INDEX "{name}"')

        progress = Progress("sqlite", shape.tasks, shape.events)
        task_sql = (f"INSERT INTO tasks ({', '.join(TASK_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(TASK_COLUMNS))})")
        event_sql = (f"INSERT INTO task_events ({', '.join(columns)}) "
                     f"VALUES ({', '.join('?' * len(columns))})")
        batches = {"task": [], "event": []}
        statements = {"task": task_sql, "event": event_sql}
        for kind, row in generate(shape, lifecycle_events, windows):
            if kind == "task":
                batches[kind].append(task_values(row, sqlite_time, 1, 0))
            else:
                batches[kind].append(event_values(row, sqlite_time, columns))
            progress.count(kind)
            if len(batches[kind]) >= 20_000:
                connection.executemany(statements[kind], batches[kind])
                batches[kind].clear()
        for kind, batch in batches.items():
            connection.executemany(statements[kind], batch)
        progress.print(", rows written; building indexes")

        workers, queues = _workers_and_queues(shape)
        _sqlite_insert(connection, "workers", [
            {**w, "queues": _json(w["queues"]), "started_at": sqlite_time(w["started_at"]),
             "heartbeat_at": sqlite_time(w["heartbeat_at"])} for w in workers])
        _sqlite_insert(connection, "queues", [
            {**q, "paused": int(q["paused"]), "updated_at": sqlite_time(q["updated_at"])}
            for q in queues])
        if with_samples:
            seed_sqlite_samples(connection, shape)
        for _, sql in indexes:
            connection.execute(sql)
        connection.execute("COMMIT")
        progress.print(", indexes built")
        problems = connection.execute("PRAGMA foreign_key_check").fetchmany(5)
        if problems:
            raise RuntimeError(f"seeded rows break foreign keys, for example {problems}")
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()


def _sqlite_insert(connection, table: str, rows: list[dict]) -> None:
    if rows:
        columns = list(rows[0])
        connection.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [tuple(row[c] for c in columns) for row in rows])


def seed_sqlite_samples(connection, shape: Shape) -> None:
    _sqlite_insert(connection, "queue_samples", [
        {**sample, "sampled_at": sqlite_time(sample["sampled_at"])}
        for sample in queue_samples(shape)])


# PostgreSQL


def seed_postgresql(shape: Shape, lifecycle_events: int, windows: int, *,
                    with_samples: bool) -> None:
    url = database_url("postgresql")
    columns = event_columns("postgresql")
    # Tasks and events stream out of one generator in step, so each table
    # gets its own connection and COPY. The foreign key is dropped for the
    # load and added back afterwards, which checks every row at once.
    with psycopg.connect(url) as tasks_connection, psycopg.connect(url) as events_connection:
        for connection in (tasks_connection, events_connection):
            connection.execute("SET synchronous_commit = off")
        indexes = tasks_connection.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i "
            "WHERE i.schemaname = current_schema() AND i.tablename IN ('tasks', 'task_events') "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
            "WHERE c.conindid = (quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))"
            "::regclass)").fetchall()
        foreign_keys = tasks_connection.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'task_events'::regclass AND contype = 'f'").fetchall()
        for name, _ in foreign_keys:
            tasks_connection.execute(f'ALTER TABLE task_events DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            tasks_connection.execute(f'DROP INDEX "{name}"')
        tasks_connection.commit()

        progress = Progress("postgresql", shape.tasks, shape.events)
        tasks_cursor, events_cursor = tasks_connection.cursor(), events_connection.cursor()
        with tasks_cursor.copy(f"COPY tasks ({', '.join(TASK_COLUMNS)}) FROM STDIN") as tasks_copy, \
                events_cursor.copy(
                    f"COPY task_events ({', '.join(columns)}) FROM STDIN") as events_copy:
            for kind, row in generate(shape, lifecycle_events, windows):
                if kind == "task":
                    tasks_copy.write_row(task_values(row, postgres_time, True, False))
                else:
                    events_copy.write_row(event_values(row, postgres_time, columns))
                progress.count(kind)
        tasks_connection.commit()
        events_connection.commit()
        progress.print(", rows written; building indexes")

        workers, queues = _workers_and_queues(shape)
        with tasks_connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO workers (id, hostname, pid, queues, concurrency, started_at, "
                "heartbeat_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [(w["id"], w["hostname"], w["pid"], _json(w["queues"]), w["concurrency"],
                  postgres_time(w["started_at"]), postgres_time(w["heartbeat_at"]))
                 for w in workers])
            cursor.executemany(
                "INSERT INTO queues (name, paused, concurrency_limit, updated_at) "
                "VALUES (%s, %s, %s, %s)",
                [(q["name"], q["paused"], q["concurrency_limit"], postgres_time(q["updated_at"]))
                 for q in queues])
        if with_samples:
            seed_postgresql_samples(tasks_connection, shape)
        tasks_connection.execute("SET maintenance_work_mem = '1GB'")
        for _, definition in indexes:
            tasks_connection.execute(definition)
        for name, definition in foreign_keys:
            tasks_connection.execute(
                f'ALTER TABLE task_events ADD CONSTRAINT "{name}" {definition}')
        for table in ("tasks", "task_events"):
            tasks_connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))")
        tasks_connection.commit()
        progress.print(", indexes and foreign key built")

    vacuum_analyze()


def seed_postgresql_samples(connection, shape: Shape) -> None:
    with connection.cursor() as cursor, cursor.copy(
            "COPY queue_samples (sampled_at, queue, waiting, processing) FROM STDIN") as copy:
        for sample in queue_samples(shape):
            copy.write_row((postgres_time(sample["sampled_at"]), sample["queue"],
                            sample["waiting"], sample["processing"]))


def vacuum_analyze() -> None:
    """Set the visibility map and planner statistics, as autovacuum would after a while."""
    with psycopg.connect(database_url("postgresql"), autocommit=True) as connection:
        connection.execute("VACUUM (ANALYZE)")


# Command line


def seed_extras(kind: str, shape: Shape, counts: dict[str, int]) -> None:
    """Fill what migrations added after the main seed: queue_samples and event tracebacks."""
    if counts.get("queue_samples") == 0:
        print(f"{kind}: filling queue_samples", flush=True)
        if kind == "sqlite":
            connection = sqlite3.connect(SQLITE_PATH)
            try:
                with connection:
                    seed_sqlite_samples(connection, shape)
            finally:
                connection.close()
        else:
            with psycopg.connect(database_url(kind)) as connection:
                seed_postgresql_samples(connection, shape)
            vacuum_analyze()
    if EVENT_TRACEBACK in event_columns(kind):
        fill_event_tracebacks(kind)


# The events that end an attempt whose handler raised, as the seed words them.
# A fresh seed stores the attempt's traceback on each; in a database seeded
# before the column existed, the task's last traceback is the same text,
# because every raising attempt of a seeded task raises the same error.
_RAISED_EVENTS = ("kind IN ('retry_scheduled', 'failed') "
                  "AND message LIKE '%failed: RuntimeError:%'")


def fill_event_tracebacks(kind: str) -> None:
    """Copy each task's last traceback onto its raised-attempt events, unless any has one."""
    if kind == "sqlite":
        connection = sqlite3.connect(SQLITE_PATH, isolation_level=None)
        try:
            if connection.execute("SELECT 1 FROM task_events WHERE traceback IS NOT NULL "
                                  "LIMIT 1").fetchone():
                return
            print(f"{kind}: filling task_events.traceback", flush=True)
            connection.execute(
                "UPDATE task_events SET traceback = (SELECT last_traceback FROM tasks "
                f"WHERE tasks.id = task_events.task_id) WHERE {_RAISED_EVENTS}")
        finally:
            connection.close()
        return
    with psycopg.connect(database_url(kind), autocommit=True) as connection:
        if connection.execute("SELECT 1 FROM task_events WHERE traceback IS NOT NULL "
                              "LIMIT 1").fetchone():
            return
        print(f"{kind}: filling task_events.traceback", flush=True)
        connection.execute(
            "UPDATE task_events SET traceback = tasks.last_traceback FROM tasks "
            f"WHERE tasks.id = task_events.task_id AND {_RAISED_EVENTS}")
        connection.execute("VACUUM (ANALYZE) task_events")


def prepare(kind: str, shape: Shape, *, reset: bool, upgrade_only: bool,
            rebuild: bool = False) -> None:
    """Bring one database to the latest migration and seed it unless it already is."""
    if reset:
        if upgrade_only:
            raise SystemExit("error: --reset and --upgrade exclude each other; --reset reseeds")
        print(f"{kind}: dropping the benchmark database", flush=True)
        drop_database(kind)
    if upgrade_only and not database_exists(kind):
        raise SystemExit(f"error: {kind}: no seeded database to upgrade; run without --upgrade")
    create_database(kind)

    before, after = upgrade_database(kind)
    if before != after:
        print(f"{kind}: migrated from {before or 'an empty database'} to {after}", flush=True)

    counts = row_counts(kind)
    seeded = counts["tasks"] == shape.tasks and counts["task_events"] == shape.events
    if seeded:
        seed_extras(kind, shape, counts)
        check_indexes(kind, rebuild=rebuild)
        print(f"{kind}: already seeded with {shape.tasks:,} tasks and {shape.events:,} events "
              f"at revision {after}; --reset reseeds", flush=True)
        return
    if upgrade_only or counts["tasks"] or counts["task_events"]:
        raise SystemExit(
            f"error: {kind}: the database holds {counts['tasks']:,} tasks and "
            f"{counts['task_events']:,} events, not {shape.tasks:,} and {shape.events:,}; "
            "rerun with --reset to seed it again")

    started = time.monotonic()
    print(f"{kind}: planning {shape.tasks:,} tasks", flush=True)
    lifecycle_events, windows = count_planned(shape)
    if lifecycle_events > shape.events:
        raise SystemExit(
            f"error: --events must be at least {lifecycle_events:,} for {shape.tasks:,} tasks, "
            f"because their lifecycles alone write that many; got {shape.events:,}")
    print(f"{kind}: {lifecycle_events:,} lifecycle events and "
          f"{shape.events - lifecycle_events:,} log lines over {windows:,} attempts", flush=True)
    with_samples = "queue_samples" in counts
    if kind == "sqlite":
        seed_sqlite(shape, lifecycle_events, windows, with_samples=with_samples)
    else:
        seed_postgresql(shape, lifecycle_events, windows, with_samples=with_samples)
    print(f"{kind}: seeded in {time.monotonic() - started:.0f} s: {row_counts(kind)}", flush=True)


def snapshot_time() -> int:
    """Return now, in whole seconds since the epoch as microseconds."""
    return int(time.time()) * MICROSECONDS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.seed_pages",
        description="Create the page benchmark's databases at the latest migration and fill "
                    "them with tasks and events. A database already seeded at the same size "
                    "is only migrated.")
    parser.add_argument("--database", choices=(*DATABASES, "all"), default="all",
                        help="which database to seed (default: all)")
    parser.add_argument("--tasks", type=int, default=DEFAULT_TASKS,
                        help=f"number of tasks (default: {DEFAULT_TASKS:,})")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS,
                        help=f"number of task events (default: {DEFAULT_EVENTS:,})")
    parser.add_argument("--random-seed", type=int, default=DEFAULT_RANDOM_SEED,
                        help="seed of the random generator; the same seed gives the same rows")
    parser.add_argument("--reset", action="store_true",
                        help="drop the database and seed it again")
    parser.add_argument("--upgrade", action="store_true",
                        help="only run new migrations on an already seeded database")
    parser.add_argument("--rebuild-indexes", action="store_true",
                        help="recreate the indexes of a seeded database that differ from the "
                             "ones the migrations create today")
    args = parser.parse_args(argv)
    if args.tasks < RUNNING_AT_SNAPSHOT + 1:
        parser.error(f"--tasks must be at least {RUNNING_AT_SNAPSHOT + 1}, got {args.tasks}")
    if args.events < 1:
        parser.error(f"--events must be positive, got {args.events}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    shape = Shape(tasks=args.tasks, events=args.events, random_seed=args.random_seed,
                  now=snapshot_time())
    kinds = DATABASES if args.database == "all" else (args.database,)
    for kind in kinds:
        prepare(kind, shape, reset=args.reset, upgrade_only=args.upgrade,
                rebuild=args.rebuild_indexes)


if __name__ == "__main__":
    sys.exit(main())
