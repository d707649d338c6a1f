"""Statistics for the queues page and the charts, and the queue depth samples."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app.extensions import db
from app.tasks import TaskStatus, queue, queue_control, stats, worker_registry
from app.tasks.models import QueueSample
from conftest import count_rows

# A fixed instant in the past, so the test clock never races the real one.
NOW = datetime(2026, 3, 2, 12, 30, 20, tzinfo=UTC)


def _submit(queue_name="default", *, at: datetime, type_name="noop", **fields):
    task, _ = queue.submit({"type": type_name, "queue": queue_name, **fields}, now=at)
    return task


def _run(queue_name="default", *, due: datetime, wait: float, run: float, outcome="succeed",
         type_name="noop"):
    """Submit a task at `due`, claim it `wait` seconds later, and finish it `run` seconds after that."""
    task = _submit(queue_name, at=due, type_name=type_name, max_attempts=1)
    started = due + timedelta(seconds=wait)
    claims = queue.claim("worker-a", 1, queues=[queue_name], now=started)
    assert [c.task_id for c in claims] == [task.id]
    finished = started + timedelta(seconds=run)
    if outcome == "succeed":
        queue.succeed(claims[0], None, now=finished)
    else:
        queue.fail(claims[0], "ValueError: bad", retryable=False, now=finished)
    return task


def _by_name(queues):
    return {queue.name: queue for queue in queues}


# percentile


def test_percentile_of_nothing_is_none():
    assert stats.percentile([], 50) is None


def test_percentile_of_one_value_is_that_value():
    assert stats.percentile([4.0], 99) == 4.0


def test_percentile_interpolates_between_neighbours():
    values = [float(v) for v in range(1, 101)]

    assert stats.percentile(values, 50) == pytest.approx(50.5)
    assert stats.percentile(values, 95) == pytest.approx(95.05)
    assert stats.percentile(values, 99) == pytest.approx(99.01)
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 100) == 100.0


def test_floor_minute_drops_seconds():
    assert stats.floor_minute(NOW) == datetime(2026, 3, 2, 12, 30, tzinfo=UTC)


# queue_stats


def test_queue_stats_counts_unfinished_tasks_per_status(app):
    _submit("mail", at=NOW - timedelta(minutes=5))
    _submit("mail", at=NOW - timedelta(minutes=4))
    _submit("mail", at=NOW - timedelta(minutes=3))
    queue.claim("worker-a", 1, queues=["mail"], now=NOW - timedelta(minutes=2))
    _submit("reports", at=NOW - timedelta(minutes=1))

    queues = _by_name(stats.queue_stats(now=NOW))

    assert sorted(queues) == ["mail", "reports"]
    assert queues["mail"].counts["PENDING"] == 2
    assert queues["mail"].counts["PROCESSING"] == 1
    assert queues["reports"].counts["PENDING"] == 1
    assert queues["reports"].counts["PROCESSING"] == 0
    assert queues["mail"].waiting == 2


def test_queue_stats_counts_recent_finished_only(app):
    _run("mail", due=NOW - timedelta(hours=3), wait=1, run=1)
    _run("mail", due=NOW - timedelta(minutes=30), wait=1, run=1)
    _run("mail", due=NOW - timedelta(minutes=20), wait=1, run=1, outcome="fail")

    mail = _by_name(stats.queue_stats(now=NOW))["mail"]

    assert mail.counts["SUCCEEDED"] == 1
    assert mail.counts["FAILED"] == 1
    assert mail.counts["CANCELLED"] == 0


def test_queue_stats_ages_the_oldest_due_task(app):
    _submit("mail", at=NOW - timedelta(minutes=7))
    _submit("mail", at=NOW - timedelta(minutes=2))

    mail = _by_name(stats.queue_stats(now=NOW))["mail"]

    assert mail.oldest_due_at == NOW - timedelta(minutes=7)
    assert mail.oldest_wait_seconds == pytest.approx(420)


def test_queue_stats_does_not_age_scheduled_tasks(app):
    _submit("mail", at=NOW - timedelta(minutes=1), delay_seconds=3600)

    mail = _by_name(stats.queue_stats(now=NOW))["mail"]

    assert mail.counts["PENDING"] == 1
    assert mail.oldest_due_at is None
    assert mail.oldest_wait_seconds is None


def test_queue_stats_lists_paused_queue_without_tasks(app):
    queue_control.pause_queue("later")
    queue_control.set_concurrency_limit("later", 3)

    later = _by_name(stats.queue_stats(now=NOW))["later"]

    assert later.paused is True
    assert later.concurrency_limit == 3
    assert sum(later.counts.values()) == 0


def test_queue_stats_lists_queue_seen_in_recent_samples(app):
    db.session.add(QueueSample(sampled_at=stats.floor_minute(NOW) - timedelta(hours=5),
                               queue="nightly", waiting=4, processing=0))
    db.session.commit()

    assert "nightly" in _by_name(stats.queue_stats(now=NOW))


# finished_per_minute


def test_finished_per_minute_fills_the_hour(app):
    minutes = stats.finished_per_minute(now=NOW)

    assert len(minutes) == 60
    assert minutes[-1].minute == datetime(2026, 3, 2, 12, 30, tzinfo=UTC)
    assert minutes[0].minute == datetime(2026, 3, 2, 11, 31, tzinfo=UTC)
    assert all(m.succeeded == 0 and m.failed == 0 for m in minutes)


def test_finished_per_minute_counts_by_minute_and_outcome(app):
    _run(due=datetime(2026, 3, 2, 12, 10, 5, tzinfo=UTC), wait=1, run=2)
    _run(due=datetime(2026, 3, 2, 12, 10, 30, tzinfo=UTC), wait=1, run=2)
    _run(due=datetime(2026, 3, 2, 12, 10, 40, tzinfo=UTC), wait=1, run=2, outcome="fail")
    _run(due=datetime(2026, 3, 2, 12, 29, 0, tzinfo=UTC), wait=1, run=1)
    _run(due=datetime(2026, 3, 2, 11, 0, 0, tzinfo=UTC), wait=1, run=1)

    minutes = {m.minute: m for m in stats.finished_per_minute(now=NOW)}

    ten = minutes[datetime(2026, 3, 2, 12, 10, tzinfo=UTC)]
    assert (ten.succeeded, ten.failed) == (2, 1)
    twenty_nine = minutes[datetime(2026, 3, 2, 12, 29, tzinfo=UTC)]
    assert (twenty_nine.succeeded, twenty_nine.failed) == (1, 0)
    assert sum(m.succeeded + m.failed for m in minutes.values()) == 4


def test_finished_per_minute_leaves_out_cancelled_tasks(app):
    task = _submit(at=NOW - timedelta(minutes=3))
    queue.cancel(task.id, now=NOW - timedelta(minutes=2))

    assert sum(m.succeeded + m.failed for m in stats.finished_per_minute(now=NOW)) == 0


# task_timings


def test_task_timings_percentiles_per_type(app, register_type):
    base = NOW - timedelta(minutes=50)
    for index in range(1, 11):
        _run(due=base + timedelta(minutes=index), wait=index / 10, run=float(index))

    report = stats.task_timings(now=NOW)

    assert report.sample_size == 10
    assert report.truncated is False
    [noop] = report.types
    assert noop.type == "noop"
    assert noop.count == 10
    assert noop.run_seconds[50] == pytest.approx(5.5, abs=0.01)
    assert noop.run_seconds[99] == pytest.approx(9.91, abs=0.01)
    assert noop.wait_seconds[50] == pytest.approx(0.55, abs=0.01)
    assert noop.wait_seconds[95] == pytest.approx(0.955, abs=0.01)


def test_task_timings_uses_latest_tasks_up_to_limit(app):
    base = NOW - timedelta(minutes=50)
    for index, run in enumerate([100.0, 1.0, 2.0, 3.0]):
        _run(due=base + timedelta(minutes=index * 5), wait=0, run=run)

    report = stats.task_timings(now=NOW, limit=3)

    assert report.sample_size == 3
    assert report.truncated is True
    assert report.types[0].run_seconds[99] == pytest.approx(2.98, abs=0.01)


def test_task_timings_skips_tasks_outside_window(app):
    _run(due=NOW - timedelta(hours=2), wait=0, run=1)

    report = stats.task_timings(now=NOW)

    assert report.sample_size == 0
    assert report.types == []


def test_task_timings_wait_counts_from_run_at(app):
    task = _submit(at=NOW - timedelta(minutes=30), delay_seconds=600)
    due = task.run_at
    claims = queue.claim("worker-a", 1, now=due + timedelta(seconds=3))
    queue.succeed(claims[0], None, now=due + timedelta(seconds=4))

    [timings] = stats.task_timings(now=NOW).types

    assert timings.wait_seconds[50] == pytest.approx(3, abs=0.01)
    assert timings.run_seconds[50] == pytest.approx(1, abs=0.01)


# record_queue_sample and queue_depth


def test_record_queue_sample_stores_waiting_and_running(app):
    _submit("mail", at=NOW - timedelta(minutes=3))
    _submit("mail", at=NOW - timedelta(minutes=2))
    _submit("mail", at=NOW - timedelta(minutes=1), delay_seconds=3600)
    _submit("reports", at=NOW - timedelta(minutes=2))
    queue.claim("worker-a", 1, queues=["reports"], now=NOW - timedelta(minutes=1))

    assert stats.record_queue_sample(now=NOW) is True

    rows = {row.queue: row for row in db.session.scalars(select(QueueSample))}
    assert sorted(rows) == ["mail", "reports"]
    assert (rows["mail"].waiting, rows["mail"].processing) == (2, 0)
    assert (rows["reports"].waiting, rows["reports"].processing) == (0, 1)
    assert rows["mail"].sampled_at == stats.floor_minute(NOW)


def test_record_queue_sample_once_per_minute(app):
    _submit("mail", at=NOW - timedelta(minutes=3))

    assert stats.record_queue_sample(now=NOW) is True
    assert stats.record_queue_sample(now=NOW + timedelta(seconds=30)) is False
    assert count_rows("queue_samples") == 1
    assert stats.record_queue_sample(now=NOW + timedelta(seconds=40)) is True
    assert count_rows("queue_samples") == 2


def test_record_queue_sample_keeps_emptied_queue_at_zero(app):
    _submit("mail", at=NOW - timedelta(minutes=3))
    stats.record_queue_sample(now=NOW)
    claims = queue.claim("worker-a", 1, now=NOW + timedelta(seconds=5))
    queue.succeed(claims[0], None, now=NOW + timedelta(seconds=6))

    assert stats.record_queue_sample(now=NOW + timedelta(minutes=1)) is True

    depth = stats.queue_depth(now=NOW + timedelta(minutes=1))
    assert depth.waiting == {"mail": [1, 0]}


def test_record_queue_sample_without_queues_stores_nothing(app):
    assert stats.record_queue_sample(now=NOW) is False
    assert count_rows("queue_samples") == 0


def test_record_queue_sample_prunes_day_old_samples(app):
    old = stats.floor_minute(NOW) - timedelta(days=1, minutes=1)
    db.session.add(QueueSample(sampled_at=old, queue="mail", waiting=1, processing=0))
    db.session.commit()
    _submit("mail", at=NOW - timedelta(minutes=3))

    stats.record_queue_sample(now=NOW)

    sampled = db.session.scalars(select(QueueSample.sampled_at)).all()
    assert sampled == [stats.floor_minute(NOW)]


def test_queue_depth_fills_missing_queue_with_zero(app):
    minute = stats.floor_minute(NOW)
    db.session.add_all([
        QueueSample(sampled_at=minute - timedelta(minutes=2), queue="mail", waiting=5, processing=0),
        QueueSample(sampled_at=minute - timedelta(minutes=2), queue="reports", waiting=1, processing=0),
        QueueSample(sampled_at=minute, queue="reports", waiting=3, processing=1),
        QueueSample(sampled_at=minute - timedelta(hours=2), queue="old", waiting=9, processing=0),
    ])
    db.session.commit()

    depth = stats.queue_depth(now=NOW)

    assert depth.minutes == [minute - timedelta(minutes=2), minute]
    assert depth.waiting == {"mail": [5, 0], "reports": [1, 3]}
    assert depth.peak == 5


# workers_report


def test_workers_report_marks_stale_worker_gone(app):
    worker_registry.register_worker("live-1", hostname="a", pid=1, queues=None, concurrency=2)
    worker_registry.register_worker("gone-1", hostname="b", pid=2, queues=["mail"], concurrency=1)
    live_beat = db.session.get(worker_registry.WorkerProcess, "live-1").heartbeat_at

    report = stats.workers_report(timedelta(seconds=30), now=live_beat + timedelta(seconds=10))
    assert [w.gone for w in report.workers] == [False, False]

    db.session.get(worker_registry.WorkerProcess, "gone-1").heartbeat_at = live_beat - timedelta(minutes=5)
    db.session.commit()
    report = stats.workers_report(timedelta(seconds=30), now=live_beat + timedelta(seconds=10))

    assert [w.id for w in report.live] == ["live-1"]
    assert [w.id for w in report.gone] == ["gone-1"]
    assert report.workers[-1].heartbeat_age_seconds == pytest.approx(310, abs=1)


def test_workers_report_lists_tasks_each_worker_runs(app):
    worker_registry.register_worker("live-1", hostname="a", pid=1, queues=None, concurrency=4)
    first = _submit("mail", at=NOW - timedelta(minutes=2))
    second = _submit("mail", at=NOW - timedelta(minutes=1))
    stray = _submit("reports", at=NOW - timedelta(minutes=1))
    queue.claim("live-1", 2, queues=["mail"], now=NOW)
    queue.claim("vanished", 1, queues=["reports"], now=NOW)

    report = stats.workers_report(timedelta(seconds=30))

    [worker] = report.workers
    assert [task.id for task in worker.tasks] == [first.id, second.id]
    assert worker.tasks[0].type == "noop"
    assert worker.tasks[0].queue == "mail"
    assert [task.id for task in report.unregistered["vanished"]] == [stray.id]


def test_task_status_values_match_stats_constants():
    assert stats.WAITING_STATUSES == [TaskStatus.PENDING.value, TaskStatus.RETRYING.value]
    assert TaskStatus.PROCESSING.value in stats.UNFINISHED_STATUSES
