"""SQLite write transactions: BEGIN IMMEDIATE behind a lock file that writers take in turn."""

import fcntl
import logging
import os
import sqlite3
import threading
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from app.database import configure_engine


@pytest.fixture
def database_path(tmp_path):
    return str(tmp_path / "lock.db")


@pytest.fixture
def make_engine(database_path):
    engines = []

    def make(busy_timeout_seconds=5.0):
        engine = create_engine(f"sqlite:///{database_path}")
        configure_engine(engine, busy_timeout_seconds=busy_timeout_seconds,
                         synchronous="NORMAL")
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def engine(make_engine):
    engine = make_engine()
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE marks (id INTEGER PRIMARY KEY, name TEXT)")
    return engine


def write(engine):
    """Return a connection whose next transaction is a Taskboard write transaction."""
    return engine.connect().execution_options(taskboard_write=True)


def lock_is_free(database_path) -> bool:
    """Try the write lock from an open file of its own, as another process would."""
    fd = os.open(f"{database_path}-writelock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_write_holds_lock_until_commit(engine, database_path):
    with write(engine) as connection:
        connection.execute(text("INSERT INTO marks (name) VALUES ('a')"))
        assert not lock_is_free(database_path)
        connection.commit()
        assert lock_is_free(database_path)


def test_rollback_releases_lock(engine, database_path):
    with write(engine) as connection:
        connection.execute(text("INSERT INTO marks (name) VALUES ('a')"))
        connection.rollback()
        assert lock_is_free(database_path)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM marks")) == 0


def test_pool_return_releases_lock(engine, database_path):
    connection = write(engine)
    connection.execute(text("INSERT INTO marks (name) VALUES ('a')"))
    connection.close()
    assert lock_is_free(database_path)


def test_reads_skip_lock(engine, database_path):
    with engine.connect() as connection:
        connection.scalar(text("SELECT count(*) FROM marks"))
        assert lock_is_free(database_path)


def test_failed_begin_releases_lock(make_engine, engine, database_path):
    # A writer outside Taskboard holds SQLite's own lock without the lock file.
    outsider = sqlite3.connect(database_path, isolation_level=None)
    outsider.execute("BEGIN IMMEDIATE")
    try:
        impatient = make_engine(busy_timeout_seconds=0.05)
        with pytest.raises(OperationalError, match="database is locked"):
            with write(impatient) as connection:
                connection.execute(text("INSERT INTO marks (name) VALUES ('a')"))
        assert lock_is_free(database_path)
    finally:
        outsider.rollback()
        outsider.close()


def test_writers_on_two_threads_take_turns(engine):
    order = []
    first_in = threading.Event()
    release_first = threading.Event()

    def first():
        with write(engine) as connection:
            connection.execute(text("INSERT INTO marks (name) VALUES ('first')"))
            first_in.set()
            release_first.wait(10)
            order.append("first commits")
            connection.commit()

    def second():
        with write(engine) as connection:
            connection.execute(text("INSERT INTO marks (name) VALUES ('second')"))
            order.append("second writes")
            connection.commit()

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert first_in.wait(10)
    threads.append(threading.Thread(target=second))
    threads[1].start()
    time.sleep(0.1)
    assert order == []
    release_first.set()
    for thread in threads:
        thread.join(10)
    assert order == ["first commits", "second writes"]
    with engine.connect() as connection:
        assert connection.scalars(text("SELECT name FROM marks ORDER BY id")).all() == [
            "first", "second"]


def test_lock_timeout_falls_back_to_sqlite(make_engine, engine, database_path):
    # Another process holds the lock file but not the database (say it
    # hangs between the two): after the busy timeout the writer goes on.
    fd = os.open(f"{database_path}-writelock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        patient = make_engine(busy_timeout_seconds=0.2)
        started = time.monotonic()
        with write(patient) as connection:
            connection.execute(text("INSERT INTO marks (name) VALUES ('a')"))
            connection.commit()
        assert time.monotonic() - started >= 0.2
    finally:
        os.close(fd)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM marks")) == 1


def test_unusable_lock_file_falls_back(make_engine, database_path, caplog):
    os.mkdir(f"{database_path}-writelock")
    engine = make_engine()
    with caplog.at_level(logging.WARNING, logger="app.database"):
        with write(engine) as connection:
            connection.exec_driver_sql("CREATE TABLE marks (id INTEGER PRIMARY KEY)")
            connection.commit()
    assert "Failed to open the SQLite write lock" in caplog.text
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM marks")) == 0
