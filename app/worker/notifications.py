"""Wake-ups across processes through PostgreSQL's LISTEN/NOTIFY.

A submit or retry on PostgreSQL sends NOTIFY on the channel below in its own
transaction, so the notice goes out when the task is committed. Each worker
keeps one connection that LISTENs and wakes its poll loop at once. Polling
stays the fallback: a notice sent while the connection was down is simply
missed, and the next poll finds the task.
"""

import logging
import threading

from sqlalchemy.engine import URL

from app.tasks.queue import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

# Seconds the listener waits before reconnecting: doubles per failure, up to the cap.
RECONNECT_DELAY = 0.5
RECONNECT_DELAY_MAX = 30.0


def psycopg_conninfo(url: URL) -> str:
    """Return a libpq connection string for the SQLAlchemy URL of a PostgreSQL database."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class NotificationListener:
    """A thread that calls `on_notify(payload)` for each notice on NOTIFY_CHANNEL.

    After it reconnects it calls `on_notify(None)`, because notices sent while
    it was away are lost and the worker should look for work at once.
    """

    def __init__(self, url: URL, on_notify, *, name: str = "taskboard-listen"):
        self._conninfo = psycopg_conninfo(url)
        self._on_notify = on_notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        # Imported here rather than at the top, so that a worker on SQLite
        # never loads the PostgreSQL driver (about 50 ms of its start-up).
        import psycopg

        delay = RECONNECT_DELAY
        failed = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if failed:
                        log.info("Listening for task notifications again")
                        self._on_notify(None)
                    failed, delay = False, RECONNECT_DELAY
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=1.0):
                            self._on_notify(notice.payload)
            except psycopg.Error as error:
                if self._stop.is_set():
                    return
                log.warning(
                    "Lost the connection that listens for task notifications (%s); "
                    "reconnecting in %.1f s, and polling meanwhile", error, delay,
                    extra={"event": "listen_reconnect"},
                )
                failed = True
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_DELAY_MAX)
