"""Pages that show the system as a whole: queues, workers and metrics charts.

Each page renders in full without JavaScript, and its live part is also a
/partials/ route that htmx fetches on every refresh. Pausing and resuming a
queue goes through app/tasks/queue_control.py, like the CLI and the API.
"""

import logging
from datetime import timedelta

from flask import Blueprint, current_app, flash, make_response, redirect, render_template, request, url_for

from app.tasks import ValidationError, queue_control, stats

from . import charts

log = logging.getLogger(__name__)

bp = Blueprint("insights", __name__)

QUEUES_PAGE_SOURCE = "the queues page"
MAX_QUEUE_NAME_LENGTH = 100
# Running tasks listed per worker; the rest are counted.
MAX_TASKS_SHOWN = 20


def _is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


# Queues


def _queues_context(**extra) -> dict:
    return {
        "queues": stats.queue_stats(),
        "finished_window": stats.WINDOW,
        "waiting_statuses": stats.WAITING_STATUSES,
        **extra,
    }


@bp.get("/queues")
def queues():
    """Show every queue with its task counts, oldest due task, settings and pause buttons."""
    return render_template("queues.html", **_queues_context())


@bp.get("/partials/queues")
def queues_partial():
    """Return the queues table."""
    return render_template("_queues_table.html", **_queues_context())


@bp.post("/queues/pause")
def pause_queue():
    """Pause the queue named in the form's `queue` field."""
    return _change_queue("pause")


@bp.post("/queues/resume")
def resume_queue():
    """Resume the queue named in the form's `queue` field."""
    return _change_queue("resume")


def _change_queue(action: str):
    name = request.form.get("queue", "").strip()
    operation = queue_control.pause_queue if action == "pause" else queue_control.resume_queue

    try:
        operation(name, source=QUEUES_PAGE_SOURCE)
    except ValidationError as error:
        short_name = name if len(name) <= MAX_QUEUE_NAME_LENGTH else name[:MAX_QUEUE_NAME_LENGTH] + "…"
        log.info("Queues page %s of queue %r rejected: %s", action, short_name, error,
                 extra={"queue": short_name, "event": f"{action}_rejected"})
        return _queue_response(short_name, error=_rejection_message(action, short_name, error))

    if action == "pause":
        notice = (f"Queue {name} paused. Workers start none of its tasks until it is resumed. "
                  "Tasks already running finish.")
    else:
        notice = f"Queue {name} resumed. Workers start its due tasks again."
    return _queue_response(name, notice=notice)


def _rejection_message(action: str, name: str, error: ValidationError) -> str:
    if not name:
        return f"Cannot {action} a queue: the queue name is missing. Enter the name of a queue."
    reason = error.fields.get("queue", "is invalid")
    return f"Cannot {action} queue {name!r}: the queue name {reason}."


def _queue_response(name: str, *, notice: str | None = None, error: str | None = None):
    status = 422 if error else 200
    if _is_htmx():
        html = render_template("_queues_table.html", **_queues_context(notice=notice, action_error=error))
        return make_response(html, status)
    if error:
        html = render_template("queues.html", **_queues_context(
            form_error=error, form_queue=name))
        return make_response(html, status)
    flash(notice, "success")
    return redirect(url_for(".queues"), code=303)


# Workers


def _workers_context() -> dict:
    stale_after = timedelta(seconds=float(current_app.config["LEASE_SECONDS"]))
    return {
        "report": stats.workers_report(stale_after),
        "stale_after": stale_after,
        "max_tasks_shown": MAX_TASKS_SHOWN,
    }


@bp.get("/workers")
def workers():
    """Show live and gone workers, each with the tasks it runs."""
    return render_template("workers.html", **_workers_context())


@bp.get("/partials/workers")
def workers_partial():
    """Return the workers tables."""
    return render_template("_workers_table.html", **_workers_context())


# Metrics


def _charts_context() -> dict:
    data = stats.metrics()
    run_chart, wait_chart = charts.timing_charts(data.timings)
    timing_columns, timing_rows = charts.timing_table(data.timings)
    return {
        "metrics": data,
        "finished_chart": charts.finished_chart(data.finished),
        "depth_chart": charts.depth_chart(data.depth, start=data.window_start,
                                          end=stats.floor_minute(data.now)),
        "run_chart": run_chart,
        "wait_chart": wait_chart,
        "timing_columns": timing_columns,
        "timing_rows": timing_rows,
    }


@bp.get("/metrics")
def metrics():
    """Show charts of finished tasks, queue depth, and run and wait time percentiles."""
    return render_template("metrics.html", **_charts_context())


@bp.get("/partials/charts")
def charts_partial():
    """Return the charts."""
    return render_template("_charts.html", **_charts_context())
