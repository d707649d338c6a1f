"""Errors raised by the task domain."""


class TaskError(Exception):
    """Base class of the domain's errors."""


class ValidationError(TaskError):
    """Input for a task is invalid; `fields` maps each field name to its message."""

    def __init__(self, fields: dict[str, str]):
        self.fields = dict(fields)
        details = "; ".join(f"{name}: {message}" for name, message in self.fields.items())
        super().__init__(f"invalid task input ({details})")


class TaskNotFound(TaskError):
    def __init__(self, task_id):
        self.task_id = task_id
        super().__init__(f"task {task_id} not found")


class InvalidTransition(TaskError):
    """A queue operation was asked to move a task out of a status that forbids it."""

    def __init__(self, task_id, status, action: str, allowed):
        self.task_id = task_id
        self.status = status
        self.action = action
        self.allowed = sorted(str(s) for s in allowed)
        super().__init__(
            f"cannot {action} task {task_id}: its status is {status}, "
            f"expected one of {', '.join(self.allowed)}"
        )


class LeaseLost(TaskError):
    """A worker tried to complete an attempt it no longer holds.

    Its lease expired and the task was recovered, cancelled or claimed again,
    so the late outcome is rejected.
    """

    def __init__(self, task_id, worker_id: str, attempt: int):
        self.task_id = task_id
        self.worker_id = worker_id
        self.attempt = attempt
        super().__init__(
            f"task {task_id} attempt {attempt} is no longer held by worker {worker_id}; "
            "its outcome was rejected"
        )


class InvalidResult(TaskError):
    """A handler returned something that cannot be stored as the task's result."""


class TaskCancelled(Exception):
    """Raised inside a handler to stop because a person cancelled the task."""


class PermanentError(Exception):
    """Raised by a handler for a failure that retrying cannot fix; no retry follows."""
