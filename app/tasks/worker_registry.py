"""The registry of worker processes: who is running, where, and since when.

Each worker process inserts its row at start, renews `heartbeat_at` with its
lease heartbeats and deletes the row on a clean stop. A worker whose
heartbeat is older than LEASE_SECONDS is reported as gone.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, func, select, update

from app.extensions import db

from .lifecycle import TaskStatus
from .models import Task, WorkerProcess
from .session import clock, clock_expression, write_transaction

log = logging.getLogger(__name__)

# Rows of workers gone for longer than this are deleted when another worker starts.
FORGET_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class WorkerStatus:
    worker: WorkerProcess
    running_task_ids: list[int]
    gone: bool
    heartbeat_age_seconds: float

    def to_dict(self) -> dict:
        return {
            **self.worker.to_dict(running=self.running_task_ids, gone=self.gone),
            "heartbeat_age_seconds": round(self.heartbeat_age_seconds, 1),
        }


def register_worker(worker_id: str, *, hostname: str, pid: int, queues: list[str] | None,
                    concurrency: int) -> None:
    """Insert the row of a starting worker, and forget workers gone for over a day."""
    with write_transaction() as session:
        now = clock(session, None)
        session.execute(delete(WorkerProcess).where(WorkerProcess.heartbeat_at < now - FORGET_AFTER))
        session.merge(WorkerProcess(id=worker_id, hostname=hostname, pid=pid, queues=queues,
                                    concurrency=concurrency, started_at=now, heartbeat_at=now))


def beat(worker_id: str) -> bool:
    """Renew a worker's heartbeat; return False if its row is missing (it was forgotten)."""
    with write_transaction() as session:
        changed = session.execute(
            update(WorkerProcess)
            .where(WorkerProcess.id == worker_id)
            .values(heartbeat_at=clock_expression(session, None))
        ).rowcount
    return changed == 1


def unregister_worker(worker_id: str) -> None:
    with write_transaction() as session:
        session.execute(delete(WorkerProcess).where(WorkerProcess.id == worker_id))


def live_worker_count(now: datetime | None = None) -> int:
    """Return how many registered workers sent a heartbeat within LEASE_SECONDS."""
    session = db.session()
    now = clock(session, now)
    stale_after = timedelta(seconds=float(current_app.config["LEASE_SECONDS"]))
    return session.scalar(
        select(func.count()).select_from(WorkerProcess)
        .where(WorkerProcess.heartbeat_at >= now - stale_after))


def list_workers(now: datetime | None = None) -> list[WorkerStatus]:
    """Return every registered worker, live ones first, with the tasks each one runs."""
    session = db.session()
    now = clock(session, now)
    stale_after = timedelta(seconds=float(current_app.config["LEASE_SECONDS"]))
    workers = list(session.scalars(select(WorkerProcess).order_by(WorkerProcess.started_at)))
    running: dict[str, list[int]] = {}
    rows = session.execute(
        select(Task.locked_by, Task.id)
        .where(Task.status == TaskStatus.PROCESSING.value)
        .order_by(Task.id)
    )
    for locked_by, task_id in rows:
        running.setdefault(locked_by, []).append(task_id)

    statuses = [
        WorkerStatus(
            worker=worker,
            running_task_ids=running.get(worker.id, []),
            gone=now - worker.heartbeat_at > stale_after,
            heartbeat_age_seconds=max(0.0, (now - worker.heartbeat_at).total_seconds()),
        )
        for worker in workers
    ]
    return sorted(statuses, key=lambda status: status.gone)
