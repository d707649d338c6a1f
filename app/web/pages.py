"""HTML pages: the dashboard, task pages, the event log and the error page.

Every page renders in full without JavaScript. htmx only keeps parts of it
live. It fetches fragments from the /partials/ routes, and it posts to the
same routes as the plain forms, which return a fragment instead of a redirect
when the request carries the HX-Request header.
"""

import json
import logging
from datetime import UTC, datetime

from flask import (
    Blueprint,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf.csrf import CSRFError
from markupsafe import escape
from werkzeug.exceptions import BadRequest, HTTPException, NotFound

from app.tasks import (
    InvalidTransition,
    TaskError,
    TaskNotFound,
    ValidationError,
    actions,
    queries,
    queue,
    worker_registry,
)
from app.tasks import registry as task_registry
from app.tasks.queue import RetryLimitReached
from app.tasks.session import begin_snapshot_read

from . import filters
from .attempts import load_attempts
from .forms import build_submission_form, field_attributes, type_defaults

log = logging.getLogger(__name__)

bp = Blueprint("pages", __name__)
filters.register(bp)
# Globals, unlike context variables, also reach macros imported without context.
bp.add_app_template_global(field_attributes)
bp.add_app_template_global(type_defaults)

LATEST_EVENTS_LIMIT = 15
# Ids are BIGINT on PostgreSQL and 64-bit integers on SQLite. A larger number
# in a URL would make the database raise an error instead of matching nothing.
MAX_ID = 2**63 - 1
MAX_TYPE_FILTER_LENGTH = 100
SUBMIT_SOURCE = "the dashboard form"
TASK_PAGE_SOURCE = "the task page"

# htmx settings, sent in <meta name="htmx-config">. The Content-Security-Policy
# blocks inline styles and eval, so htmx must neither inject its indicator
# <style> nor evaluate expressions. Form errors (422) and refused actions
# (409) carry a fragment to show, so htmx swaps them like a success.
HTMX_CONFIG = {
    "includeIndicatorStyles": False,
    "allowEval": False,
    "allowScriptTags": False,
    "historyRestoreAsHxRequest": False,
    # Settling copies these attributes from the old element to the new one.
    # The CSP forbids style attributes, so copying "style" (htmx's default
    # includes it) would report a violation whenever something set one.
    "attributesToSettle": ["class", "width", "height"],
    "responseHandling": [
        {"code": "204", "swap": False},
        {"code": "[23]..", "swap": True},
        {"code": "409", "swap": True},
        {"code": "422", "swap": True},
        {"code": "[45]..", "swap": False, "error": True},
    ],
}

# Advice shown under an error's description, by status code.
ERROR_HINTS = {
    400: "Check the address or the form, then try again.",
    404: "The dashboard lists every task, and the event log lists every event.",
    405: "This address does not take that method. Use the links and buttons on the pages.",
    500: "The error was logged on the server. Try again, and if it repeats, read the log.",
}
# Advice for a form rejected by CSRFProtect, also a 400.
CSRF_HINT = ("Reload the page to get a fresh form, then submit it again. "
             "The token in a form expires with your session.")


# The event that taskboard.js sends to each live region once per refresh
# interval, while the tab is visible, live updates are not paused, and the
# region's previous request has finished. The top of taskboard.js states
# what else a live region needs.
LIVE_REFRESH_EVENT = "live-refresh"
# The shortest refresh interval the pages use, even when REFRESH_INTERVAL is smaller.
MIN_REFRESH_MILLISECONDS = 100


@bp.app_context_processor
def inject_page_settings() -> dict:
    return {
        "htmx_config": HTMX_CONFIG,
        "poll_trigger": _poll_trigger(),
        "refresh_milliseconds": _refresh_milliseconds(),
        # taskboard.js measures the offset of the browser's clock against this.
        "server_time": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


def _refresh_milliseconds() -> int | None:
    """Return REFRESH_INTERVAL in milliseconds, or None when live refresh is off."""
    seconds = float(current_app.config.get("REFRESH_INTERVAL") or 0)
    if seconds <= 0:
        return None
    return max(MIN_REFRESH_MILLISECONDS, round(seconds * 1000))


def _poll_trigger() -> str | None:
    """Return the hx-trigger of a live region, or None when live refresh is off."""
    return LIVE_REFRESH_EVENT if _refresh_milliseconds() else None


def _is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


# Query-string parsing. A bad value is a 400 page that names the parameter.


def _id_arg(name: str) -> int | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
        raise BadRequest(f"Invalid filter: {name} must be a positive whole number, got {raw!r}.")
    return int(raw)


def _choice_arg(name: str, allowed: list[str]) -> str | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    for value in allowed:
        if raw.lower() == value.lower():
            return value
    raise BadRequest(
        f"Invalid filter: {name} must be one of {', '.join(allowed)}, got {raw!r}."
    )


def _task_filters() -> dict:
    """Return the dashboard's table filters from the query string: status, type, before."""
    task_type = request.args.get("type", "").strip() or None
    if task_type is not None and len(task_type) > MAX_TYPE_FILTER_LENGTH:
        raise BadRequest(
            f"Invalid filter: type must be at most {MAX_TYPE_FILTER_LENGTH} characters long."
        )
    return {
        "status": _choice_arg("status", queries.STATUS_VALUES),
        "type": task_type,
        "before": _id_arg("before"),
    }


def _event_filters() -> dict:
    """Return the event log's filters from the query string: task, kind, level, before.

    The task may also come as task_id, the name the JSON API uses.
    """
    task = _id_arg("task")
    return {
        "task": task if task is not None else _id_arg("task_id"),
        "kind": _choice_arg("kind", queries.KIND_VALUES),
        "level": _choice_arg("level", queries.LEVEL_VALUES),
        "before": _id_arg("before"),
    }


def _query(values: dict) -> dict:
    """Drop empty values, so that links and polling URLs carry only the filters in use."""
    return {name: value for name, value in values.items() if value not in (None, "")}


# Dashboard


def _tasks_context() -> dict:
    task_filters = _task_filters()
    page = queries.list_tasks(status=task_filters["status"], type=task_filters["type"],
                              before=task_filters["before"],
                              limit=current_app.config["PAGE_SIZE"])
    type_names = task_registry.names()
    if task_filters["type"] and task_filters["type"] not in type_names:
        type_names.append(task_filters["type"])
    return {
        "tasks": page.items,
        "next_cursor": page.next_cursor,
        "task_filters": task_filters,
        "filter_query": _query({"status": task_filters["status"], "type": task_filters["type"]}),
        "status_values": queries.STATUS_VALUES,
        "type_names": type_names,
        "counts": queries.status_counts(),
        "live_workers": worker_registry.live_worker_count(),
    }


def _render_dashboard(form, *, status: int = 200, notice: str | None = None):
    html = render_template(
        "dashboard.html",
        form=form,
        notice=notice,
        latest_events=queries.list_events(limit=LATEST_EVENTS_LIMIT).items,
        **_tasks_context(),
    )
    return html, status


@bp.get("/")
def dashboard():
    """Show the status counts, the submission form, the task table and the latest events."""
    return _render_dashboard(build_submission_form())


@bp.post("/")
def submit_task():
    """Submit a task from the dashboard form, or show the fields of a newly chosen type."""
    posted_type = request.form.get("type", "")
    shown_type = request.form.get("shown_type", "")

    if posted_type in task_registry and shown_type and shown_type != posted_type:
        form = build_submission_form(posted_type, keep_params=False)
        notice = f"Fill in the parameters of {posted_type}, then submit again."
        return _form_response(form, status=200, notice=notice)

    form = build_submission_form(posted_type if posted_type in task_registry else shown_type)
    try:
        task, _ = queue.submit(form.submission_data(), source=SUBMIT_SOURCE)
    except ValidationError as error:
        log.info("Dashboard form submission rejected: %s", error, extra={"event": "submit_rejected"})
        form.attach_errors(error.fields)
        if posted_type not in task_registry:
            form.type.data = form.shown_type.data
        return _form_response(form, status=422)

    if _is_htmx():
        fresh = build_submission_form(task.type, fresh=True)
        response = _form_response(fresh, status=200, submitted=task)
        response.headers["HX-Trigger"] = json.dumps({"taskSubmitted": {"id": task.id}})
        return response
    flash(f"Task #{task.id} submitted ({task.type}).", "success")
    return redirect(url_for(".dashboard"), code=303)


def _form_response(form, *, status: int, notice: str | None = None, submitted=None):
    if _is_htmx():
        html = render_template("_submit_form.html", form=form, notice=notice, submitted=submitted)
        return make_response(html, status)
    return make_response(*_render_dashboard(form, status=status, notice=notice))


@bp.get("/partials/params")
def params_partial():
    """Return the parameter fields of one task type, for the form's type select."""
    type_name = request.args.get("type", "")
    if type_name not in task_registry:
        raise BadRequest(
            f"Unknown task type {type_name!r}. Pick one of the registered types: "
            f"{', '.join(task_registry.names())}."
        )
    form = build_submission_form(type_name)
    return render_template("_param_fields.html", form=form)


@bp.get("/partials/tasks")
def tasks_partial():
    """Return the task table and, out of band, the status counts."""
    return render_template("_tasks_partial.html", **_tasks_context())


@bp.get("/partials/latest-events")
def latest_events_partial():
    """Return the dashboard's panel of latest events."""
    events = queries.list_events(limit=LATEST_EVENTS_LIMIT).items
    return render_template("_latest_events.html", latest_events=events)


# Task pages


def _task_or_404(task_id: int):
    task = queries.get_task(task_id) if task_id <= MAX_ID else None
    if task is None:
        raise NotFound(f"Task {task_id} not found. Check the id, or find the task on the dashboard.")
    return task


def _task_context(task) -> dict:
    """Return what the task page shows: the task, its attempts and its history."""
    task_attempts, history = load_attempts(task)
    waiting = task.status in actions.ACTION_STATUSES[actions.RUN_NOW]
    return {"task": task, "attempts": task_attempts, "history": history,
            "can_run_now": waiting and task.run_at > datetime.now(UTC),
            "can_delete": task.status in actions.DELETABLE_STATUSES}


@bp.get("/tasks/<int:task_id>")
def task_detail(task_id: int):
    """Show one task: status, progress, parameters, result, and each attempt with its log."""
    begin_snapshot_read()
    task = _task_or_404(task_id)
    return render_template("task.html", **_task_context(task))


@bp.get("/partials/tasks/<int:task_id>")
def task_live_partial(task_id: int):
    """Return the part of a task page that changes while the task runs."""
    begin_snapshot_read()
    task = _task_or_404(task_id)
    return render_template("_task_live.html", **_task_context(task))


@bp.post("/tasks/<int:task_id>/cancel")
def cancel_task(task_id: int):
    """Cancel a waiting task, or ask a running one to stop."""
    return _act_on_task(task_id, "cancel")


@bp.post("/tasks/<int:task_id>/retry")
def retry_task(task_id: int):
    """Requeue a failed or cancelled task."""
    return _act_on_task(task_id, "retry")


@bp.post("/tasks/<int:task_id>/run-now")
def run_task_now(task_id: int):
    """Make a task that waits for its run_at or its backoff due now."""
    return _act_on_task(task_id, "run now")


@bp.post("/tasks/<int:task_id>/delete")
def delete_task(task_id: int):
    """Delete a task and its events, after a confirmation page."""
    if request.form.get("confirmed") != "1":
        return render_template("task_delete_confirm.html", task=_task_or_404(task_id))
    try:
        actions.delete_task(task_id, source=TASK_PAGE_SOURCE)
    except TaskNotFound:
        raise NotFound(f"Task {task_id} not found; it may have been deleted already.") from None
    except InvalidTransition as error:
        flash(f"Cannot delete task {task_id}: its status is {error.status}. "
              "Cancel it first, then delete it once it shows CANCELLED.", "error")
        return redirect(url_for(".task_detail", task_id=task_id), code=303)
    flash(f"Task {task_id} deleted, with its events.", "success")
    return redirect(url_for("task_list.tasks"), code=303)


# Each task page action, with the queue operation that does it.
TASK_PAGE_OPERATIONS = {
    "cancel": queue.cancel,
    "retry": queue.retry,
    "run now": actions.run_now,
}


def _act_on_task(task_id: int, action: str):
    operation = TASK_PAGE_OPERATIONS[action]
    try:
        task = operation(task_id, source=TASK_PAGE_SOURCE)
    except TaskNotFound:
        raise NotFound(f"Task {task_id} not found, so there is nothing to {action}.") from None
    except (InvalidTransition, RetryLimitReached, actions.AlreadyDue) as error:
        log.info("Task page %s of task %s rejected: %s", action, task_id, error,
                 extra={"task_id": task_id, "event": f"{action}_rejected"})
        return _action_response(task_id, error=_rejection_message(action, error))
    return _action_response(task.id, notice=_action_message(action, task))


def _rejection_message(action: str, error: TaskError) -> str:
    if isinstance(error, InvalidTransition):
        allowed = _or_list(error.allowed)
        if action == "run now":
            return (f"Cannot run task {error.task_id} now: its status is {error.status}, "
                    f"and only {allowed} tasks wait to run.")
        done = "cancelled" if action == "cancel" else "retried"
        return (f"Cannot {action} task {error.task_id}: its status is {error.status}, "
                f"and only {allowed} tasks can be {done}.")
    text = str(error)
    return f"{text[:1].upper()}{text[1:]}."


def _or_list(items: list[str]) -> str:
    """Join ["A", "B", "C"] as "A, B or C"."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} or {items[-1]}"


def _action_message(action: str, task) -> str:
    if action == "run now":
        return f"Task {task.id} is due now; the next free worker runs it."
    if action == "retry":
        return f"Task {task.id} requeued; attempt {task.attempts + 1} is due now."
    if task.status == "PROCESSING":
        return (f"Asked task {task.id} to stop; it shows CANCELLED once its handler stops.")
    return f"Task {task.id} cancelled."


def _action_response(task_id: int, *, notice: str | None = None, error: str | None = None):
    status = 409 if error else 200
    if _is_htmx():
        task = _task_or_404(task_id)
        html = render_template("_task_live.html", **_task_context(task),
                               notice=notice, action_error=error)
        return make_response(html, status)
    flash(error or notice, "error" if error else "success")
    return redirect(url_for(".task_detail", task_id=task_id), code=303)


# Event log


def _events_context() -> dict:
    event_filters = _event_filters()
    page = queries.list_events(task_id=event_filters["task"], kind=event_filters["kind"],
                               level=event_filters["level"], before=event_filters["before"],
                               limit=current_app.config["PAGE_SIZE"])
    return {
        "events": page.items,
        "next_cursor": page.next_cursor,
        "event_filters": event_filters,
        "filter_query": _query({name: event_filters[name] for name in ("task", "kind", "level")}),
        "kind_values": queries.KIND_VALUES,
        "level_values": queries.LEVEL_VALUES,
    }


@bp.get("/events")
def events():
    """Show the event log, newest first, filtered by task, kind and level."""
    return render_template("events.html", **_events_context())


@bp.get("/partials/events")
def events_partial():
    """Return the event log table for the filters in the query string."""
    return render_template("_events_table.html", **_events_context())


# Errors


def render_error(error: HTTPException):
    """Render an HTTP error as a page with its status code and no traceback."""
    if error.code is None:
        return error
    try:
        hint = CSRF_HINT if isinstance(error, CSRFError) else ERROR_HINTS.get(error.code)
        html = render_template("error.html", error=error, hint=hint)
    except Exception:
        # The error page must not fail in turn, for instance when the error
        # came from the template machinery itself.
        log.exception("Rendering the error page for %s failed", error.code)
        html = (f"<!doctype html><title>{error.code} {escape(error.name)}</title>"
                f"<h1>{error.code} {escape(error.name)}</h1><p>{escape(error.description)}</p>")
    response = make_response(html, error.code)
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response
