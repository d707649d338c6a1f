"""Helpers shared by the benchmarks: databases, worker processes, /proc readings, statistics."""

import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata

import psycopg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "bench", "results")
BIN = os.path.dirname(sys.executable)

# The server and database used to create and drop the benchmark databases.
POSTGRES_ADMIN_URL = os.environ.get(
    "TASKBOARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Database:
    """A new, empty database for one run: a SQLite file or a PostgreSQL database, removed on close."""

    def __init__(self, kind: str):
        if kind not in ("sqlite", "postgresql"):
            raise ValueError(f"unknown database kind {kind!r}; use sqlite or postgresql")
        self.kind = kind
        self.folder = tempfile.TemporaryDirectory(prefix="taskboard-bench-")
        self.name = None
        if kind == "sqlite":
            self.path = os.path.join(self.folder.name, "bench.db")
            self.url = f"sqlite:///{self.path}"
        else:
            self.path = None
            self.name = f"taskboard_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{self.name}"')
            self.url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.name

    def close(self) -> None:
        if self.name:
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.folder.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


# Processes


@dataclass
class WorkerProcesses:
    """Worker processes started by one benchmark run, each with its own log file."""

    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def check_alive(self) -> None:
        """Raise RuntimeError, with the end of its log, if a worker process has exited."""
        for process, log in zip(self.processes, self.logs):
            if process.poll() is not None:
                log.flush()
                with open(log.name) as file:
                    tail = file.read()[-2000:]
                raise RuntimeError(
                    f"worker process {process.pid} ({' '.join(process.args[:3])} ...) exited "
                    f"with code {process.returncode}; end of its log {log.name}:\n{tail}"
                )

    def stop(self, timeout: float = 15.0) -> None:
        """Send SIGTERM to each process, then SIGKILL to any still running after `timeout`."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()


def start_workers(argv: list[str], env: dict, count: int, log_prefix: str) -> WorkerProcesses:
    """Start `count` processes running `argv` in the project folder, output to log files."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    workers = WorkerProcesses()
    full_env = {**os.environ, "PYTHONPATH": ROOT, **env}
    for index in range(count):
        log = open(os.path.join(RESULTS_DIR, f"{log_prefix}-{index}.log"), "w")
        process = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        workers.processes.append(process)
        workers.logs.append(log)
    return workers


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU time of process `pid`, in seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as file:
        # The command name in field 2 may contain spaces; the fields after it do not.
        fields = file.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def peak_rss_mib(pid: int) -> float:
    """Return the peak resident set size (VmHWM) of process `pid`, in MiB."""
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"VmHWM missing from /proc/{pid}/status")


def postgres_activity(url: str) -> dict:
    """Return the commit and row counters of the database at `url` (pg_stat_database)."""
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted "
            "FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return dict(zip(("commits", "inserted", "updated", "deleted"), row))


# Statistics


def median(values) -> float:
    return statistics.median(values)


def percentile(values, fraction: float) -> float:
    """Return the nearest-rank percentile of `values` (fraction 0.95 for p95)."""
    ordered = sorted(values)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))
    return ordered[rank - 1]


# Machine description


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as file:
        for line in file:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    with open("/proc/meminfo") as file:
        for line in file:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe_machine() -> dict:
    """Return the hardware and software versions the numbers were measured with."""
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        postgres_version = connection.execute("SHOW server_version").fetchone()[0]
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version,
        "packages": {name: _package_version(name) for name in (
            "taskboard", "huey", "procrastinate", "pgqueuer", "SQLAlchemy", "psycopg", "py-spy",
        )},
    }
