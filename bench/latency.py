"""Submit-to-start latency across processes, and the CPU an idle worker process uses."""

import random
import time

from .common import cpu_seconds, start_workers
from .systems import SYSTEMS, Taskboard, open_system, wait_for

def cross_process_latency(kind: str, samples: int, poll_interval: float | None) -> list[float]:
    """Submit tasks one at a time from this process to an idle `flask worker` process.

    Return started_at - created_at of each task, in milliseconds; both
    timestamps come from the task row. `poll_interval` None keeps the
    worker's default (WORKER_POLL_INTERVAL). Before each submission the
    benchmark waits a random part of the poll interval, so that submissions
    do not fall into step with the worker's polls.
    """
    from app.extensions import db
    from app.tasks import Task, queue

    system = open_system(f"taskboard-{kind}")
    try:
        argv, env = system.worker_command(1, poll_interval or 1.0)
        if poll_interval is None:
            argv = argv[:argv.index("--poll-interval")]
        workers = start_workers(argv, env, 1, log_prefix=f"latency-{kind}")
        rng = random.Random(1)
        spread = poll_interval or 1.0
        latencies = []
        try:
            with system.app.app_context():
                # One task first, so that the worker is up and idle when sampling starts.
                for index in range(samples + 1):
                    time.sleep(rng.uniform(0, spread))
                    task, _ = queue.submit({"type": "noop"}, source="the benchmark")

                    def finished():
                        db.session.rollback()
                        row = db.session.get(Task, task.id, populate_existing=True)
                        return row.status == "SUCCEEDED"

                    if not wait_for(finished, timeout=60.0, interval=0.002):
                        workers.check_alive()
                        raise RuntimeError(f"task {task.id} did not finish within 60 s on {kind}")
                    row = db.session.get(Task, task.id)
                    if index:
                        latencies.append((row.started_at - row.created_at).total_seconds() * 1000)
                db.session.remove()
        finally:
            workers.stop()
        return latencies
    finally:
        system.close()
        system.database.close()


def idle_cpu(seconds: float, warm_up: float = 5.0) -> list[dict]:
    """Start one idle worker of each system, with its default poll settings, and sample its CPU.

    Return, for each, the CPU it used over `seconds` after `warm_up`
    seconds, as a percentage of one core. Taskboard is measured twice: with
    its default poll interval and with the short one of the throughput runs.
    """
    setups = []
    try:
        for key in SYSTEMS:
            system = open_system(key)
            setups.append((key, system))
        runs = []
        for key, system in setups:
            argv, env = system.worker_command(4, 1.0)
            if isinstance(system, Taskboard):
                default_argv = argv[:argv.index("--poll-interval")]
                runs.append((f"{key} (poll 1 s, default)", start_workers(
                    default_argv, env, 1, log_prefix=f"idle-{key}")))
                argv, env = system.worker_command(4, 0.05)
                runs.append((f"{key} (poll 0.05 s)", start_workers(
                    argv, env, 1, log_prefix=f"idle-{key}-short")))
            else:
                argv, env = _default_idle_command(system)
                runs.append((f"{key} (defaults)", start_workers(
                    argv, env, 1, log_prefix=f"idle-{key}")))
        try:
            time.sleep(warm_up)
            for _, workers in runs:
                workers.check_alive()
            before = {label: cpu_seconds(workers.pids[0]) for label, workers in runs}
            started = time.perf_counter()
            time.sleep(seconds)
            elapsed = time.perf_counter() - started
            after = {label: cpu_seconds(workers.pids[0]) for label, workers in runs}
        finally:
            for _, workers in runs:
                workers.stop()
        return [
            {"worker": label, "seconds": elapsed,
             "cpu_percent_of_one_core": 100 * (after[label] - before[label]) / elapsed}
            for label, _ in runs
        ]
    finally:
        for _, system in setups:
            system.close()
            system.database.close()


def _default_idle_command(system) -> tuple[list[str], dict]:
    """Return the peer's worker command with its own default polling settings."""
    argv, env = system.worker_command(4, 1.0)
    for option in ("--delay", "--fetch-job-polling-interval"):
        if option in argv:
            index = argv.index(option)
            del argv[index:index + 2]
    if "bench.peer_apps.pgqueuer_app" in argv:
        # Without its argument the module keeps pgqueuer's default dequeue timeout.
        argv = argv[:argv.index("bench.peer_apps.pgqueuer_app") + 1]
    return argv, env
