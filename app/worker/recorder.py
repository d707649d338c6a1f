"""Records successful attempts in batches, one transaction per batch."""

import logging
import queue as queue_module
import threading
import time

from flask import Flask
from sqlalchemy.exc import DBAPIError, OperationalError

from app.tasks import queue
from app.tasks.queue import Claim

log = logging.getLogger(__name__)

# Attempts recorded in one transaction at most.
MAX_BATCH = 100

_STOP = object()


def is_transient(error: BaseException) -> bool:
    """Return whether `error` is a lost connection or a busy database, which a retry may cure."""
    return isinstance(error, OperationalError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )


def first_line(error: BaseException) -> str:
    """Return the first line of the driver's message, without SQLAlchemy's wrapping."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class SuccessRecorder:
    """A thread that stores the results of attempts whose handlers returned.

    Threads that run handlers hand each result over and go on at once. The
    recorder takes whatever has piled up, up to MAX_BATCH, and stores it in
    one transaction, so that under load a commit covers many tasks. A lost
    connection is retried with a doubling delay for as long as the leases
    last; after that, lease recovery retries the tasks.
    """

    def __init__(self, app: Flask, worker_id: str, lease_seconds: float):
        self.app = app
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self._pending: queue_module.SimpleQueue = queue_module.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="taskboard-recorder", daemon=True)
        # Held while queueing, so that nothing can be queued behind the stop marker.
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    def put(self, claim: Claim, result) -> bool:
        """Queue a result that encode_result already accepted.

        Return False, queueing nothing, before start() and after stop(): the
        caller then stores the result itself.
        """
        with self._lock:
            if self._stopped or not self._thread.is_alive():
                return False
            self._pending.put((claim, result, time.monotonic()))
            return True

    def stop(self, timeout: float = 10.0) -> None:
        """Record what is queued, then end the thread; later results are refused."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._pending.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._pending.get()
            if item is _STOP:
                return
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._pending.get_nowait()
                except queue_module.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._record(batch)

    def _record(self, batch: list) -> None:
        deadline = min(queued for _, _, queued in batch) + self.lease_seconds
        task_ids = [claim.task_id for claim, _, _ in batch]
        results = f"{len(batch)} result" + ("" if len(batch) == 1 else "s")
        extra = {"worker_id": self.worker_id, "task_ids": task_ids}
        delay = 0.1
        while True:
            try:
                with self.app.app_context():
                    lost = queue.succeed_many([(claim, result) for claim, result, _ in batch])
            except Exception as error:
                if not is_transient(error) or time.monotonic() + delay > deadline:
                    log.exception(
                        "Worker %s could not record %s (tasks %s); they are recovered "
                        "when their leases expire", self.worker_id, results,
                        ", ".join(map(str, task_ids)), extra={**extra, "event": "record_failed"})
                    return
                log.warning("Worker %s could not record %s (%s); next try in %.1f s",
                            self.worker_id, results, first_line(error), delay,
                            extra={**extra, "event": "record_retry"})
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            for claim in lost:
                log.warning(
                    "Task %s attempt %s is no longer held by worker %s; its result was rejected",
                    claim.task_id, claim.attempt, self.worker_id,
                    extra={"task_id": claim.task_id, "worker_id": self.worker_id,
                           "event": "lease_lost"})
            return
