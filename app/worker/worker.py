"""The worker: polls for due tasks, runs their handlers and records the outcomes."""

import logging
import os
import secrets
import socket
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from app.extensions import db
from app.tasks import PermanentError, TaskCancelled, queue, registry, signals, stats, worker_registry
from app.tasks.schedules import schedules
from app.tasks.errors import InvalidResult, LeaseLost
from app.tasks.queue import Claim

from .context import TaskContext
from .local_wakeup import WakeupListener, send_wakeups, wakeup_folder
from .notifications import NotificationListener
from .recorder import SuccessRecorder
from .recorder import first_line as _first_line
from .recorder import is_transient as _is_transient

log = logging.getLogger(__name__)


class _SkippedRunFilter(logging.Filter):
    """Drop APScheduler's warning that a job run was skipped because the last one still runs.

    A wake-up that lands while a poll runs causes it, and the running poll
    claims the task anyway, so the warning would only alarm operators.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


logging.getLogger("apscheduler.scheduler").addFilter(_SkippedRunFilter())


def new_worker_id() -> str:
    """Return an id that names this host and process, unique across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class _Outcome:
    result: object = None
    error: str | None = None
    traceback: str | None = None
    retryable: bool = True

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _RunningAttempt:
    claim: Claim
    context: TaskContext
    started: float = field(default_factory=time.monotonic)
    # Set when the handler returns, or when a stopping worker released the
    # attempt; the thread that waits for the handler then looks at `released`.
    wakeup: threading.Event = field(default_factory=threading.Event)
    released: bool = False


# Seconds ahead within which a worker wakes itself for a retry it scheduled.
MAX_RETRY_WAKE_AHEAD = 600.0

# Maximum seconds between two tries to reach a database that is down.
MAX_RECONNECT_DELAY = 30.0


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _attempts(count: int, state: str) -> str:
    return f"{count} {state} attempt" + ("" if count == 1 else "s")


class Worker:
    """Claims due tasks and runs up to `concurrency` of them at once.

    An APScheduler background scheduler runs two jobs: a poll every
    `poll_interval` seconds (sooner when woken) that recovers expired leases
    and claims as many tasks as there are free slots, and a heartbeat that
    renews the leases of running attempts. Each attempt runs in a thread pool
    of `concurrency` threads; its handler runs in a thread of its own, so that
    an attempt that passes its timeout can be recorded as failed and its slot
    freed even if the handler never returns.
    """

    def __init__(
        self,
        app: Flask,
        *,
        concurrency: int | None = None,
        poll_interval: float | None = None,
        queues: list[str] | None = None,
        worker_id: str | None = None,
    ):
        config = app.config
        self.app = app
        self.id = worker_id or new_worker_id()
        if concurrency is None:
            concurrency = config["WORKER_CONCURRENCY"]
        if poll_interval is None:
            poll_interval = config["WORKER_POLL_INTERVAL"]
        self.concurrency = int(concurrency)
        self.poll_interval = float(poll_interval)
        self.heartbeat_interval = float(config["HEARTBEAT_INTERVAL"])
        self.queues = list(queues) if queues else None
        if self.concurrency < 1:
            raise ValueError(f"worker concurrency must be at least 1, got {self.concurrency}")
        if self.poll_interval <= 0:
            raise ValueError(f"poll interval must be positive, got {self.poll_interval}")
        if self.heartbeat_interval >= config["LEASE_SECONDS"]:
            raise ValueError(
                f"HEARTBEAT_INTERVAL ({self.heartbeat_interval:g} s) must be shorter than "
                f"LEASE_SECONDS ({config['LEASE_SECONDS']:g} s), or leases expire between beats"
            )

        self._running: dict[int, _RunningAttempt] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="taskboard-attempt"
        )
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._polling = False
        self._wake_pending = False
        self._stopping = threading.Event()
        self._started = False
        self._listener: NotificationListener | None = None
        self._wakeup_listener: WakeupListener | None = None
        self._wakeup_folder: str | None = None
        self._recorder = SuccessRecorder(app, self.id, float(config["LEASE_SECONDS"]))
        self._last_recovery = 0.0
        self._poll_failures = 0
        self._poll_resume_at = 0.0
        self._poll_failure_transient = False

    # Life cycle

    def start(self) -> None:
        """Start polling and heartbeats in background threads; return at once."""
        now = datetime.now(UTC)
        self._scheduler.add_job(
            self._poll, "interval", seconds=self.poll_interval, id="poll", next_run_time=now
        )
        self._scheduler.add_job(
            self._heartbeat, "interval", seconds=self.heartbeat_interval, id="heartbeat"
        )
        self._scheduler.add_job(
            self._sample_queues, "interval", seconds=stats.SAMPLE_ATTEMPT_INTERVAL.total_seconds(),
            id="queue_samples", next_run_time=datetime.now(UTC),
        )
        signals.task_submitted.connect(self._on_task_submitted, sender=self.app)
        signals.cancel_requested.connect(self._on_cancel_requested, sender=self.app)
        signals.retry_scheduled.connect(self._on_retry_scheduled, sender=self.app)
        with self.app.app_context():
            worker_registry.register_worker(
                self.id, hostname=socket.gethostname(), pid=os.getpid(), queues=self.queues,
                concurrency=self.concurrency)
            if db.engine.dialect.name == "postgresql":
                self._listener = NotificationListener(db.engine.url, self._on_notification)
                self._listener.start()
            else:
                self._start_wakeup_listener(wakeup_folder(db.engine.url.database))
        self._recorder.start()
        self._scheduler.start()
        self._started = True
        log.info(
            "Worker %s started: concurrency %s, poll every %g s, queues %s",
            self.id, self.concurrency, self.poll_interval, ", ".join(self.queues or ["all"]),
            extra={"worker_id": self.id, "event": "worker_started"},
        )

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming, wait up to `timeout` seconds for running attempts, then release the rest.

        Heartbeats go on while the worker waits, so no lease runs out. An
        attempt still running after `timeout` is asked to stop and given back
        to the queue as PENDING (see queue.release); its handler thread is
        abandoned. `timeout` defaults to SHUTDOWN_GRACE_SECONDS.
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        if timeout is None:
            timeout = float(self.app.config["SHUTDOWN_GRACE_SECONDS"])
        signals.task_submitted.disconnect(self._on_task_submitted, sender=self.app)
        signals.cancel_requested.disconnect(self._on_cancel_requested, sender=self.app)
        signals.retry_scheduled.disconnect(self._on_retry_scheduled, sender=self.app)
        if self._listener is not None:
            self._listener.stop()
        if self._wakeup_listener is not None:
            self._wakeup_listener.stop()
        if self._started:
            self._scheduler.remove_job("poll")
            if self.running_count:
                log.info("Worker %s stopping: waiting up to %g s for %s",
                         self.id, timeout, _attempts(self.running_count, "running"),
                         extra={"worker_id": self.id, "event": "worker_stopping"})

        deadline = time.monotonic() + timeout
        while self.running_count and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._started:
            self._scheduler.shutdown(wait=True)
        self._recorder.stop()
        self._release_unfinished()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._started:
            try:
                with self.app.app_context():
                    worker_registry.unregister_worker(self.id)
            except Exception:
                log.exception("Worker %s could not remove itself from the registry; it is "
                              "shown as gone once its heartbeat is stale", self.id,
                              extra={"worker_id": self.id})
        log.info("Worker %s stopped", self.id,
                 extra={"worker_id": self.id, "event": "worker_stopped"})

    def _release_unfinished(self) -> None:
        with self._lock:
            unfinished = list(self._running.values())
        if not unfinished:
            return
        # Marked first, so that a handler that stops now is not recorded as a
        # failure of the attempt that is being released.
        for attempt in unfinished:
            attempt.released = True
            attempt.context.abandoned = True
            attempt.context.request_stop("the worker is stopping")
        try:
            with self.app.app_context():
                released = queue.release(
                    [attempt.claim for attempt in unfinished],
                    reason="it stopped before the attempt finished",
                )
        except Exception:
            log.exception(
                "Worker %s could not release %s; they are recovered when their leases expire",
                self.id, _attempts(len(unfinished), "unfinished"),
                extra={"worker_id": self.id, "event": "release_failed"},
            )
            released = None
        else:
            log.warning("Worker %s released %s back to the queue",
                        self.id, _attempts(released, "unfinished"),
                        extra={"worker_id": self.id, "event": "released"})
        # Whatever the release did, the threads waiting for these handlers
        # return now, so that the process can exit; the handlers are abandoned.
        for attempt in unfinished:
            attempt.wakeup.set()

    @property
    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    def wake(self) -> None:
        """Poll now instead of at the next interval."""
        self._wake_pending = True
        if self._polling or self._stopping.is_set() or not self._started:
            return
        try:
            self._scheduler.modify_job("poll", next_run_time=datetime.now(UTC))
        except Exception:  # the scheduler is shutting down; the next start polls anyway
            log.debug("Could not wake worker %s", self.id, exc_info=True)

    def _on_task_submitted(self, sender, task_id, due_now, **extra):
        if due_now:
            self.wake()

    def _start_wakeup_listener(self, folder: str | None) -> None:
        if folder is None:
            return
        self._wakeup_folder = folder
        try:
            self._wakeup_listener = WakeupListener(folder, self._on_notification)
            self._wakeup_listener.start()
        except OSError as error:
            self._wakeup_listener = None
            log.warning("Worker %s cannot listen for wake-ups from other processes (%s); "
                        "it finds their tasks by polling", self.id, error,
                        extra={"worker_id": self.id})

    def _on_notification(self, queue_name: str | None) -> None:
        if self._poll_failure_transient:
            # The notice came over a live connection, so the database is
            # reachable again and the pause after a lost connection can end.
            self._poll_resume_at = 0.0
        if queue_name is None or self.queues is None or queue_name in self.queues:
            self.wake()

    def _on_retry_scheduled(self, sender, task_id, queue, delay_seconds, **extra):
        # A one-off job per retry; retries due in the far future are left to
        # polling, so that the scheduler never keeps many of them.
        if delay_seconds > MAX_RETRY_WAKE_AHEAD or self._stopping.is_set():
            return
        try:
            self._scheduler.add_job(
                self._on_retry_due, "date", args=[queue],
                run_date=datetime.now(UTC) + timedelta(seconds=delay_seconds),
            )
        except Exception:  # the scheduler is shutting down; polling covers the retry
            log.debug("Could not schedule a wake-up for task %s", task_id, exc_info=True)

    def _on_retry_due(self, queue_name: str) -> None:
        """Claim a retry that fell due, or wake idle workers elsewhere if every slot is busy."""
        if self.running_count < self.concurrency:
            self.wake()
            return
        send_wakeups(self._wakeup_folder, queue_name)
        try:
            with self.app.app_context():
                queue.notify_workers(queue_name)
        except Exception as error:
            log.warning("Worker %s could not notify other workers of a due retry (%s)",
                        self.id, _first_line(error), extra={"worker_id": self.id})

    def _on_cancel_requested(self, sender, task_id, **extra):
        with self._lock:
            running = self._running.get(task_id)
        if running is not None:
            running.context.request_stop("cancelled by a person")

    # Scheduled jobs

    def _poll(self) -> None:
        if time.monotonic() < self._poll_resume_at:
            return
        self._polling = True
        try:
            with self.app.app_context():
                # A wake-up should start its task at once, so lease recovery
                # runs at most once per poll interval rather than on every wake.
                if time.monotonic() - self._last_recovery >= self.poll_interval:
                    self._last_recovery = time.monotonic()
                    queue.recover_expired_leases()
                    self._submit_scheduled()
                self._claim_while_slots_free()
        except Exception as error:
            self._back_off_polling(error)
        else:
            if self._poll_failures:
                log.info("Worker %s reached the database again after %s failed polls",
                         self.id, self._poll_failures,
                         extra={"worker_id": self.id, "event": "database_reachable"})
                self._poll_failures = 0
        finally:
            self._polling = False
        if self._wake_pending and not self._stopping.is_set():
            self.wake()

    def _submit_scheduled(self) -> None:
        if not len(schedules):
            return
        try:
            schedules.submit_due()
        except Exception as error:
            if _is_transient(error):
                raise
            log.exception("Worker %s could not submit scheduled tasks", self.id,
                          extra={"worker_id": self.id, "event": "schedule_failed"})

    def _back_off_polling(self, error: Exception) -> None:
        """Skip polls for a while after a failed one, doubling the pause each time."""
        self._poll_failures += 1
        delay = min(self.poll_interval * 2 ** min(self._poll_failures - 1, 16), MAX_RECONNECT_DELAY)
        self._poll_resume_at = time.monotonic() + delay
        self._poll_failure_transient = _is_transient(error)
        extra = {"worker_id": self.id, "event": "poll_failed"}
        if _is_transient(error):
            log.warning("Worker %s cannot reach the database (%s); next try in %.1f s",
                        self.id, _first_line(error), delay, extra=extra)
        else:
            log.exception("Worker %s could not poll; next try in %.1f s", self.id, delay,
                          extra=extra)

    def poll_once(self) -> int:
        """Claim and start as many due tasks as there are free slots; return how many."""
        with self.app.app_context():
            return self._claim_once()

    def _claim_while_slots_free(self) -> None:
        while not self._stopping.is_set():
            self._wake_pending = False
            free = self.concurrency - self.running_count
            if free <= 0:
                return
            started = self._claim_once(free)
            if started < free and not self._wake_pending:
                return

    def _claim_once(self, limit: int | None = None) -> int:
        if limit is None:
            limit = self.concurrency - self.running_count
        claims = queue.claim(self.id, limit, queues=self.queues)
        for claim in claims:
            self._start_attempt(claim)
        return len(claims)

    def _sample_queues(self) -> None:
        """Store this minute's queue depth sample, unless another worker process already did."""
        try:
            with self.app.app_context():
                stats.record_queue_sample()
        except Exception as error:
            log.warning("Worker %s could not store a queue depth sample (%s)", self.id,
                        _first_line(error), extra={"worker_id": self.id, "event": "sample_failed"})

    def _heartbeat(self) -> None:
        with self._lock:
            running = list(self._running.values())
        try:
            with self.app.app_context():
                if not worker_registry.beat(self.id):
                    worker_registry.register_worker(
                        self.id, hostname=socket.gethostname(), pid=os.getpid(),
                        queues=self.queues, concurrency=self.concurrency)
                held = queue.extend_leases(self.id, [r.claim for r in running])
        except Exception as error:
            if not _is_transient(error):
                log.exception("Worker %s could not renew its leases", self.id,
                              extra={"worker_id": self.id, "event": "heartbeat_failed"})
            else:
                log.warning("Worker %s could not renew its leases (%s)", self.id,
                            _first_line(error),
                            extra={"worker_id": self.id, "event": "heartbeat_failed"})
            return
        for attempt in running:
            task_id = attempt.claim.task_id
            if task_id not in held:
                attempt.context.request_stop("the lease was lost")
            elif held[task_id]:
                attempt.context.request_stop("cancelled by a person")

    # Running one attempt

    def _start_attempt(self, claim: Claim) -> None:
        attempt = _RunningAttempt(claim=claim, context=TaskContext(claim))
        with self._lock:
            # An earlier attempt of the same task is still here only if its
            # lease expired and this worker claimed the task again. That
            # attempt is lost, so its handler is asked to stop.
            lost = self._running.get(claim.task_id)
            self._running[claim.task_id] = attempt
        if lost is not None:
            lost.context.request_stop("the lease was lost")
        self._executor.submit(self._run_attempt, attempt)

    def _run_attempt(self, attempt: _RunningAttempt) -> None:
        claim = attempt.claim
        try:
            outcome = self._execute(attempt)
            if outcome is None:
                return
            with self.app.app_context():
                self._record(claim, outcome)
        except Exception:
            log.exception(
                "Worker %s could not record the outcome of task %s; it is recovered "
                "when its lease expires", self.id, claim.task_id,
                extra={"task_id": claim.task_id, "worker_id": self.id},
            )
        finally:
            with self._lock:
                if self._running.get(claim.task_id) is attempt:
                    del self._running[claim.task_id]
            self.wake()

    def _execute(self, attempt: _RunningAttempt) -> _Outcome | None:
        """Run the handler in its own thread and wait for it up to the task's timeout.

        Return None when a stopping worker released the attempt meanwhile:
        there is then nothing left to record.
        """
        claim = attempt.claim
        task_type = registry.get(claim.type)
        if task_type is None:
            return _Outcome(
                error=f"UnknownTaskType: no handler is registered for {claim.type!r} in "
                      f"worker {self.id}; add its module to TASK_MODULES",
                retryable=False,
            )

        outcome = _Outcome()
        finished = threading.Event()

        def run_handler():
            try:
                with self.app.app_context():
                    result = task_type.handler(attempt.context, **claim.params)
                outcome.result = result
            except BaseException as error:  # noqa: BLE001  (the handler's failure is data)
                outcome.error = _describe(error)
                # A handler that stopped because it was asked to did not crash.
                if not isinstance(error, TaskCancelled):
                    outcome.traceback = traceback.format_exc()
                outcome.retryable = not isinstance(error, PermanentError)
            finally:
                finished.set()
                attempt.wakeup.set()
                if attempt.context.abandoned:
                    self._report_late_handler(claim, outcome)

        thread = threading.Thread(
            target=run_handler, name=f"taskboard-task-{claim.task_id}", daemon=True
        )
        thread.start()
        attempt.wakeup.wait(claim.timeout_seconds)
        if attempt.released:
            attempt.context.abandoned = True
            return None
        if finished.is_set():
            return outcome

        attempt.context.abandoned = True
        attempt.context.request_stop("the attempt timed out")
        log.warning(
            "Task %s attempt %s timed out after %g s; its handler thread is abandoned",
            claim.task_id, claim.attempt, claim.timeout_seconds,
            extra={"task_id": claim.task_id, "worker_id": self.id, "event": "timed_out"},
        )
        return _Outcome(error=f"TaskTimeout: timed out after {claim.timeout_seconds:g} s")

    def _report_late_handler(self, claim: Claim, outcome: _Outcome) -> None:
        what = "returned" if outcome.ok else f"raised {outcome.error}"
        log.warning(
            "Task %s attempt %s %s after the worker gave up on it (timeout or shutdown); "
            "the outcome was discarded",
            claim.task_id, claim.attempt, what,
            extra={"task_id": claim.task_id, "worker_id": self.id, "event": "late_outcome"},
        )

    def _record(self, claim: Claim, outcome: _Outcome) -> None:
        """Store the outcome, retrying while the database is unreachable and the lease lasts.

        A result goes to the recorder, which stores results in batches; once
        the worker is stopping, it is stored here instead. Failures are
        stored here.
        """
        if outcome.ok:
            try:
                queue.encode_result(outcome.result)
            except InvalidResult as error:
                outcome = _Outcome(error=_describe(error), retryable=False)
            else:
                if self._recorder.put(claim, outcome.result):
                    return
        deadline = time.monotonic() + float(self.app.config["LEASE_SECONDS"])
        delay = 0.1
        while True:
            try:
                self._record_once(claim, outcome)
                return
            except LeaseLost as error:
                log.warning("%s", error, extra={"task_id": claim.task_id, "worker_id": self.id,
                                                "event": "lease_lost"})
                return
            except Exception as error:
                if not _is_transient(error) or time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "Worker %s could not record the outcome of task %s (%s); next try in %.1f s",
                    self.id, claim.task_id, _first_line(error), delay,
                    extra={"task_id": claim.task_id, "worker_id": self.id, "event": "record_retry"},
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _record_once(self, claim: Claim, outcome: _Outcome) -> None:
        if outcome.ok:
            try:
                queue.succeed(claim, outcome.result)
                return
            except InvalidResult as error:
                outcome = _Outcome(error=_describe(error), retryable=False)
        queue.fail(claim, outcome.error, outcome.traceback, retryable=outcome.retryable)
