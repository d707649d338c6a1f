"""The registry of worker processes: announced at start, renewed by heartbeats, gone when stale."""

from datetime import timedelta

from app.extensions import db
from app.tasks import queue, worker_registry
from app.tasks.models import WorkerProcess
from app.tasks.timeutil import utcnow
from app.worker import Worker
from conftest import wait_for


def _register(worker_id="w1", queues=None):
    worker_registry.register_worker(worker_id, hostname="host-a", pid=123, queues=queues,
                                    concurrency=4)


def test_register_worker_lists_it_live(app):
    _register(queues=["mail"])

    [status] = worker_registry.list_workers()

    assert status.worker.id == "w1"
    assert status.worker.queues == ["mail"]
    assert status.gone is False


def test_list_workers_marks_stale_heartbeat_gone(app):
    _register()

    [status] = worker_registry.list_workers(now=utcnow() + timedelta(seconds=31))

    assert status.gone is True


def test_list_workers_shows_running_tasks(app):
    _register()
    task, _ = queue.submit({"type": "noop"})
    queue.claim("w1", 1)

    [status] = worker_registry.list_workers()

    assert status.running_task_ids == [task.id]


def test_beat_reports_missing_row(app):
    assert worker_registry.beat("nobody") is False


def test_unregister_worker_removes_row(app):
    _register()

    worker_registry.unregister_worker("w1")

    assert worker_registry.list_workers() == []


def test_register_forgets_workers_gone_for_a_day(app):
    _register("old")
    db.session.query(WorkerProcess).update(
        {"heartbeat_at": utcnow() - timedelta(days=2)})
    db.session.commit()

    _register("new")

    assert [s.worker.id for s in worker_registry.list_workers()] == ["new"]


def test_worker_registers_beats_and_unregisters(make_app):
    app = make_app(HEARTBEAT_INTERVAL=0.1)
    worker = Worker(app, queues=["default"])
    worker.start()
    try:
        with app.app_context():
            [status] = worker_registry.list_workers()
            first_beat = status.worker.heartbeat_at

            def beat_renewed():
                db.session.rollback()
                return worker_registry.list_workers()[0].worker.heartbeat_at > first_beat

            wait_for(beat_renewed, timeout=5)
            assert status.worker.id == worker.id
    finally:
        worker.stop()

    with app.app_context():
        assert worker_registry.list_workers() == []


def test_api_workers_lists_live_worker(client):
    _register()

    response = client.get("/api/workers")

    assert response.status_code == 200
    assert response.json["workers"][0]["id"] == "w1"
    assert response.json["workers"][0]["gone"] is False


def test_cli_workers_prints_gone_marker(app):
    _register()
    db.session.query(WorkerProcess).update(
        {"heartbeat_at": utcnow() - timedelta(minutes=5)})
    db.session.commit()

    result = app.test_cli_runner().invoke(args=["workers"])

    assert result.exit_code == 0
    assert "w1 [GONE]" in result.output
