"""Default settings.

instance/config.py overrides these, and TASKBOARD_* environment variables
override both: TASKBOARD_WORKER_CONCURRENCY=8 sets WORKER_CONCURRENCY. Values in
the environment are parsed as JSON where they parse, so "false" is a boolean
and "8" an integer. README.md lists every setting with its unit.
"""

# Database URL in SQLAlchemy form. None means instance/taskboard.db (SQLite).
DATABASE_URL = None

# Seconds a SQLite connection waits for another writer before giving up.
SQLITE_BUSY_TIMEOUT = 30

# SQLite's PRAGMA synchronous. With NORMAL in WAL mode a crash of Taskboard
# loses nothing; a power cut may undo the last commits, never corrupt the file.
# FULL also survives a power cut, at the cost of one fsync per commit.
SQLITE_SYNCHRONOUS = "NORMAL"

# Modules imported at start-up so that their @task_type functions register.
# A list of dotted names, or one comma-separated string.
TASK_MODULES = []

# Recurring tasks: {name: {"cron": "*/5 * * * *", "type": ..., "params": {...}}}.
# Cron fields are in UTC; the other keys are those of a submission (priority,
# queue, max_attempts, timeout_seconds). Each scheduled time runs once, however
# many workers run.
SCHEDULES = {}

# Retention: finished tasks (SUCCEEDED, FAILED, CANCELLED) older than this many
# days are deleted with their events, by a delete_finished_tasks task that
# runs at each RETENTION_CRON time (UTC). 0 or empty turns retention off.
RETENTION_DAYS = 0
RETENTION_CRON = "23 * * * *"

# The task type the dashboard form shows first.
DEFAULT_TASK_TYPE = "word_count"

# Run a worker inside the web process (`make run`, `flask run`, gunicorn).
EMBEDDED_WORKER = True

# Attempts that may run at once in one worker process.
WORKER_CONCURRENCY = 4

# Seconds between two polls for due tasks when nothing wakes the worker.
WORKER_POLL_INTERVAL = 1.0

# Seconds a claim stays valid without a heartbeat. A task whose lease runs
# out is recovered as a failed attempt ("worker lost").
LEASE_SECONDS = 30

# Seconds between two lease renewals of a running task. Also how often a
# worker learns that a running task was cancelled from another process.
HEARTBEAT_INTERVAL = 5.0

# Seconds a stopping worker waits for running tasks before it gives up on them.
SHUTDOWN_GRACE_SECONDS = 10

# Defaults for task types that do not set their own.
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_TIMEOUT_SECONDS = 300

# Retry delay: BASE * 2 ** (attempt - 1) seconds, capped at MAX, then
# reduced by up to half of itself at random (jitter) so that tasks that failed
# together do not retry together.
RETRY_BACKOFF_BASE = 2.0
RETRY_BACKOFF_MAX = 3600.0

# Largest result a handler may return, in bytes of JSON.
MAX_RESULT_BYTES = 1_000_000

# Largest request body, in bytes. word_count takes up to 1,000,000 characters
# of text, which is up to 4 MB of UTF-8.
MAX_CONTENT_LENGTH = 8 * 1024 * 1024

# Rows per page on the task table, the event log and the JSON lists.
PAGE_SIZE = 50

# Seconds between two htmx refreshes of the live tables.
REFRESH_INTERVAL = 2

# The IANA time zone in which the pages show exact times, e.g. "Europe/Berlin".
# The database always stores UTC.
TIMEZONE = "UTC"

# Flask's session key. None means a random key generated once and kept in
# instance/secret_key.
SECRET_KEY = None

SQLALCHEMY_ENGINE_OPTIONS = {}
WTF_CSRF_TIME_LIMIT = None

# Level of Taskboard's own log messages on the console.
LOG_LEVEL = "INFO"
