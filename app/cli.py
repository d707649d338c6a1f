"""`flask` commands that Taskboard adds."""

import logging
import os
import signal
import threading

import click
from flask import Flask, current_app

from app.tasks import ValidationError, queue_control, worker_registry
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


@click.group("queue")
def queue_group():
    """Show, pause and resume queues, and set their concurrency limits."""


@queue_group.command("list")
def queue_list():
    """Print each queue with its state and task counts."""
    overviews = queue_control.list_queues()
    if not overviews:
        click.echo("No queues yet: a queue appears with its first task or setting.")
    for overview in overviews:
        state = "paused" if overview.paused else "running"
        limit = overview.concurrency_limit or "none"
        counts = ", ".join(
            f"{status} {count:,}{'' if overview.counts_exact.get(status, True) else '+'}"
            for status, count in overview.counts.items() if count)
        click.echo(f"{overview.name}: {state}, limit {limit}; {counts or 'no tasks'}")


@queue_group.command("pause")
@click.argument("name")
def queue_pause(name):
    """Stop every worker from claiming tasks of queue NAME."""
    _run_queue_change(queue_control.pause_queue, name)
    click.echo(f"Queue {name} paused; running tasks finish, waiting ones stay queued.")


@queue_group.command("resume")
@click.argument("name")
def queue_resume(name):
    """Let workers claim tasks of queue NAME again."""
    _run_queue_change(queue_control.resume_queue, name)
    click.echo(f"Queue {name} resumed.")


@queue_group.command("limit")
@click.argument("name")
@click.argument("limit")
def queue_limit(name, limit):
    """Run at most LIMIT tasks of queue NAME at once across all workers ("none" lifts it)."""
    if limit.lower() == "none":
        value = None
    else:
        try:
            value = int(limit)
        except ValueError:
            raise click.BadParameter("must be a whole number of at least 1, or none",
                                     param_hint="LIMIT") from None
    _run_queue_change(queue_control.set_concurrency_limit, name, value)
    click.echo(f"Queue {name} concurrency limit: {limit}.")


def _run_queue_change(change, *args) -> None:
    try:
        change(*args)
    except ValidationError as error:
        message = "; ".join(f"{field} {text}" for field, text in error.fields.items())
        raise click.UsageError(message) from None


@click.command("workers")
def workers_command():
    """Print the registered workers; a worker with a stale heartbeat is marked gone."""
    statuses = worker_registry.list_workers()
    if not statuses:
        click.echo("No workers are registered.")
    for status in statuses:
        worker = status.worker
        state = "GONE" if status.gone else "live"
        queues = ", ".join(worker.queues or ["all queues"])
        running = ", ".join(map(str, status.running_task_ids)) or "nothing"
        click.echo(f"{worker.id} [{state}] pid {worker.pid} on {worker.hostname}, {queues}, "
                   f"heartbeat {status.heartbeat_age_seconds:.0f} s ago, running {running}")


def init_app(app: Flask) -> None:
    app.cli.add_command(worker_command)
    app.cli.add_command(queue_group)
    app.cli.add_command(workers_command)
