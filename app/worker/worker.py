"""The worker: claims due tasks in batches, runs their handlers and records the outcomes."""

import logging
import os
import queue as queue_module
import secrets
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from app.extensions import db
from app.tasks import PermanentError, TaskCancelled, queue, registry, signals, stats, worker_registry
from app.tasks.schedules import schedules
from app.tasks.errors import InvalidResult, LeaseLost
from app.tasks.queue import AttemptFailure, Claim

from .context import TaskContext
from .local_wakeup import WakeupListener, send_wakeups, wakeup_folder
from .notifications import NotificationListener
from .recorder import OutcomeRecorder
from .recorder import first_line as _first_line
from .recorder import is_transient as _is_transient

log = logging.getLogger(__name__)


class _SkippedRunFilter(logging.Filter):
    """Drop APScheduler's warning that a job run was skipped because the last one still runs.

    A heartbeat that takes longer than its interval causes it, and the
    running heartbeat renews the leases anyway, so the warning would only
    alarm operators.
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


# States of an attempt the worker holds. Every change happens under the
# worker's lock, so that exactly one of "the handler returned", "the
# attempt timed out" and "a stopping worker released it" wins.
QUEUED = "queued"          # claimed, waiting for a free handler thread
RUNNING = "running"        # its handler runs
FINISHED = "finished"      # its outcome is being handed to the recorder
TIMED_OUT = "timed out"    # the watchdog gave up on its handler
RELEASED = "released"      # given back to the queue: the worker stops, or no slot freed in time


@dataclass(eq=False)
class _HeldAttempt:
    claim: Claim
    context: TaskContext
    state: str = QUEUED
    # time.monotonic() when the worker claimed the attempt.
    held_since: float = 0.0
    # time.monotonic() when its handler started, and by when it must return.
    started: float = 0.0
    deadline: float = 0.0


# Seconds ahead within which a worker wakes itself for a retry it scheduled.
MAX_RETRY_WAKE_AHEAD = 600.0

# Maximum seconds between two tries to reach a database that is down.
MAX_RECONNECT_DELAY = 30.0

# Maximum seconds the watchdog sleeps between two looks at the running attempts.
WATCHDOG_MAX_SLEEP = 1.0

# A worker claims ahead of its free slots (prefetch) only while its handlers
# return within this many seconds on average, so that slow tasks are never
# held back from other workers while they wait for a free slot here.
PREFETCH_MAX_HANDLER_SECONDS = 0.05

# The prefetch is sized so that its attempts take the handler threads about
# this many seconds, at the running average duration: an estimate of how
# long a prefetched attempt waits before its handler starts.
PREFETCH_TARGET_SECONDS = 0.1

# A handler still running after this many seconds stops prefetch at once,
# before the average learns of it. It is well above the average's limit,
# so that a quick handler that waits for the GIL does not count as slow.
PREFETCH_SLOW_HANDLER_SECONDS = 0.5

# A claimed attempt that waited this many seconds without a free handler
# thread goes back to the queue, so that another worker can run it. This
# bounds the delay when slow tasks follow fast ones: prefetch stops once a
# handler runs longer than PREFETCH_SLOW_HANDLER_SECONDS, but what was
# prefetched before that would otherwise wait for these slow handlers.
PREFETCH_MAX_WAIT_SECONDS = 1.0

# Prefetched attempts per slot at most, unless the Worker is given its own limit.
DEFAULT_PREFETCH_PER_SLOT = 25

# Weight of the latest attempt in the running average of handler durations.
HANDLER_SECONDS_WEIGHT = 0.2


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _attempts(count: int, state: str) -> str:
    return f"{count} {state} attempt" + ("" if count == 1 else "s")


class Worker:
    """Claims due tasks in batches and runs up to `concurrency` of them at once.

    Threads, all started by start():

    - the claimer polls every `poll_interval` seconds, or at once when woken
      (a submit, a notice from another process, a freed slot). It recovers
      expired leases and claims as many due tasks as there is room for.
    - `concurrency` handler threads run the claimed attempts, one at a time
      each, and hand the outcomes to the recorder.
    - the recorder stores outcomes in batches (see OutcomeRecorder).
    - the watchdog records an attempt that passed its timeout as failed and
      frees its slot, even if the handler never returns: that handler's
      thread is abandoned and a new handler thread takes its place.
    - an APScheduler background scheduler renews the leases of held attempts
      (the heartbeat) and wakes the worker when a retry it scheduled falls due.

    While handlers return quickly, the worker holds claimed attempts beyond
    its free slots, so that one claim covers many tasks: as many as its
    handlers finish in about PREFETCH_TARGET_SECONDS, and `prefetch` at
    most. Their leases are renewed like those of running attempts, and a
    stopping worker releases them at once. A prefetched task is PROCESSING,
    with `started_at` set by the claim, before its handler starts.
    """

    def __init__(
        self,
        app: Flask,
        *,
        concurrency: int | None = None,
        poll_interval: float | None = None,
        queues: list[str] | None = None,
        worker_id: str | None = None,
        prefetch: int | None = None,
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
        if prefetch is None:
            prefetch = DEFAULT_PREFETCH_PER_SLOT * self.concurrency
        self.prefetch = int(prefetch)
        self.heartbeat_interval = float(config["HEARTBEAT_INTERVAL"])
        self.queues = list(queues) if queues else None
        if self.concurrency < 1:
            raise ValueError(f"worker concurrency must be at least 1, got {self.concurrency}")
        if self.prefetch < 0:
            raise ValueError(f"worker prefetch must be 0 or more, got {self.prefetch}")
        if self.poll_interval <= 0:
            raise ValueError(f"poll interval must be positive, got {self.poll_interval}")
        if self.heartbeat_interval >= config["LEASE_SECONDS"]:
            raise ValueError(
                f"HEARTBEAT_INTERVAL ({self.heartbeat_interval:g} s) must be shorter than "
                f"LEASE_SECONDS ({config['LEASE_SECONDS']:g} s), or leases expire between beats"
            )

        # Attempts claimed and not yet finished, by task id.
        self._held: dict[int, _HeldAttempt] = {}
        self._lock = threading.Lock()
        self._ready: queue_module.SimpleQueue = queue_module.SimpleQueue()
        self._handler_threads: set[threading.Thread] = set()
        self._handler_seconds = PREFETCH_MAX_HANDLER_SECONDS
        self._wake = threading.Event()
        self._claimer: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._watchdog_wake = threading.Event()
        self._watchdog_next = float("inf")
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._stopping = threading.Event()
        self._started = False
        self._listener: NotificationListener | None = None
        self._wakeup_listener: WakeupListener | None = None
        self._wakeup_folder: str | None = None
        self._recorder = OutcomeRecorder(app, self.id, float(config["LEASE_SECONDS"]),
                                         on_done=self._forget_claims)
        self._last_recovery = 0.0
        self._poll_failures = 0
        self._poll_resume_at = 0.0
        self._poll_failure_transient = False

    # Life cycle

    def start(self) -> None:
        """Start claiming, running and heartbeats in background threads; return at once."""
        self._scheduler.add_job(
            self._heartbeat, "interval", seconds=self.heartbeat_interval, id="heartbeat"
        )
        # The first sample waits one interval, so a worker that starts and
        # stops within seconds writes nothing beyond its claims and outcomes.
        self._scheduler.add_job(
            self._sample_queues, "interval", seconds=stats.SAMPLE_ATTEMPT_INTERVAL.total_seconds(),
            id="queue_samples",
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
        self._start_handler_threads()
        self._scheduler.start()
        self._claimer = threading.Thread(target=self._claim_loop, name="taskboard-claimer",
                                         daemon=True)
        self._claimer.start()
        self._started = True
        log.info(
            "Worker %s started: concurrency %s, poll every %g s, queues %s",
            self.id, self.concurrency, self.poll_interval, ", ".join(self.queues or ["all"]),
            extra={"worker_id": self.id, "event": "worker_started"},
        )

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming, wait up to `timeout` seconds for running attempts, then release the rest.

        Claimed attempts that have not started are released at once.
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
        deadline = time.monotonic() + timeout
        self._wake.set()
        if self._claimer is not None:
            # A claim in progress ends within the database's lock or busy timeout.
            self._claimer.join(timeout + 30)
        self._release(QUEUED)
        if self.running_count:
            log.info("Worker %s stopping: waiting up to %g s for %s",
                     self.id, timeout, _attempts(self.running_count, "running"),
                     extra={"worker_id": self.id, "event": "worker_stopping"})

        while self.running_count and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._started:
            self._scheduler.shutdown(wait=True)
        self._recorder.stop()
        self._release(RUNNING)
        self._stop_threads()
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

    def _release(self, state: str, *, among: list[_HeldAttempt] | None = None,
                 reason: str = "it stopped before the attempt finished",
                 quiet: bool = False) -> None:
        """Give the held attempts in `state` back to the queue as PENDING, and forget them.

        `among` limits the release to those attempts; one whose state changed
        since the caller chose it (its handler started, say) is kept. `quiet`
        logs at INFO rather than WARNING, for releases in normal running.
        """
        with self._lock:
            candidates = self._held.values() if among is None else among
            unfinished = [attempt for attempt in candidates if attempt.state == state]
            # Marked first, so that a handler that stops now is not recorded
            # as a failure of the attempt that is being released.
            for attempt in unfinished:
                attempt.state = RELEASED
        if not unfinished:
            return
        for attempt in unfinished:
            attempt.context.abandoned = True
            attempt.context.request_stop("the worker is stopping")
        try:
            with self.app.app_context():
                released = queue.release([attempt.claim for attempt in unfinished],
                                         reason=reason)
        except Exception:
            log.exception(
                "Worker %s could not release %s; they are recovered when their leases expire",
                self.id, _attempts(len(unfinished), "unfinished"),
                extra={"worker_id": self.id, "event": "release_failed"},
            )
        else:
            log.log(logging.INFO if quiet else logging.WARNING,
                    "Worker %s released %s back to the queue: %s",
                    self.id, _attempts(released, "unfinished"), reason,
                    extra={"worker_id": self.id, "event": "released"})
        # Whatever the release did, the handlers of these attempts are
        # abandoned, so that the process can exit.
        for attempt in unfinished:
            self._forget(attempt)

    def _stop_threads(self) -> None:
        with self._lock:
            handlers = len(self._handler_threads)
        for _ in range(handlers):
            self._ready.put(None)
        self._watchdog_wake.set()

    @property
    def running_count(self) -> int:
        """Attempts this worker holds: running, or claimed and waiting for a handler thread."""
        with self._lock:
            return len(self._held)

    def wake(self) -> None:
        """Poll now instead of at the next interval."""
        self._wake.set()

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
            held = self._held.get(task_id)
        if held is not None:
            held.context.request_stop("cancelled by a person")

    # Claiming

    def _claim_loop(self) -> None:
        next_poll = time.monotonic()
        while not self._stopping.is_set():
            delay = next_poll - time.monotonic()
            if delay > 0:
                self._wake.wait(delay)
            if self._stopping.is_set():
                return
            self._wake.clear()
            next_poll = time.monotonic() + self.poll_interval
            with self.app.app_context():
                self._poll()

    def _poll(self) -> None:
        if time.monotonic() < self._poll_resume_at:
            return
        try:
            # A wake-up should start its task at once, so lease recovery
            # runs at most once per poll interval rather than on every wake.
            if time.monotonic() - self._last_recovery >= self.poll_interval:
                self._last_recovery = time.monotonic()
                queue.recover_expired_leases()
                self._submit_scheduled()
            self._claim_while_room()
        except Exception as error:
            self._back_off_polling(error)
        else:
            if self._poll_failures:
                log.info("Worker %s reached the database again after %s failed polls",
                         self.id, self._poll_failures,
                         extra={"worker_id": self.id, "event": "database_reachable"})
                self._poll_failures = 0

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
        self._start_handler_threads()
        with self.app.app_context():
            return self._claim_once(self.concurrency - self.running_count)

    def _prefetch_now(self) -> int:
        """Return how many attempts to hold beyond the slots, given how fast handlers return."""
        seconds = self._handler_seconds
        if self.prefetch == 0 or seconds >= PREFETCH_MAX_HANDLER_SECONDS:
            return 0
        # The average learns of a slow task only when it returns.
        slow_since = time.monotonic() - PREFETCH_SLOW_HANDLER_SECONDS
        with self._lock:
            if any(attempt.state == RUNNING and attempt.started < slow_since
                   for attempt in self._held.values()):
                return 0
        fitting = self.concurrency * PREFETCH_TARGET_SECONDS / max(seconds, 1e-6)
        return min(self.prefetch, int(fitting))

    def _room(self) -> int:
        """Return how many attempts to claim now: 0 until enough room for a batch is free.

        Without prefetch, every free slot is claimed for. With it, the worker
        waits until its claimed attempts no longer exceed its slots, then
        fills the slots and the prefetch in one claim.
        """
        held = self.running_count
        prefetch = self._prefetch_now()
        if prefetch:
            return self.concurrency + prefetch - held if held <= self.concurrency else 0
        return max(0, self.concurrency - held)

    def _claim_while_room(self) -> None:
        while not self._stopping.is_set():
            # A wake-up that arrives during the claim below leads to one more.
            self._wake.clear()
            room = self._room()
            if room <= 0:
                return
            started = self._claim_once(room)
            if started < room and not self._wake.is_set():
                return

    def _claim_once(self, limit: int) -> int:
        if limit <= 0:
            return 0
        claims = queue.claim(self.id, limit, queues=self.queues)
        for claim in claims:
            self._hold(claim)
        return len(claims)

    def _hold(self, claim: Claim) -> None:
        attempt = _HeldAttempt(claim=claim, context=TaskContext(claim),
                               held_since=time.monotonic())
        with self._lock:
            # An earlier attempt of the same task is still here only if its
            # lease expired and this worker claimed the task again. That
            # attempt is lost, so its handler is asked to stop.
            lost = self._held.get(claim.task_id)
            self._held[claim.task_id] = attempt
        if lost is not None:
            lost.context.request_stop("the lease was lost")
        self._ready.put(attempt)

    def _forget(self, attempt: _HeldAttempt) -> None:
        self._forget_claims([attempt.claim])

    def _forget_claims(self, claims: list[Claim]) -> None:
        """Drop finished attempts, and wake the claimer once there is room for a batch.

        An attempt whose outcome waits in the recorder is still held: its
        lease is renewed, and it takes up room, so that a recorder that
        falls behind holds back new claims.
        """
        with self._lock:
            for claim in claims:
                attempt = self._held.get(claim.task_id)
                if attempt is not None and attempt.claim is claim:
                    del self._held[claim.task_id]
        if not self._stopping.is_set() and self._room() > 0:
            self.wake()

    # Heartbeats

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
            held = [attempt for attempt in self._held.values() if attempt.state != RELEASED]
        try:
            with self.app.app_context():
                if not worker_registry.beat(self.id):
                    worker_registry.register_worker(
                        self.id, hostname=socket.gethostname(), pid=os.getpid(),
                        queues=self.queues, concurrency=self.concurrency)
                still_held = queue.extend_leases(self.id, [attempt.claim for attempt in held])
        except Exception as error:
            if not _is_transient(error):
                log.exception("Worker %s could not renew its leases", self.id,
                              extra={"worker_id": self.id, "event": "heartbeat_failed"})
            else:
                log.warning("Worker %s could not renew its leases (%s)", self.id,
                            _first_line(error),
                            extra={"worker_id": self.id, "event": "heartbeat_failed"})
            return
        for attempt in held:
            task_id = attempt.claim.task_id
            if task_id not in still_held:
                attempt.context.request_stop("the lease was lost")
            elif still_held[task_id]:
                attempt.context.request_stop("cancelled by a person")

    # Running attempts

    def _start_handler_threads(self) -> None:
        with self._lock:
            missing = self.concurrency - len(self._handler_threads)
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch_timeouts,
                                                  name="taskboard-watchdog", daemon=True)
                self._watchdog.start()
        for _ in range(missing):
            self._start_handler_thread()

    def _start_handler_thread(self) -> None:
        thread = threading.Thread(target=self._handler_loop, name="taskboard-handler",
                                  daemon=True)
        with self._lock:
            self._handler_threads.add(thread)
        thread.start()

    def _handler_loop(self) -> None:
        """Run attempts one after another, until the stop marker None or a given-up attempt."""
        # One application context for the thread's life; the session a
        # handler used is removed after each attempt.
        # NOTE: flask.g is not reset between the attempts of one thread.
        with self.app.app_context():
            try:
                while True:
                    attempt = self._ready.get()
                    if attempt is None or not self._run_attempt(attempt):
                        return
            finally:
                with self._lock:
                    self._handler_threads.discard(threading.current_thread())

    def _run_attempt(self, attempt: _HeldAttempt) -> bool:
        """Run one attempt; return False if this thread must end (the attempt was given up on)."""
        claim = attempt.claim
        with self._lock:
            if attempt.state != QUEUED:
                return True
            stopped_before_start = attempt.context.cancelled
            if stopped_before_start:
                attempt.state = FINISHED
            else:
                attempt.state = RUNNING
                attempt.started = time.monotonic()
                attempt.deadline = attempt.started + claim.timeout_seconds
                if attempt.deadline < self._watchdog_next:
                    self._watchdog_wake.set()
        if stopped_before_start:
            reason = attempt.context.stop_reason or "cancelled"
            self._finish(attempt, _Outcome(error=f"TaskCancelled: {reason}"))
            return True

        outcome = self._call_handler(attempt)
        with self._lock:
            given_up = attempt.state != RUNNING
            if not given_up:
                attempt.state = FINISHED
        if given_up:
            self._report_late_handler(claim, outcome)
            # The watchdog started a thread in this one's place.
            return False
        self._finish(attempt, outcome)
        return True

    def _call_handler(self, attempt: _HeldAttempt) -> _Outcome:
        claim = attempt.claim
        task_type = registry.get(claim.type)
        if task_type is None:
            return _Outcome(
                error=f"UnknownTaskType: no handler is registered for {claim.type!r} in "
                      f"worker {self.id}; add its module to TASK_MODULES",
                retryable=False,
            )
        started = time.monotonic()
        try:
            outcome = _Outcome(result=task_type.handler(attempt.context, **claim.params))
        except BaseException as error:  # noqa: BLE001  (the handler's failure is data)
            outcome = _Outcome(
                error=_describe(error),
                # A handler that stopped because it was asked to did not crash.
                traceback=None if isinstance(error, TaskCancelled) else traceback.format_exc(),
                retryable=not isinstance(error, PermanentError),
            )
        finally:
            self._handler_seconds += HANDLER_SECONDS_WEIGHT * (
                time.monotonic() - started - self._handler_seconds)
            if db.session.registry.has():
                db.session.remove()
        return outcome

    def _finish(self, attempt: _HeldAttempt, outcome: _Outcome) -> None:
        """Record the outcome; the attempt is forgotten once it is stored or given up on."""
        try:
            if self._record(attempt.claim, outcome):
                return
        except Exception:
            log.exception(
                "Worker %s could not record the outcome of task %s; it is recovered "
                "when its lease expires", self.id, attempt.claim.task_id,
                extra={"task_id": attempt.claim.task_id, "worker_id": self.id},
            )
        self._forget(attempt)

    def _watch_timeouts(self) -> None:
        """Give up on attempts whose handlers passed their timeout, until the worker stops."""
        with self.app.app_context():
            while True:
                self._watchdog_wake.clear()
                now = time.monotonic()
                expired, waited_too_long = [], []
                with self._lock:
                    next_deadline = now + WATCHDOG_MAX_SLEEP
                    for attempt in self._held.values():
                        if attempt.state == QUEUED:
                            give_up_at = attempt.held_since + PREFETCH_MAX_WAIT_SECONDS
                            if give_up_at <= now:
                                waited_too_long.append(attempt)
                            else:
                                next_deadline = min(next_deadline, give_up_at)
                        elif attempt.state == RUNNING:
                            if attempt.deadline <= now:
                                attempt.state = TIMED_OUT
                                expired.append(attempt)
                            else:
                                next_deadline = min(next_deadline, attempt.deadline)
                    self._watchdog_next = next_deadline
                for attempt in expired:
                    self._time_out(attempt)
                if waited_too_long and not self._stopping.is_set():
                    self._release(QUEUED, among=waited_too_long, quiet=True,
                                  reason=f"no handler thread was free within "
                                         f"{PREFETCH_MAX_WAIT_SECONDS:g} s of the claim")
                if self._stopping.is_set() and not self._held:
                    return
                self._watchdog_wake.wait(max(0.0, next_deadline - time.monotonic()))

    def _time_out(self, attempt: _HeldAttempt) -> None:
        claim = attempt.claim
        attempt.context.abandoned = True
        attempt.context.request_stop("the attempt timed out")
        log.warning(
            "Task %s attempt %s timed out after %g s; its handler thread is abandoned",
            claim.task_id, claim.attempt, claim.timeout_seconds,
            extra={"task_id": claim.task_id, "worker_id": self.id, "event": "timed_out"},
        )
        if not self._stopping.is_set():
            self._start_handler_thread()
        self._finish(attempt, _Outcome(
            error=f"TaskTimeout: timed out after {claim.timeout_seconds:g} s"))

    def _report_late_handler(self, claim: Claim, outcome: _Outcome) -> None:
        what = "returned" if outcome.ok else f"raised {outcome.error}"
        log.warning(
            "Task %s attempt %s %s after the worker gave up on it (timeout or shutdown); "
            "the outcome was discarded",
            claim.task_id, claim.attempt, what,
            extra={"task_id": claim.task_id, "worker_id": self.id, "event": "late_outcome"},
        )

    def _record(self, claim: Claim, outcome: _Outcome) -> bool:
        """Store the outcome, retrying while the database is unreachable and the lease lasts.

        The outcome goes to the recorder, which stores outcomes in batches,
        and True is returned. Before start() and once the worker is stopping,
        it is stored here, and False is returned.
        """
        if outcome.ok:
            try:
                queue.encode_result(outcome.result)
            except InvalidResult as error:
                outcome = _Outcome(error=_describe(error), retryable=False)
            else:
                if self._recorder.put(claim, outcome.result):
                    return True
        if not outcome.ok and self._recorder.put_failure(AttemptFailure(
                claim, outcome.error, outcome.traceback, outcome.retryable)):
            return True
        deadline = time.monotonic() + float(self.app.config["LEASE_SECONDS"])
        delay = 0.1
        while True:
            try:
                self._record_once(claim, outcome)
                return False
            except LeaseLost as error:
                log.warning("%s", error, extra={"task_id": claim.task_id, "worker_id": self.id,
                                                "event": "lease_lost"})
                return False
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
