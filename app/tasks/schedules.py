"""Recurring tasks: cron schedules that submit a task at each scheduled time.

Schedules are declared in the SCHEDULES setting or in code with `schedule()`.
Every worker process checks them at each poll. Each scheduled time becomes one
task whatever the number of processes, because the task is submitted with the
idempotency key "schedule:<name>:<time>", and the unique index on that key
lets only the first submission in.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

from .errors import ValidationError
from .submission import validate_submission

log = logging.getLogger(__name__)

# A scheduled time is still submitted when it is found this late, so that a
# worker busy or restarting for a moment does not skip it. Older times are
# skipped rather than submitted in a burst after a long outage.
CATCH_UP = timedelta(minutes=5)


@dataclass(frozen=True)
class Schedule:
    """A task to submit at every time that `cron` (five crontab fields, in UTC) names."""

    name: str
    cron: str
    task: dict = field(default_factory=dict)
    trigger: CronTrigger = field(compare=False, repr=False, default=None)

    def times_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Return the scheduled times in (start, end]."""
        times = []
        moment = self.trigger.get_next_fire_time(None, start + timedelta(microseconds=1))
        while moment is not None and moment <= end:
            times.append(moment)
            moment = self.trigger.get_next_fire_time(moment, moment + timedelta(microseconds=1))
        return times

    def idempotency_key(self, moment: datetime) -> str:
        return f"schedule:{self.name}:{moment.astimezone(UTC).isoformat()}"


def make_schedule(name: str, definition: Mapping) -> Schedule:
    """Build a Schedule from {"cron": "*/5 * * * *", "type": ..., "params": {...}, ...}.

    The other keys are those of a task submission (priority, queue,
    max_attempts, timeout_seconds). Raise ValidationError naming the field
    that is wrong, so that a bad setting stops start-up with a clear message.
    """
    if not isinstance(definition, Mapping):
        raise ValidationError({f"SCHEDULES.{name}": "must be a mapping with cron and type"})
    cron = definition.get("cron")
    if not isinstance(cron, str) or not cron.strip():
        raise ValidationError({f"SCHEDULES.{name}.cron": "is required, e.g. '*/5 * * * *'"})
    try:
        trigger = CronTrigger.from_crontab(cron, timezone=UTC)
    except ValueError as error:
        raise ValidationError({f"SCHEDULES.{name}.cron": f"is not a crontab line: {error}"}) from None

    task = {key: value for key, value in definition.items() if key != "cron"}
    if "idempotency_key" in task or "delay_seconds" in task:
        raise ValidationError(
            {f"SCHEDULES.{name}": "cannot set idempotency_key or delay_seconds; the schedule does"}
        )
    try:
        validate_submission(task)
    except ValidationError as error:
        raise ValidationError(
            {f"SCHEDULES.{name}.{key}": message for key, message in error.fields.items()}
        ) from None
    return Schedule(name=name, cron=cron, task=task, trigger=trigger)


class ScheduleBook:
    """The schedules of one process, and the scheduled times it already submitted."""

    def __init__(self):
        self._schedules: dict[str, Schedule] = {}
        self._submitted: dict[str, datetime] = {}

    def add(self, schedule: Schedule) -> Schedule:
        self._schedules[schedule.name] = schedule
        return schedule

    def remove(self, name: str) -> None:
        """Drop the schedule `name` and forget which of its times were submitted."""
        self._schedules.pop(name, None)
        prefix = f"schedule:{name}:"
        for key in [key for key in self._submitted if key.startswith(prefix)]:
            del self._submitted[key]

    def __iter__(self):
        return iter(sorted(self._schedules.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._schedules)

    def submit_due(self, now: datetime | None = None) -> list[int]:
        """Submit a task for each scheduled time in the last CATCH_UP; return the new task ids.

        A time already submitted by this process is skipped without a query;
        one submitted by another process is skipped by its idempotency key.
        """
        from . import queue  # queue imports the modules this one is imported by

        now = now or datetime.now(UTC)
        created = []
        for schedule in self:
            for moment in schedule.times_between(now - CATCH_UP, now):
                key = schedule.idempotency_key(moment)
                if key in self._submitted:
                    continue
                task, is_new = queue.submit({**schedule.task, "idempotency_key": key},
                                            source=f"schedule {schedule.name}")
                self._submitted[key] = moment
                if is_new:
                    created.append(task.id)
                    log.info("Schedule %s submitted task %s for %s", schedule.name, task.id,
                             moment.isoformat(), extra={"task_id": task.id, "event": "scheduled"})
        self._forget_before(now - CATCH_UP)
        return created

    def _forget_before(self, moment: datetime) -> None:
        for key in [key for key, when in self._submitted.items() if when <= moment]:
            del self._submitted[key]


schedules = ScheduleBook()


def schedule(name: str, cron: str, task: Mapping) -> Schedule:
    """Declare in code that `task` (a submission: type, params, ...) runs at every `cron` time."""
    return schedules.add(make_schedule(name, {"cron": cron, **task}))


def load_schedules(definitions: Mapping) -> None:
    """Add the schedules of the SCHEDULES setting: {name: {"cron": ..., "type": ..., ...}}."""
    if not isinstance(definitions, Mapping):
        raise ValidationError({"SCHEDULES": "must map schedule names to definitions"})
    for name, definition in definitions.items():
        schedules.add(make_schedule(str(name), definition))
