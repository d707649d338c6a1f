"""Wake-ups across processes on SQLite, through UDP datagrams on 127.0.0.1."""

import os
import threading
import time

import pytest

from app.extensions import db
from app.tasks import Task, TaskStatus, queue
from app.worker import Worker
from app.worker.local_wakeup import WakeupListener, send_wakeups, wakeup_folder
from conftest import wait_for


@pytest.fixture
def sqlite_only(dialect):
    if dialect != "sqlite":
        pytest.skip("PostgreSQL wakes workers with LISTEN/NOTIFY instead")


def test_listener_receives_queue_name(tmp_path):
    received = []
    arrived = threading.Event()

    def on_wakeup(queue_name):
        received.append(queue_name)
        arrived.set()

    listener = WakeupListener(str(tmp_path / "db.wake"), on_wakeup)
    listener.start()
    try:
        send_wakeups(str(tmp_path / "db.wake"), "mail")
        assert arrived.wait(2)
    finally:
        listener.stop()

    assert received == ["mail"]
    assert os.listdir(tmp_path / "db.wake") == []


def test_listener_removes_files_of_dead_processes(tmp_path):
    folder = tmp_path / "db.wake"
    folder.mkdir()
    dead_pid = 2**22 + 12345  # above the kernel's default pid_max, so no process has it
    (folder / f"50000.{dead_pid}").write_text("")
    listener = WakeupListener(str(folder), lambda queue_name: None)

    listener.start()
    try:
        names = os.listdir(folder)
    finally:
        listener.stop()

    assert names == [f"{listener.port}.{os.getpid()}"]


def test_send_wakeups_without_folder_does_nothing(tmp_path):
    send_wakeups(str(tmp_path / "missing.wake"), "default")
    send_wakeups(None, "default")


def test_wakeup_folder_sits_beside_database(tmp_path):
    assert wakeup_folder(str(tmp_path / "t.db")) == f"{tmp_path / 't.db'}.wake"
    assert wakeup_folder(":memory:") is None
    assert wakeup_folder(None) is None


def test_worker_in_other_app_starts_task_before_next_poll(make_app, sqlite_only):
    submitter, worker_app = make_app(), make_app()
    worker = Worker(worker_app, poll_interval=30)
    worker.start()
    try:
        time.sleep(0.2)  # the first poll, at start, finds nothing
        with submitter.app_context():
            task, _ = queue.submit({"type": "noop"})
            submitted = time.monotonic()

            def succeeded():
                db.session.rollback()
                return db.session.get(Task, task.id, populate_existing=True).status == (
                    TaskStatus.SUCCEEDED)

            wait_for(succeeded, timeout=5)
            elapsed = time.monotonic() - submitted
    finally:
        worker.stop(timeout=5)

    assert elapsed < 5
