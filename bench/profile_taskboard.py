"""SQL round trips per task and py-spy profiles of a Taskboard worker, to show where time goes.

Round trips are counted in-process with SQLAlchemy engine events while a
Worker (the same class `flask worker` runs) drains tasks: every statement,
plus the BEGIN and COMMIT of every transaction, is one round trip to the
database. The profile samples a separate `flask --app app worker` process
with py-spy while it drains, and ranks functions by the share of samples in
which they are on the stack (inclusive) and on top of it (self).
"""

import collections
import logging
import os
import subprocess
import time

from sqlalchemy import event

from .common import BIN, RESULTS_DIR, ROOT, cpu_seconds, start_workers
from .systems import CONCURRENCY, POLL_INTERVAL, open_system

# Characters of each statement kept to tell statements apart in the counts.
STATEMENT_PREFIX = 120


def count_round_trips(kind: str, tasks: int) -> dict:
    """Return statements, transactions and round trips per task for submit and for drain."""
    from app.extensions import db
    from app.tasks import queue
    from app.worker import Worker

    system = open_system(f"taskboard-{kind}")
    counts = collections.Counter()
    texts = collections.Counter()
    # Each skipped overlapping poll of the in-process worker would be logged.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    try:
        with system.app.app_context():
            engine = db.engine

            def on_statement(conn, cursor, statement, parameters, context, executemany):
                text = " ".join(statement.split())
                counts[text.split(None, 1)[0].upper()] += 1
                texts[text[:STATEMENT_PREFIX]] += 1

            def on_begin(conn):
                counts["transactions"] += 1

            def on_commit(conn):
                counts["commits"] += 1

            def on_rollback(conn):
                counts["rollbacks"] += 1

            listeners = [("before_cursor_execute", on_statement), ("begin", on_begin),
                         ("commit", on_commit), ("rollback", on_rollback)]
            for name, listener in listeners:
                event.listen(engine, name, listener)
            try:
                system.enqueue(tasks)
                submit, submit_texts = dict(counts), dict(texts)
                counts.clear()
                texts.clear()

                worker = Worker(system.app, concurrency=CONCURRENCY, poll_interval=POLL_INTERVAL)
                worker.start()
                try:
                    while system.count_done() < tasks:
                        time.sleep(0.05)
                finally:
                    worker.stop()
                drain, drain_texts = dict(counts), dict(texts)
            finally:
                for name, listener in listeners:
                    event.remove(engine, name, listener)
            db.session.remove()
    finally:
        system.close()
        system.database.close()
    return {"database": kind, "tasks": tasks,
            "submit": _per_task(submit, tasks), "drain": _per_task(drain, tasks),
            "submit_statements": _statements_per_task(submit_texts, tasks),
            "drain_statements": _statements_per_task(drain_texts, tasks)}


def _statements_per_task(texts: dict, tasks: int) -> list:
    return sorted(((text, round(count / tasks, 3)) for text, count in texts.items()),
                  key=lambda item: -item[1])


TRANSACTION_COUNTS = ("transactions", "commits", "rollbacks")


def _per_task(counts: dict, tasks: int) -> dict:
    statements = sum(value for key, value in counts.items() if key not in TRANSACTION_COUNTS)
    transactions = counts.get("transactions", 0)
    # On SQLite, Taskboard sends BEGIN (IMMEDIATE) itself, so it is counted as a
    # statement; on PostgreSQL psycopg sends a BEGIN of its own per transaction.
    implicit_begins = transactions - counts.get("BEGIN", 0)
    round_trips = (statements + implicit_begins + counts.get("commits", 0)
                   + counts.get("rollbacks", 0))
    return {
        "statements": statements / tasks,
        "transactions": transactions / tasks,
        "commits": counts.get("commits", 0) / tasks,
        "rollbacks": counts.get("rollbacks", 0) / tasks,
        "round_trips": round_trips / tasks,
        "by_statement": {key: value / tasks for key, value in sorted(counts.items())
                         if key not in TRANSACTION_COUNTS},
    }


def profile_worker(kind: str, tasks: int, seconds: float, processes: int = 1, *,
                   gil_only: bool = False, rate: int = 200) -> dict:
    """Sample the first of `processes` `flask worker` processes with py-spy while they drain.

    Without `gil_only`, every thread that py-spy does not judge idle is
    sampled, so waits on the database count. With it, only the thread that
    holds the GIL is, which shows where the process spends CPU in Python.
    Return the top functions, and the worker's CPU use while sampled.
    """
    system = open_system(f"taskboard-{kind}")
    mode = "gil" if gil_only else "wall"
    output = os.path.join(RESULTS_DIR, f"py-spy-taskboard-{kind}-{processes}p-{mode}.txt")
    try:
        system.enqueue(tasks)
        argv, env = system.worker_command(CONCURRENCY, POLL_INTERVAL)
        workers = start_workers(argv, env, processes, log_prefix=f"profile-{kind}-{processes}p")
        try:
            # Let start-up and imports pass, so that the samples show the drain.
            while system.count_done() == 0:
                workers.check_alive()
                time.sleep(0.05)
            cpu_before, done_before = cpu_seconds(workers.pids[0]), system.count_done()
            started = time.perf_counter()
            spy = subprocess.run(
                [os.path.join(BIN, "py-spy"), "record", "--pid", str(workers.pids[0]),
                 "--rate", str(rate), "--duration", str(int(seconds)), "--format", "raw",
                 "--nonblocking", "--output", output, *(["--gil"] if gil_only else [])],
                capture_output=True, text=True, timeout=seconds + 60,
            )
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(workers.pids[0]) - cpu_before
            done = system.count_done() - done_before
        finally:
            workers.stop()
        if spy.returncode != 0:
            return {"database": kind, "processes": processes,
                    "error": f"py-spy failed: {spy.stderr.strip()[-500:]}"}
    finally:
        system.close()
        system.database.close()
    summary = summarize_collapsed(output)
    summary.update(database=kind, processes=processes, gil_only=gil_only, sampled_seconds=elapsed,
                   tasks_done_while_sampled=done, sampled_process_cpu_percent=100 * cpu / elapsed,
                   raw_output=os.path.relpath(output, ROOT))
    return summary


def summarize_collapsed(path: str, top: int = 25) -> dict:
    """Rank frames of a py-spy raw (collapsed stack) file by inclusive and self samples."""
    inclusive = collections.Counter()
    own = collections.Counter()
    total = 0
    with open(path) as file:
        for line in file:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            samples = int(count)
            total += samples
            frames = [_short_frame(frame) for frame in stack.split(";")]
            for frame in set(frames):
                inclusive[frame] += samples
            own[frames[-1]] += samples
    return {
        "samples": total,
        "inclusive_top": [(frame, round(100 * n / total, 1)) for frame, n in inclusive.most_common(top)],
        "self_top": [(frame, round(100 * n / total, 1)) for frame, n in own.most_common(top)],
    }


def _short_frame(frame: str) -> str:
    # py-spy writes "function (path/to/file.py:line)"; keep the function and the
    # path from site-packages/ or the project root on, without the line number.
    name, _, location = frame.partition(" (")
    location = location.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", ROOT + "/", "lib/python3.11/"):
        if marker in location:
            location = location.split(marker, 1)[1]
            break
    return f"{name} ({location})" if location else name
