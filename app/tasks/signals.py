"""In-process notifications sent after a queue operation commits.

The sender is the Flask application, so a worker subscribes only to the
application it serves. Nothing relies on these for correctness: a worker that
misses one finds the task at its next poll.
"""

from blinker import Namespace

_signals = Namespace()

# Sent with task_id, due_now and queue after a task is submitted or requeued.
task_submitted = _signals.signal("taskboard.task-submitted")

# Sent with task_id, queue and delay_seconds after a failed attempt was
# scheduled to run again, so that a worker can wake when it falls due.
retry_scheduled = _signals.signal("taskboard.retry-scheduled")

# Sent with task_id after a person asked a running task to stop.
cancel_requested = _signals.signal("taskboard.cancel-requested")
