"""The queues under test: how each one creates its schema, enqueues, starts workers and counts.

Every system gets the same treatment: tasks are enqueued one at a time
through the system's own client API from the benchmark process, then worker
processes started through the system's own worker command drain them. The
benchmark counts finished tasks with one SQL query on the system's tables.
"""

import asyncio
import importlib
import os
import sqlite3
import time

import psycopg

from .common import BIN, Database

# Attempts each worker process may run at once, for every system that has such
# a setting. 4 is Taskboard's default (WORKER_CONCURRENCY).
CONCURRENCY = 4

# Seconds between polls of an idle worker in the throughput runs. The queue is
# full while it drains, so this matters only at the start and at the end.
POLL_INTERVAL = 0.05


class System:
    """One queue on one database, set up on a fresh database for each run."""

    name: str
    database_kind: str
    count_sql: str

    def __init__(self, database: Database):
        self.database = database
        self._count_connection = None

    def prepare(self) -> None:
        """Create the system's tables in the empty database."""

    def enqueue(self, count: int) -> None:
        """Enqueue `count` no-op tasks one at a time."""
        raise NotImplementedError

    def worker_command(self, concurrency: int, poll_interval: float) -> tuple[list[str], dict]:
        """Return the argv and extra environment of one worker process."""
        raise NotImplementedError

    def count_done(self) -> int:
        """Return how many tasks have finished successfully, read from the database."""
        if self._count_connection is None:
            if self.database.kind == "sqlite":
                self._count_connection = sqlite3.connect(self.database.path, timeout=30,
                                                         isolation_level=None)
            else:
                self._count_connection = psycopg.connect(self.database.url, autocommit=True)
        return self._count_connection.execute(self.count_sql).fetchone()[0]

    def close(self) -> None:
        if self._count_connection is not None:
            self._count_connection.close()
            self._count_connection = None


# Taskboard


class Taskboard(System):
    """Taskboard through its Python API (queue.submit) and `flask --app app worker`."""

    count_sql = "SELECT count(*) FROM tasks WHERE status = 'SUCCEEDED'"

    def __init__(self, database: Database):
        super().__init__(database)
        self.name = f"taskboard-{database.kind}"
        self.database_kind = database.kind
        self.app = None

    def prepare(self) -> None:
        from flask_migrate import upgrade

        from app import create_app

        self.app = create_app({
            "DATABASE_URL": self.database.url,
            "EMBEDDED_WORKER": False,
            "SECRET_KEY": "bench",
            "LOG_LEVEL": "WARNING",
        }, instance_path=self.database.folder.name)
        with self.app.app_context():
            upgrade()

    def enqueue(self, count: int) -> None:
        from app.extensions import db
        from app.tasks import queue

        with self.app.app_context():
            for _ in range(count):
                queue.submit({"type": "noop"}, source="the benchmark")
            db.session.remove()

    def worker_command(self, concurrency, poll_interval):
        argv = [os.path.join(BIN, "flask"), "--app", "app", "worker",
                "--concurrency", str(concurrency), "--poll-interval", str(poll_interval)]
        env = {
            "TASKBOARD_DATABASE_URL": self.database.url,
            "TASKBOARD_EMBEDDED_WORKER": "false",
            "TASKBOARD_LOG_LEVEL": "WARNING",
            "TASKBOARD_SECRET_KEY": "bench",
        }
        return argv, env

    def close(self) -> None:
        super().close()
        if self.app is not None:
            from app.extensions import db

            with self.app.app_context():
                db.engine.dispose()


# huey


class Huey(System):
    """huey's SqliteHuey (WAL, synchronous=NORMAL) and `huey_consumer` with thread workers."""

    name = "huey-sqlite"
    database_kind = "sqlite"
    count_sql = "SELECT count(*) FROM kv WHERE queue = 'bench'"

    def prepare(self) -> None:
        os.environ["BENCH_HUEY_FILE"] = self.database.path
        from bench.peer_apps import huey_app

        # The module builds its huey at import, from BENCH_HUEY_FILE.
        self.module = importlib.reload(huey_app)

    def enqueue(self, count: int) -> None:
        for _ in range(count):
            self.module.noop()

    def worker_command(self, concurrency, poll_interval):
        argv = [os.path.join(BIN, "huey_consumer"), "bench.peer_apps.huey_app.huey",
                "--workers", str(concurrency), "--worker-type", "thread",
                "--delay", str(poll_interval), "--quiet"]
        return argv, {"BENCH_HUEY_FILE": self.database.path}

    def close(self) -> None:
        super().close()
        self.module.huey.storage.close()


# procrastinate


class Procrastinate(System):
    """procrastinate with its psycopg connector and `procrastinate worker`."""

    name = "procrastinate"
    database_kind = "postgresql"
    count_sql = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"

    def prepare(self) -> None:
        os.environ["BENCH_POSTGRES_URL"] = self.database.url
        from bench.peer_apps import procrastinate_app

        self.module = importlib.reload(procrastinate_app)
        with self.module.app.open():
            self.module.app.schema_manager.apply_schema()

    def enqueue(self, count: int) -> None:
        with self.module.app.open():
            for _ in range(count):
                self.module.noop.defer()

    def worker_command(self, concurrency, poll_interval):
        argv = [os.path.join(BIN, "procrastinate"), "--app=bench.peer_apps.procrastinate_app.app",
                "worker", "--concurrency", str(concurrency),
                "--fetch-job-polling-interval", str(poll_interval)]
        return argv, {"BENCH_POSTGRES_URL": self.database.url}


# pgqueuer


class PgQueuer(System):
    """pgqueuer with its psycopg driver and `pgq run`, at its default batch size."""

    name = "pgqueuer"
    database_kind = "postgresql"
    count_sql = "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"

    def prepare(self) -> None:
        asyncio.run(self._install())

    async def _install(self) -> None:
        from pgqueuer import PsycopgDriver, Queries

        async with await psycopg.AsyncConnection.connect(self.database.url,
                                                         autocommit=True) as connection:
            await Queries(PsycopgDriver(connection)).install()

    def enqueue(self, count: int) -> None:
        asyncio.run(self._enqueue(count))

    async def _enqueue(self, count: int) -> None:
        from pgqueuer import PsycopgDriver, Queries

        async with await psycopg.AsyncConnection.connect(self.database.url,
                                                         autocommit=True) as connection:
            queries = Queries(PsycopgDriver(connection))
            for _ in range(count):
                await queries.enqueue("noop", None)

    def worker_command(self, concurrency, poll_interval):
        # NOTE: pgqueuer has no per-process concurrency of the same kind; it
        # fetches batches of 10 jobs (its default) and runs them as asyncio tasks.
        argv = [os.path.join(BIN, "python"), "-m", "bench.peer_apps.pgqueuer_app",
                str(poll_interval)]
        return argv, {"BENCH_POSTGRES_URL": self.database.url}


SYSTEMS = {
    "taskboard-sqlite": (Taskboard, "sqlite"),
    "huey-sqlite": (Huey, "sqlite"),
    "taskboard-postgresql": (Taskboard, "postgresql"),
    "procrastinate": (Procrastinate, "postgresql"),
    "pgqueuer": (PgQueuer, "postgresql"),
}

# The peers that each Taskboard measurement is compared with.
PAIRS = [
    ("taskboard-sqlite", "huey-sqlite"),
    ("taskboard-postgresql", "procrastinate"),
    ("taskboard-postgresql", "pgqueuer"),
]


def open_system(key: str) -> System:
    """Create a fresh database and the named system on it; the caller closes both."""
    system_class, kind = SYSTEMS[key]
    database = Database(kind)
    try:
        system = system_class(database)
        system.prepare()
    except BaseException:
        database.close()
        raise
    return system


def wait_for(condition, timeout: float, interval: float = 0.05) -> bool:
    """Call `condition` every `interval` seconds until it is true or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
