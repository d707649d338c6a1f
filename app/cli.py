"""`flask` commands that Taskboard adds."""

import logging
import os
import signal
import threading

import click
from flask import Flask, current_app

from app.worker import Worker

log = logging.getLogger(__name__)


@click.command("worker")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=None,
              help="Attempts run at once. Default: the WORKER_CONCURRENCY setting.")
@click.option("--queue", "-q", "queues", multiple=True,
              help="A queue to serve; repeat for several. Default: every queue.")
@click.option("--poll-interval", type=click.FloatRange(min=0.01), default=None,
              help="Seconds between polls. Default: the WORKER_POLL_INTERVAL setting.")
def worker_command(concurrency, queues, poll_interval):
    """Run a worker process without a web server.

    The first SIGTERM or SIGINT stops claiming, waits up to
    SHUTDOWN_GRACE_SECONDS for running tasks and releases the rest back to
    the queue; a second one exits at once, leaving them to lease recovery.
    """
    app = current_app._get_current_object()
    worker = Worker(app, concurrency=concurrency, poll_interval=poll_interval,
                    queues=list(queues) or None)
    stop = threading.Event()

    def on_signal(signum, frame):
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("Worker %s got a second %s: exiting at once; its running tasks are "
                        "recovered when their leases expire", worker.id, name,
                        extra={"worker_id": worker.id, "event": "worker_killed"})
            os._exit(1)
        log.info("Worker %s got %s: stopping gracefully (send it again to exit at once)",
                 worker.id, name, extra={"worker_id": worker.id, "event": "worker_stopping"})
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    worker.start()
    while not stop.wait(1):
        pass
    worker.stop()


def init_app(app: Flask) -> None:
    app.cli.add_command(worker_command)
