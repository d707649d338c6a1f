"""The JSON API: submit, list, inspect, cancel and retry tasks, and read the event log.

Every response is JSON, errors included. `json_error` renders each HTTP error
under /api as {"error": {"status": ..., "code": ..., "message": ...}}, with a
"fields" object that maps each invalid field to its message when the input
was rejected. Routes change tasks only through the queue operations.
"""

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from app.tasks import (
    InvalidTransition,
    actions,
    TaskError,
    TaskNotFound,
    ValidationError,
    queries,
    queue,
    queue_control,
    worker_registry,
)
from app.tasks.actions import AlreadyDue
from app.tasks.queue import RetryLimitReached
from app.tasks.submission import QUEUE_NAME

from .task_list import parse_bulk_body

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__)

SOURCE = "the API"

# The largest BIGINT id. Larger ids in a URL or a query string are rejected
# before any query, because SQLite raises OverflowError when binding them.
MAX_ID = 2**63 - 1
TASK_URL = f"/tasks/<int(max={MAX_ID}):task_id>"

# The width of the tasks.type column.
MAX_TYPE_NAME_LENGTH = 100


class ApiError(HTTPException):
    """An HTTP error with a machine-readable code and extra members for its JSON body."""

    def __init__(self, status: int, code: str, message: str, **members: Any):
        super().__init__(description=message)
        self.code = status
        self.error_code = code
        self.members = members


def invalid_input(fields: dict[str, str]) -> ApiError:
    """Build the 400 error that lists every invalid field with its message."""
    names = ", ".join(fields)
    return ApiError(400, "invalid",
                    f"The request has invalid fields: {names}. Fix them and send it again.",
                    fields=fields)


def json_error(error: HTTPException) -> Response:
    """Render an HTTP error as a JSON response with the same status and headers."""
    status = error.code or 500
    body = {"status": status, "code": _error_code(error), "message": _error_message(error)}
    body.update(getattr(error, "members", {}))

    response = jsonify(error=body)
    response.status_code = status
    # Keep headers such as Allow (405) and Retry-After, but not the HTML content type.
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _error_code(error: HTTPException) -> str:
    if isinstance(error, ApiError):
        return error.error_code
    return re.sub(r"[^a-z0-9]+", "_", error.name.lower()).strip("_")


def _error_message(error: HTTPException) -> str:
    if isinstance(error, ApiError):
        return error.description
    if isinstance(error, MethodNotAllowed):
        allowed = ", ".join(sorted(error.valid_methods or []))
        return f"{request.method} is not allowed on {request.path}. Allowed methods: {allowed}."
    if isinstance(error, NotFound):
        return (f"No API endpoint matches {request.path}. The API serves /api/tasks, "
                "/api/tasks/<id> (a whole number) with /events, /cancel, /retry and "
                "/run-now, /api/tasks/bulk, "
                "/api/events, /api/queues (with /<name>/pause, /resume and "
                "/concurrency-limit) and /api/workers.")
    # Werkzeug's standard descriptions are plain sentences. For a 500 the
    # unexpected-error handler passes a fresh InternalServerError, so the
    # message does not repeat the original exception, which that handler logs.
    return error.description or error.name


# Domain errors raised by the views below


@bp.errorhandler(ValidationError)
def _validation_failed(error: ValidationError) -> Response:
    return json_error(invalid_input(error.fields))


@bp.errorhandler(TaskNotFound)
def _task_not_found(error: TaskNotFound) -> Response:
    return json_error(ApiError(
        404, "not_found",
        f"Task {error.task_id} not found. Check the id, or list tasks with GET /api/tasks."))


@bp.errorhandler(InvalidTransition)
def _invalid_transition(error: InvalidTransition) -> Response:
    return _conflict(error, str(error.status))


@bp.errorhandler(RetryLimitReached)
def _retry_limit_reached(error: RetryLimitReached) -> Response:
    task = queries.get_task(error.task_id)
    return _conflict(error, task.status if task is not None else None)


@bp.errorhandler(AlreadyDue)
def _already_due(error: AlreadyDue) -> Response:
    return _conflict(error, error.status)


def _conflict(error: TaskError, task_status: str | None) -> Response:
    """Log a rejected change of a task's status and return it as a 409 error."""
    log.info("Rejected %s %s: %s", request.method, request.path, error,
             extra={"task_id": error.task_id, "event": "conflict"})
    return json_error(ApiError(409, "conflict", str(error), task_status=task_status))


# Tasks


@bp.post("/tasks")
def create_task():
    """Submit a task and return it with 201, or the first task with 200 if its key was used."""
    data = _json_object_body()

    task, created = queue.submit(data, source=SOURCE)

    if not created:
        return jsonify(task.to_dict()), 200
    return jsonify(task.to_dict()), 201, {"Location": url_for(".get_task", task_id=task.id)}


@bp.get("/tasks")
def list_tasks():
    """List tasks newest first, filtered by status, type and queue, one page at a time."""
    query = _parse_query({
        "status": _one_of(queries.STATUS_VALUES),
        "type": _type_name,
        "queue": _queue_name,
        "limit": _page_size,
        "before": _cursor,
    })

    limit = _limit_or_default(query.pop("limit"))
    page = queries.list_tasks(**query, limit=limit)

    return jsonify(tasks=[task.to_dict() for task in page.items], **_pagination(page))


@bp.get(TASK_URL)
def get_task(task_id: int):
    """Return one task."""
    task = _load_task(task_id)
    return jsonify(task.to_dict())


@bp.get(TASK_URL + "/events")
def get_task_events(task_id: int):
    """Return every event of one task, oldest first."""
    task = _load_task(task_id)

    # NOTE: this list is not paged, so a handler that logs heavily makes it
    # large. GET /api/events?task_id= pages the same rows, newest first.
    events = queries.task_events(task.id)

    return jsonify(events=[event.to_dict() for event in events])


@bp.post(TASK_URL + "/cancel")
def cancel_task(task_id: int):
    """Cancel a waiting task or ask a running one to stop, ignoring any request body."""
    task = queue.cancel(task_id, source=SOURCE)
    return jsonify(task.to_dict())


@bp.post(TASK_URL + "/retry")
def retry_task(task_id: int):
    """Requeue a FAILED or CANCELLED task, ignoring any request body."""
    task = queue.retry(task_id, source=SOURCE)
    return jsonify(task.to_dict())


@bp.delete(TASK_URL)
def delete_task(task_id: int):
    """Delete a task that is not running, with its events; 204 on success."""
    actions.delete_task(task_id, source=SOURCE)
    return "", 204


@bp.post(TASK_URL + "/run-now")
def run_task_now(task_id: int):
    """Make a PENDING or RETRYING task that waits for its run_at due now, ignoring any body."""
    task = actions.run_now(task_id, source=SOURCE)
    return jsonify(task.to_dict())


@bp.post("/tasks/bulk")
def bulk_action():
    """Apply cancel, retry, delete or run_now to listed ids, or to every task matching a filter.

    The body is {"action": ..., "ids": [...]} or {"action": ..., "filter": {...}}.
    The response lists what changed and what was skipped, with reasons.
    """
    action, ids, filters = parse_bulk_body(_json_object_body())
    if filters is None:
        result = actions.apply(action, ids, source=SOURCE)
    else:
        result = actions.apply_to_matching(action, filters, source=SOURCE)
    return jsonify(result.to_dict())


# Event log


@bp.get("/events")
def list_events():
    """List events newest first, filtered by task, kind and level, one page at a time."""
    query = _parse_query({
        "task_id": _task_id,
        "kind": _one_of(queries.KIND_VALUES),
        "level": _one_of(queries.LEVEL_VALUES),
        "limit": _page_size,
        "before": _cursor,
    })

    limit = _limit_or_default(query.pop("limit"))
    page = queries.list_events(**query, limit=limit)

    return jsonify(events=[event.to_dict() for event in page.items], **_pagination(page))


# Queues and workers

QUEUE_URL = "/queues/<string(maxlength=100):name>"


@bp.get("/queues")
def list_queues():
    """List every queue with its settings, counts per status and oldest waiting task."""
    return jsonify(queues=[overview.to_dict() for overview in queue_control.list_queues()])


@bp.post(QUEUE_URL + "/pause")
def pause_queue(name: str):
    """Stop every worker from claiming tasks of one queue, ignoring any request body."""
    queue_control.pause_queue(name)
    return jsonify(_queue_overview(name))


@bp.post(QUEUE_URL + "/resume")
def resume_queue(name: str):
    """Let workers claim tasks of one queue again, ignoring any request body."""
    queue_control.resume_queue(name)
    return jsonify(_queue_overview(name))


@bp.put(QUEUE_URL + "/concurrency-limit")
def set_queue_limit(name: str):
    """Set a queue's concurrency limit from {"concurrency_limit": N or null}."""
    data = _json_object_body()
    unknown = sorted(set(data) - {"concurrency_limit"})
    if unknown or "concurrency_limit" not in data:
        fields = {key: "is not a known field (known: concurrency_limit)" for key in unknown}
        if "concurrency_limit" not in data:
            fields["concurrency_limit"] = "is required (a whole number of at least 1, or null)"
        raise invalid_input(fields)

    queue_control.set_concurrency_limit(name, data["concurrency_limit"])
    return jsonify(_queue_overview(name))


def _queue_overview(name: str) -> dict:
    return next(o.to_dict() for o in queue_control.list_queues() if o.name == name)


@bp.get("/workers")
def list_workers():
    """List registered workers, live ones first, with the tasks each one runs."""
    return jsonify(workers=[status.to_dict() for status in worker_registry.list_workers()])


# Input


def _json_object_body() -> dict:
    """Return the request body as a JSON object, or raise the 415 or 400 error that fits."""
    if not request.is_json:
        got = request.mimetype or "no Content-Type"
        raise ApiError(415, "unsupported_media_type",
                       f"The body must be JSON sent with Content-Type: application/json; got {got}.")
    try:
        data = json.loads(request.get_data(), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise invalid_input({"body": f"is not valid JSON ({error})"}) from None
    if not isinstance(data, dict):
        raise invalid_input({"body": f"must be a JSON object, not {_json_type(data)}"})
    return data


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in JSON")


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _parse_query(converters: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    """Convert each known query parameter, or raise ValidationError naming every invalid one.

    An absent or empty parameter becomes None. Unknown and repeated
    parameters are rejected, so that a typo never silently widens a filter.
    """
    errors = {}
    for name in request.args:
        if name not in converters:
            errors[name] = f"is not a known query parameter (known: {', '.join(converters)})"

    values = {}
    for name, convert in converters.items():
        raw_values = request.args.getlist(name)
        if len(raw_values) > 1:
            errors[name] = "must be given at most once"
            continue
        if not raw_values or raw_values[0] == "":
            values[name] = None
            continue
        try:
            values[name] = convert(raw_values[0])
        except ValueError as error:
            errors[name] = str(error)

    if errors:
        raise ValidationError(errors)
    return values


def _one_of(choices: list[str]) -> Callable[[str], str]:
    def convert(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return convert


def _type_name(value: str) -> str:
    # PostgreSQL raises DataError for a NUL character in a text parameter,
    # and no stored type name is longer than the column.
    if "\x00" in value or len(value) > MAX_TYPE_NAME_LENGTH:
        raise ValueError(f"must be at most {MAX_TYPE_NAME_LENGTH} characters, without NUL")
    return value


def _queue_name(value: str) -> str:
    if not QUEUE_NAME.fullmatch(value):
        raise ValueError("must be 1 to 100 letters, digits, '_', '.' or '-'")
    return value


def _whole_number(value: str, low: int, high: int) -> int:
    # isascii() and isdigit() reject signs, spaces, "_" and non-ASCII digits,
    # which int() would take; the length check keeps int() off huge strings.
    digits = value.isascii() and value.isdigit() and len(value) <= len(str(high))
    if not digits or not low <= int(value) <= high:
        raise ValueError(f"must be a whole number from {low} to {high}")
    return int(value)


def _page_size(value: str) -> int:
    return _whole_number(value, 1, queries.MAX_PAGE_SIZE)


def _cursor(value: str) -> int:
    return _whole_number(value, 1, MAX_ID)


def _task_id(value: str) -> int:
    return _whole_number(value, 1, MAX_ID)


def _limit_or_default(limit: int | None) -> int:
    if limit is not None:
        return limit
    return max(1, min(int(current_app.config["PAGE_SIZE"]), queries.MAX_PAGE_SIZE))


def _load_task(task_id: int):
    task = queries.get_task(task_id)
    if task is None:
        raise TaskNotFound(task_id)
    return task


def _pagination(page: queries.Page) -> dict:
    """Return the "next" URL and "next_cursor" of a page, both None on the last page."""
    if page.next_cursor is None:
        return {"next": None, "next_cursor": None}
    url = url_for(request.endpoint, **page.filters, limit=page.limit, before=page.next_cursor)
    return {"next": url, "next_cursor": page.next_cursor}
