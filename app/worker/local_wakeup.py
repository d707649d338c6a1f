"""Wake-ups across processes on one machine, for SQLite, which has no LISTEN/NOTIFY.

Each worker on a SQLite database listens on a UDP socket bound to 127.0.0.1
and announces its port as an empty file named "<port>.<pid>" in a folder
beside the database file ("taskboard.db.wake/"). A process that submits or
retries a task sends one datagram, the task's queue name, to every port
listed there. A worker that died leaves its file behind, and a datagram to
its port is lost; the next worker to start removes the files of processes
that no longer exist. Polling stays the fallback, so a lost datagram only
delays a task until the next poll.
"""

import logging
import os
import socket
import threading

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def wakeup_folder(database_path: str | None) -> str | None:
    """Return the folder of port files for a SQLite database file, or None for memory."""
    if not database_path or database_path == ":memory:":
        return None
    return f"{os.path.abspath(database_path)}.wake"


def _parse(file_name: str) -> tuple[int | None, int | None]:
    port, _, pid = file_name.partition(".")
    if not (port.isdigit() and pid.isdigit()):
        return None, None
    return int(port), int(pid)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def connect_sender(app, folder: str | None) -> None:
    """Send a wake-up for every task that `app` submits or retries, once it is committed."""
    if folder is None:
        return
    from app.tasks import signals

    def on_task_submitted(sender, task_id, due_now, queue=None, **extra):
        if due_now and queue:
            send_wakeups(folder, queue)

    # Kept on the app, because blinker holds receivers weakly.
    app.extensions["taskboard.wakeup_sender"] = on_task_submitted
    signals.task_submitted.connect(on_task_submitted, sender=app)


def send_wakeups(folder: str | None, queue_name: str) -> None:
    """Send `queue_name` to every worker announced in `folder`.

    Errors are logged at debug level and not raised, because a lost wake-up
    only delays a task until the next poll.
    """
    if folder is None:
        return
    try:
        ports = [port for port, _ in map(_parse, os.listdir(folder)) if port]
    except OSError:
        return
    if not ports:
        return
    payload = queue_name.encode()
    try:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        log.debug("Could not open a socket to send wake-ups", exc_info=True)
        return
    with sender:
        for port in ports:
            try:
                sender.sendto(payload, (HOST, port))
            except OSError:
                log.debug("Could not send a wake-up to port %s", port, exc_info=True)


class WakeupListener:
    """A thread that calls `on_wakeup(queue_name)` for each datagram on its port."""

    def __init__(self, folder: str, on_wakeup, *, name: str = "taskboard-wakeup"):
        self.folder = folder
        self._on_wakeup = on_wakeup
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((HOST, 0))
        self._socket.settimeout(1.0)
        self.port = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def _port_file(self) -> str:
        return os.path.join(self.folder, f"{self.port}.{os.getpid()}")

    def start(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        self._remove_files_of_dead_processes()
        with open(self._port_file, "w", encoding="ascii"):
            pass
        self._thread.start()

    def _remove_files_of_dead_processes(self) -> None:
        for name in os.listdir(self.folder):
            port, pid = _parse(name)
            if pid is not None and not _process_exists(pid):
                try:
                    os.remove(os.path.join(self.folder, name))
                except OSError:
                    pass

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._socket.close()
        try:
            os.remove(self._port_file)
        except OSError:
            pass

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                payload, _ = self._socket.recvfrom(256)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.warning("The wake-up socket on port %s failed; polling only", self.port,
                            exc_info=True)
                return
            self._on_wakeup(payload.decode(errors="replace") or None)
