"""Submit and drain throughput of one system with a given number of worker processes."""

import time

from .common import cpu_seconds, peak_rss_mib, postgres_activity, start_workers
from .systems import CONCURRENCY, POLL_INTERVAL, open_system

# Seconds between two counts of finished tasks while the workers drain.
COUNT_INTERVAL = 0.05


def drain_run(key: str, tasks: int, processes: int, *, timeout: float = 300.0) -> dict:
    """Enqueue `tasks` no-ops into a fresh database, then time `processes` workers draining them.

    Return the submit rate, two drain rates (from the start of the worker
    processes, and from the first finished task, which leaves out interpreter
    start-up and imports), and per worker process its CPU time and peak
    memory. On PostgreSQL also the commits and row changes the drain caused.
    """
    system = open_system(key)
    try:
        started = time.perf_counter()
        system.enqueue(tasks)
        submit_seconds = time.perf_counter() - started
        if system.count_done() != 0:
            raise RuntimeError(f"{key}: tasks finished before any worker started")

        postgres = system.database.kind == "postgresql"
        activity_before = postgres_activity(system.database.url) if postgres else None

        argv, env = system.worker_command(CONCURRENCY, POLL_INTERVAL)
        launched = time.perf_counter()
        workers = start_workers(argv, env, processes, log_prefix=f"{key}-{processes}p")
        counts = 0
        try:
            first_done_at = first_done_count = None
            deadline = launched + timeout
            while True:
                done = system.count_done()
                counts += 1
                now = time.perf_counter()
                if done and first_done_at is None:
                    first_done_at, first_done_count = now, done
                if done >= tasks:
                    break
                if now > deadline:
                    raise RuntimeError(f"{key}: only {done} of {tasks} tasks finished "
                                       f"in {timeout:g} s with {processes} processes")
                workers.check_alive()
                time.sleep(COUNT_INTERVAL)
            finished_at = now
            cpu = [cpu_seconds(pid) for pid in workers.pids]
            memory = [peak_rss_mib(pid) for pid in workers.pids]
        finally:
            workers.stop()

        result = {
            "system": key,
            "tasks": tasks,
            "processes": processes,
            "concurrency_per_process": CONCURRENCY,
            "submit_seconds": submit_seconds,
            "submit_per_second": tasks / submit_seconds,
            "drain_seconds": finished_at - launched,
            "drain_per_second": tasks / (finished_at - launched),
            "steady_per_second": (
                (tasks - first_done_count) / (finished_at - first_done_at)
                if finished_at > first_done_at else None
            ),
            "worker_cpu_seconds": cpu,
            "worker_cpu_ms_per_task": 1000 * sum(cpu) / tasks,
            "worker_peak_rss_mib": memory,
        }
        if postgres:
            # Stopped backends have flushed their statistics; allow the last ones a moment.
            time.sleep(1.0)
            after = postgres_activity(system.database.url)
            # Each count above is one autocommit transaction of this process.
            commits = after["commits"] - activity_before["commits"] - counts
            result["postgres_per_task"] = {
                "commits": commits / tasks,
                "rows_inserted": (after["inserted"] - activity_before["inserted"]) / tasks,
                "rows_updated": (after["updated"] - activity_before["updated"]) / tasks,
                "rows_deleted": (after["deleted"] - activity_before["deleted"]) / tasks,
            }
        return result
    finally:
        system.close()
        system.database.close()
