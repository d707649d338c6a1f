"""Decide whether a process runs the worker inside the web application."""

import atexit
import logging
import signal
import threading

import click
from flask import Flask
from flask.helpers import get_debug_flag
from werkzeug.serving import is_running_from_reloader

from .worker import Worker

log = logging.getLogger(__name__)


def should_run_embedded_worker(app: Flask) -> bool:
    """Return whether this process serves requests and should run a worker too.

    Yes for `flask run` (in the reloader's child process only, so the debug
    reloader does not start a second one) and for a WSGI server such as
    gunicorn. No for tests, for every other `flask` command (`db upgrade`,
    `shell`, `worker`) and when EMBEDDED_WORKER is false. A second worker
    started by mistake would still be safe, because claims are atomic, but it
    would double the polling.
    """
    if not app.config["EMBEDDED_WORKER"] or app.config.get("TESTING"):
        return False
    context = click.get_current_context(silent=True)
    if context is None:
        return True
    if context.info_name != "run":
        return False
    reload = context.params.get("reload")
    if reload is None:
        reload = get_debug_flag()
    return not reload or is_running_from_reloader()


def start_embedded_worker_if_serving(app: Flask) -> Worker | None:
    if not should_run_embedded_worker(app):
        return None
    worker = Worker(app)
    worker.start()
    app.extensions["taskboard.worker"] = worker
    _stop_before_thread_pools(worker)
    _stop_flask_run_on_sigterm()
    return worker


def _stop_flask_run_on_sigterm() -> None:
    """Make SIGTERM stop `flask run` as Ctrl+C does, so the worker stops gracefully.

    The development server leaves SIGTERM to Python's default action, which
    ends the process without running exit hooks: running attempts were
    neither finished nor released, and each lost an attempt when its lease
    ran out. Servers such as gunicorn handle SIGTERM themselves and are left
    alone, and so is a SIGTERM handler that the application installed.
    """
    context = click.get_current_context(silent=True)
    if context is None or context.info_name != "run":
        return
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def _stop_before_thread_pools(worker: Worker) -> None:
    """Make the interpreter stop `worker` before it shuts down thread pools at exit.

    concurrent.futures joins every pool thread from a hook that runs before
    atexit handlers; a worker stopped any later could no longer run
    heartbeats during its grace period, and the process would wait for each
    handler to return. threading._register_atexit runs hooks in reverse
    order of registration, so this one runs first.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        # NOTE: CPython 3.9 added threading._register_atexit; elsewhere the
        # worker stops only after running handlers return.
        atexit.register(worker.stop)
        return
    register(worker.stop)
