"""Records the outcomes of attempts in batches, one transaction per kind of outcome."""

import logging
import queue as queue_module
import threading
import time
from collections.abc import Callable

from flask import Flask
from sqlalchemy.exc import DBAPIError, OperationalError

from app.tasks import queue
from app.tasks.queue import AttemptFailure, Claim

log = logging.getLogger(__name__)

# Outcomes recorded in one batch at most.
MAX_BATCH = 200

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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


class OutcomeRecorder:
    """A thread that stores the outcomes of attempts: results and failures.

    Handler threads hand each outcome over and go on at once. The recorder
    takes whatever has piled up, up to MAX_BATCH, and stores the results with
    one queue.succeed_many call and the failures with one queue.fail_many
    call, so that under load a commit covers many tasks. A lost connection is
    retried with a doubling delay for as long as the leases last; after
    that, lease recovery retries the tasks. `on_done` is called with the
    claims of each group once it is stored or given up on.
    """

    def __init__(self, app: Flask, worker_id: str, lease_seconds: float,
                 on_done: Callable[[list[Claim]], None] = lambda claims: None):
        self.app = app
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.on_done = on_done
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
        return self._put((claim, result, time.monotonic()))

    def put_failure(self, failure: AttemptFailure) -> bool:
        """Queue a failed attempt; return False, as put() does, when the caller must store it."""
        return self._put((failure, None, time.monotonic()))

    def _put(self, item) -> bool:
        with self._lock:
            if self._stopped or not self._thread.is_alive():
                return False
            self._pending.put(item)
            return True

    def stop(self, timeout: float = 10.0) -> None:
        """Record what is queued, then end the thread; later outcomes are refused."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._pending.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        # One application context for the thread's life, so that a batch
        # does not pay for pushing one.
        with self.app.app_context():
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
        results = [(item, result, queued) for item, result, queued in batch
                   if isinstance(item, Claim)]
        failures = [(item, None, queued) for item, _, queued in batch
                    if isinstance(item, AttemptFailure)]
        for items, noun, store in ((results, "result", self._store_results),
                                   (failures, "failure", self._store_failures)):
            if not items:
                continue
            try:
                lost = self._store(items, noun, store)
                for claim in lost or ():
                    self._log_rejected(claim, noun)
            finally:
                self.on_done([_claim_of(item) for item, _, _ in items])

    @staticmethod
    def _store_results(items: list) -> list[Claim]:
        return queue.succeed_many([(claim, result) for claim, result, _ in items])

    @staticmethod
    def _store_failures(items: list) -> list[Claim]:
        failures = [failure for failure, _, _ in items]
        statuses = queue.fail_many(failures)
        return [failure.claim for failure, status in zip(failures, statuses) if status is None]

    def _store(self, items: list, noun: str, store) -> list[Claim] | None:
        """Call `store(items)` until it succeeds or the leases run out; return the claims lost.

        Return None when the outcomes could not be stored; they are logged.
        """
        deadline = min(queued for _, _, queued in items) + self.lease_seconds
        task_ids = [_claim_of(item).task_id for item, _, _ in items]
        outcomes = _plural(len(items), noun)
        extra = {"worker_id": self.worker_id, "task_ids": task_ids}
        delay = 0.1
        while True:
            try:
                return store(items)
            except Exception as error:
                if not is_transient(error) or time.monotonic() + delay > deadline:
                    log.exception(
                        "Worker %s could not record %s (tasks %s); they are recovered "
                        "when their leases expire", self.worker_id, outcomes,
                        ", ".join(map(str, task_ids)), extra={**extra, "event": "record_failed"})
                    return None
                log.warning("Worker %s could not record %s (%s); next try in %.1f s",
                            self.worker_id, outcomes, first_line(error), delay,
                            extra={**extra, "event": "record_retry"})
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _log_rejected(self, claim: Claim, noun: str) -> None:
        log.warning(
            "Task %s attempt %s is no longer held by worker %s; its %s was rejected",
            claim.task_id, claim.attempt, self.worker_id, noun,
            extra={"task_id": claim.task_id, "worker_id": self.worker_id, "event": "lease_lost"})


def _claim_of(item) -> Claim:
    return item.claim if isinstance(item, AttemptFailure) else item
