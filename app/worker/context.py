"""The context object passed to every handler as its first argument."""

import logging
import threading

from app.tasks import TaskCancelled, queue
from app.tasks.errors import LeaseLost
from app.tasks.queue import Claim

log = logging.getLogger(__name__)

# Guards the creation of each context's stop event against a stop request
# from another thread; held only for a few instructions.
_EVENT_LOCK = threading.Lock()


class TaskContext:
    """The running attempt, as its handler sees it.

    A handler reports progress with `progress()`, writes log lines that become
    `log` events with `log()`, and checks `cancelled` (or calls `wait()`,
    which returns early) to stop when a person cancels the task, the attempt
    times out or the worker loses its lease.
    """

    def __init__(self, claim: Claim):
        self.claim = claim
        self.stop_reason: str | None = None
        self.abandoned = False
        self._stop_requested = False
        # Created on the first wait(), because most handlers never wait and
        # an Event per attempt showed in the worker's profile.
        self._stop_event: threading.Event | None = None

    @property
    def task_id(self) -> int:
        return self.claim.task_id

    @property
    def attempt(self) -> int:
        return self.claim.attempt

    @property
    def max_attempts(self) -> int:
        return self.claim.max_attempts

    @property
    def worker_id(self) -> str:
        return self.claim.worker_id

    @property
    def cancelled(self) -> bool:
        """Whether the handler should stop: cancelled, timed out or lease lost."""
        return self._stop_requested

    def request_stop(self, reason: str) -> None:
        with _EVENT_LOCK:
            if self._stop_requested:
                return
            self.stop_reason = reason
            self._stop_requested = True
            event = self._stop_event
        if event is not None:
            event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; return True at once if the handler should stop."""
        with _EVENT_LOCK:
            if self._stop_event is None:
                self._stop_event = threading.Event()
                if self._stop_requested:
                    self._stop_event.set()
            event = self._stop_event
        return event.wait(seconds)

    def check_cancelled(self) -> None:
        """Raise TaskCancelled if the handler should stop."""
        if self._stop_requested:
            raise TaskCancelled(self.stop_reason or "cancelled")

    def progress(self, percent: float, message: str | None = None) -> None:
        """Store progress from 0 to 100, with a short message shown beside the bar.

        Raise LeaseLost once the worker no longer holds this attempt, so a
        handler that outlived its timeout stops at its next report.
        """
        try:
            if queue.report_progress(self.claim, percent, message):
                self.request_stop("cancelled by a person")
        except LeaseLost:
            self.request_stop("the attempt is no longer held by this worker")
            raise

    def log(self, message: str, level: str = "info") -> None:
        """Write a line to the task's event log, at level debug, info, warning or error."""
        queue.write_log(
            self.task_id,
            message,
            level=level,
            attempt=self.attempt,
            worker_id=self.worker_id,
        )
