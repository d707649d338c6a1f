"""The task domain: models, lifecycle, queue operations and the task-type registry.

This package knows nothing of HTTP or threads. The web layer and the worker
change tasks only through the operations in `queue`.
"""

from .errors import (
    InvalidResult,
    InvalidTransition,
    LeaseLost,
    PermanentError,
    TaskCancelled,
    TaskError,
    TaskNotFound,
    ValidationError,
)
from .lifecycle import EventKind, EventLevel, TaskStatus, Transition
from .models import Task, TaskEvent
from .registry import Param, TaskType, registry, task_type

# Registers the delete_finished_tasks task type that retention schedules.
from . import retention  # noqa: E402, F401  (after the names retention imports)

__all__ = [
    "EventKind",
    "EventLevel",
    "InvalidResult",
    "InvalidTransition",
    "LeaseLost",
    "Param",
    "PermanentError",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskEvent",
    "TaskNotFound",
    "TaskStatus",
    "TaskType",
    "Transition",
    "ValidationError",
    "registry",
    "task_type",
]
