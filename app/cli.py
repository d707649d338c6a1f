"""`flask` commands that Taskboard adds."""

import signal
import threading

import click
from flask import Flask, current_app

from app.worker import Worker


@click.command("worker")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=None,
              help="Attempts run at once. Default: the WORKER_CONCURRENCY setting.")
@click.option("--queue", "-q", "queues", multiple=True,
              help="A queue to serve; repeat for several. Default: every queue.")
@click.option("--poll-interval", type=click.FloatRange(min=0.01), default=None,
              help="Seconds between polls. Default: the WORKER_POLL_INTERVAL setting.")
def worker_command(concurrency, queues, poll_interval):
    """Run a worker process without a web server, until SIGINT or SIGTERM."""
    app = current_app._get_current_object()
    worker = Worker(app, concurrency=concurrency, poll_interval=poll_interval,
                    queues=list(queues) or None)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    worker.start()
    while not stop.wait(1):
        pass
    worker.stop()


def init_app(app: Flask) -> None:
    app.cli.add_command(worker_command)
