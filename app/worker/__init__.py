"""The worker: claim loop, execution, leases and heartbeats, wake-ups."""

from .context import TaskContext
from .worker import Worker, new_worker_id

__all__ = ["TaskContext", "Worker", "new_worker_id"]
