"""Fixtures: an application on a fresh database per test, on SQLite and PostgreSQL.

Every test that uses `app` runs twice, once per database. The schema comes
from the Alembic migrations, applied once per session: SQLite tests copy a
migrated template file, PostgreSQL tests share one migrated database that is
truncated before each test. PostgreSQL tests are skipped, with the reason,
when no server answers at TASKBOARD_TEST_POSTGRES_URL
(default postgresql://postgres@127.0.0.1:5432/test).
"""

import os
import shutil
import time
import uuid

import psycopg
import pytest
from flask_migrate import upgrade
from sqlalchemy import text

from app import create_app
from app.extensions import db
from app.tasks import registry

POSTGRES_ADMIN_URL = os.environ.get(
    "TASKBOARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

BASE_CONFIG = {
    "TESTING": True,
    "SECRET_KEY": "test-secret-key",
    "EMBEDDED_WORKER": False,
    "LEASE_SECONDS": 30,
    "HEARTBEAT_INTERVAL": 0.2,
    "WORKER_POLL_INTERVAL": 0.05,
    "RETRY_BACKOFF_BASE": 0.01,
    "RETRY_BACKOFF_MAX": 0.05,
    "SHUTDOWN_GRACE_SECONDS": 5,
}


def _postgres_reason() -> str | None:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as error:
        return f"no PostgreSQL server answers at {POSTGRES_ADMIN_URL}: {error}".strip()


def _database_url(url: str, name: str) -> str:
    base = url.rsplit("/", 1)[0]
    return f"{base}/{name}"


def _migrate(url: str, instance_path: str) -> None:
    app = create_app({**BASE_CONFIG, "DATABASE_URL": url}, instance_path=instance_path)
    with app.app_context():
        upgrade()
        db.engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sqlite-template")
    path = folder / "template.db"
    _migrate(f"sqlite:///{path}", str(folder))
    return path


@pytest.fixture(scope="session")
def postgres_database(tmp_path_factory):
    reason = _postgres_reason()
    if reason:
        pytest.skip(reason)
    name = f"taskboard_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _database_url(POSTGRES_ADMIN_URL, name)
    _migrate(url, str(tmp_path_factory.mktemp("postgres-migrate")))
    yield url
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """The URL of an empty, migrated database of each kind."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "taskboard.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"

    url = request.getfixturevalue("postgres_database")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "TRUNCATE task_events, tasks, workers, queues, queue_samples RESTART IDENTITY CASCADE")
    return url


@pytest.fixture
def make_app(database_url, tmp_path):
    """Build applications on this test's database; they are disposed of afterwards."""
    apps = []

    def make(**config):
        instance = tmp_path / f"instance-{len(apps)}"
        app = create_app({**BASE_CONFIG, "DATABASE_URL": database_url, **config},
                         instance_path=str(instance))
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    app = make_app()
    with app.app_context():
        yield app
        db.session.remove()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def dialect(app):
    return db.engine.dialect.name


@pytest.fixture
def register_type():
    """Register task types for one test and remove them afterwards."""
    names = []

    def register(task_type):
        registry.register(task_type)
        names.append(task_type.name)
        return task_type

    yield register
    for name in names:
        registry.unregister(name)


def wait_for(predicate, timeout=10.0, interval=0.02):
    """Call `predicate` until it returns something true, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s: {predicate.__doc__ or predicate}")


def count_rows(table: str) -> int:
    return db.session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
