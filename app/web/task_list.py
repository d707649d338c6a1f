"""The tasks page: find tasks with filters, search and sorts, and act on one, many or all matching.

Filters live in the query string, so a view can be bookmarked and shared.
Actions are POSTs of one form. Acting on several tasks, or deleting one,
first shows a confirmation page with the number of tasks that will change,
and the form on that page carries `confirmed`. This works without
JavaScript. Every change goes through app.tasks.actions, which records that
a person made it from the tasks page.
"""

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest

from app.tasks import ValidationError, actions, listing, queue, retention
from app.tasks import registry as task_registry
from app.tasks.submission import QUEUE_NAME

from .filters import display_zone

log = logging.getLogger(__name__)

bp = Blueprint("task_list", __name__)

SOURCE = "the tasks page"
RETENTION_SOURCE = "the dashboard's retention form"
MAX_ID = 2**63 - 1
MAX_TYPE_LENGTH = 100
# Batches one retention request deletes before it hands the rest to a task.
RETENTION_BATCHES_PER_REQUEST = 20

# Query parameters of the list, in the order links carry them.
FILTER_NAMES = ("q", "status", "type", "queue", "created_after", "created_before")
VIEW_NAMES = ("sort", "order")

SORT_LABELS = {"created": "Created", "started": "Started", "finished": "Finished",
               "duration": "Duration"}


@dataclass
class ListRequest:
    """The list a request is for: filters, order and cursor, or the errors in them.

    `raw` keeps the text of each parameter as given, to fill the form and
    build links; `errors` maps each invalid parameter to its message.
    """

    raw: dict
    filters: listing.TaskFilter = field(default_factory=listing.TaskFilter)
    sort: str = listing.DEFAULT_SORT
    descending: bool = True
    cursor: listing.Cursor | None = None
    errors: dict = field(default_factory=dict)

    def query(self, **changes) -> dict:
        """Return the non-empty filter and view parameters, with `changes` applied."""
        values = {name: self.raw.get(name, "") for name in FILTER_NAMES}
        if self.sort != listing.DEFAULT_SORT:
            values["sort"] = self.sort
        if not self.descending:
            values["order"] = "asc"
        values.update(changes)
        return {name: value for name, value in values.items() if value not in (None, "")}


def parse_list_request(source: MultiDict) -> ListRequest:
    """Read filters, sort, order and cursor from `source` (query string or form fields)."""
    raw = {name: source.get(name, "").strip()
           for name in (*FILTER_NAMES, *VIEW_NAMES, "after")}
    request_ = ListRequest(raw=raw)
    errors = request_.errors
    values: dict = {}

    for name in (*FILTER_NAMES, *VIEW_NAMES, "after"):
        if len(source.getlist(name)) > 1:
            errors[name] = "must be given at most once"

    status = raw["status"]
    if status:
        match = next((s for s in listing.STATUS_VALUES if s.lower() == status.lower()), None)
        if match is None:
            errors["status"] = (f"must be one of {', '.join(listing.STATUS_VALUES)}, "
                                f"got {status!r}")
        values["status"] = match
    if raw["type"]:
        if len(raw["type"]) > MAX_TYPE_LENGTH or "\x00" in raw["type"]:
            errors["type"] = f"must be at most {MAX_TYPE_LENGTH} characters, without NUL"
        values["type"] = raw["type"]
    if raw["queue"]:
        if not QUEUE_NAME.fullmatch(raw["queue"]):
            errors["queue"] = ("must be 1 to 100 letters, digits, '_', '.' or '-', "
                               f"got {raw['queue']!r}")
        values["queue"] = raw["queue"]
    for name in ("created_after", "created_before"):
        if raw[name]:
            try:
                values[name] = parse_time(raw[name])
            except ValueError as error:
                errors[name] = str(error)
    if (values.get("created_after") and values.get("created_before")
            and values["created_after"] >= values["created_before"]):
        errors["created_before"] = "must be later than created_after"
    try:
        values.update(listing.parse_search(raw["q"]))
    except ValueError as error:
        errors["q"] = str(error)

    if raw["sort"] and raw["sort"] not in listing.SORT_KEYS:
        errors["sort"] = f"must be one of {', '.join(listing.SORT_KEYS)}, got {raw['sort']!r}"
    if raw["order"] and raw["order"] not in ("asc", "desc"):
        errors["order"] = f"must be asc or desc, got {raw['order']!r}"

    if errors:
        return request_
    request_.filters = listing.TaskFilter(**values)
    request_.sort = raw["sort"] or listing.DEFAULT_SORT
    request_.descending = raw["order"] != "asc"
    if raw["after"]:
        dialect = current_app.extensions["sqlalchemy"].engine.dialect.name
        try:
            request_.cursor = listing.decode_cursor(raw["after"], request_.sort, dialect)
        except ValueError as error:
            errors["after"] = f"{error}; go back to the first page"
    return request_


def parse_time(text: str) -> datetime:
    """Parse "2026-12-04", "2026-12-04T10:30" or a full ISO 8601 time; naive means the page's zone.

    Raise ValueError with the formats it accepts.
    """
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"must be a date or time such as 2026-12-04 or 2026-12-04T10:30, got {text!r}"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=display_zone())
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"must be a time between the years 1 and 9999, got {text!r}") from None


def _page_context(list_request: ListRequest) -> dict:
    """Return what tasks.html and its parts need for one list request."""
    context = {
        "list_request": list_request,
        "raw": list_request.raw,
        "errors": list_request.errors,
        "status_values": listing.STATUS_VALUES,
        "type_names": _type_names(list_request.raw.get("type")),
        "sort_labels": SORT_LABELS,
        "action_labels": actions.ACTION_LABELS,
        "search_window": listing.SEARCH_WINDOW,
        "count_limit": listing.COUNT_LIMIT,
        "zone_name": str(display_zone()),
        "page": None,
        "count": None,
    }
    if list_request.errors:
        return context

    page = listing.find_tasks(list_request.filters, sort=list_request.sort,
                              descending=list_request.descending, cursor=list_request.cursor,
                              limit=current_app.config["PAGE_SIZE"])
    context["page"] = page
    if not list_request.filters.search:
        context["count"] = listing.count_tasks(list_request.filters)
    context["now"] = datetime.now(UTC)
    return context


def _type_names(current: str | None) -> list[str]:
    names = task_registry.names()
    if current and current not in names:
        names.append(current)
    return names


def _error_status(list_request: ListRequest) -> int:
    """Return 200, or the status for invalid filters: 400, or 422 for htmx, which swaps 422 in."""
    if not list_request.errors:
        return 200
    return 422 if request.headers.get("HX-Request") == "true" else 400


@bp.get("/tasks")
def tasks():
    """Show the tasks that match the filters in the query string, one keyset page at a time."""
    list_request = parse_list_request(request.args)
    return render_template("tasks.html", **_page_context(list_request)), _error_status(list_request)


@bp.get("/partials/task-list")
def task_list_partial():
    """Return the table of the tasks page for the filters in the query string."""
    list_request = parse_list_request(request.args)
    html = render_template("_task_rows.html", **_page_context(list_request))
    return html, _error_status(list_request)


# Actions


@dataclass
class ActionRequest:
    """An action posted from the tasks page, on chosen ids or on every matching task."""

    action: str
    scope: str
    task_ids: list[int]
    list_request: ListRequest
    max_id: int | None
    single: bool


def _parse_action_request() -> ActionRequest:
    """Read the posted action form, or raise BadRequest naming the field that is wrong."""
    form = request.form
    single = False
    row_action = form.get("row_action", "")
    if row_action:
        action, _, id_text = row_action.partition(":")
        task_ids = [_task_id(id_text, "row_action")]
        scope, single = "selected", True
    else:
        action = form.get("action", "")
        scope = form.get("scope", "selected")
        # "page" acts on every row shown, which the table lists in page_task_id
        # fields, so that no JavaScript is needed to tick them all.
        field_name = "page_task_id" if scope == "page" else "task_id"
        task_ids = [_task_id(value, field_name) for value in form.getlist(field_name)]
        if scope == "page":
            scope = "selected"
    try:
        actions.check_action(action)
    except ValueError as error:
        raise BadRequest(f"Invalid action: action {error}, got {action!r}.") from None
    if scope not in ("selected", "matching"):
        raise BadRequest(
            f"Invalid scope: scope must be selected, page or matching, got {scope!r}.")
    if len(task_ids) > actions.MAX_SELECTED:
        raise BadRequest(f"Invalid task_id: select at most {actions.MAX_SELECTED} tasks at once, "
                         "or apply the action to every matching task.")

    list_request = parse_list_request(form)
    if list_request.errors:
        name, message = next(iter(list_request.errors.items()))
        raise BadRequest(f"Invalid filter: {name} {message}.")
    max_id = _task_id(form["max_id"], "max_id") if form.get("max_id") else None
    return ActionRequest(action, scope, list(dict.fromkeys(task_ids)), list_request, max_id,
                         single)


def _task_id(text: str, name: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or not 1 <= int(text) <= MAX_ID:
        raise BadRequest(f"Invalid {name}: a task id must be a positive whole number, "
                         f"got {text!r}.")
    return int(text)


@bp.post("/tasks/actions")
def act():
    """Apply an action from the tasks page, after a confirmation page where one is due."""
    action_request = _parse_action_request()
    back = url_for(".tasks", **action_request.list_request.query(
        after=action_request.list_request.raw.get("after")))

    if action_request.scope == "selected" and not action_request.task_ids:
        flash("No task is selected. Tick the tasks to change, or apply the action to every "
              "matching task.", "error")
        return redirect(back, code=303)

    needs_confirmation = not (action_request.single and action_request.action != actions.DELETE)
    if needs_confirmation and request.form.get("confirmed") != "1":
        return render_template("task_confirm.html", back=back,
                               **_confirmation_context(action_request))

    if action_request.scope == "matching":
        filters = action_request.list_request.filters
        if action_request.max_id is not None:
            filters = listing.with_max_id(filters, action_request.max_id)
        result = actions.apply_to_matching(action_request.action, filters, source=SOURCE)
    else:
        result = actions.apply(action_request.action, action_request.task_ids, source=SOURCE)

    category, message = outcome_message(result)
    flash(message, category)
    return redirect(back, code=303)


def _confirmation_context(action_request: ActionRequest) -> dict:
    action = action_request.action
    list_request = action_request.list_request
    context = {
        "action": action,
        "action_label": actions.ACTION_LABELS[action],
        "done": actions.ACTION_DONE[action],
        "scope": action_request.scope,
        "task_ids": action_request.task_ids,
        "raw": list_request.raw,
        "query": list_request.query(after=list_request.raw.get("after")),
    }
    if action_request.scope == "matching":
        max_id = listing.highest_id()
        filters = listing.with_max_id(list_request.filters, max_id)
        context.update(
            max_id=max_id,
            count=listing.count_tasks(filters, statuses=actions.ACTION_STATUSES[action],
                                      extra=actions.candidate_conditions(action)),
            total=listing.count_tasks(filters),
            filter_summary=_filter_summary(list_request),
            per_request=actions.MAX_TASKS_PER_REQUEST,
        )
        context["confirm_label"] = _confirm_label(action, context["count"].value,
                                                  exact=context["count"].exact)
        return context

    preview = actions.preview(action, action_request.task_ids)
    context.update(changing=preview.changed, stop_requested=preview.stop_requested,
                   skip_reasons=preview.skip_reasons(),
                   confirm_label=_confirm_label(
                       action, len(preview.changed) + len(preview.stop_requested)))
    return context


def _confirm_label(action: str, count: int, *, exact: bool = True) -> str:
    label = actions.ACTION_LABELS[action].lower()
    number = f"{count:,}" if exact else f"{count:,}+"
    return f"Yes, {label} {number} {'task' if count == 1 and exact else 'tasks'}"


def _filter_summary(list_request: ListRequest) -> list[tuple[str, str]]:
    labels = {"q": "search", "status": "status", "type": "type", "queue": "queue",
              "created_after": "created after", "created_before": "created before"}
    return [(labels[name], list_request.raw[name]) for name in FILTER_NAMES
            if list_request.raw.get(name)]


def outcome_message(result: actions.BatchResult) -> tuple[str, str]:
    """Return the flash category and the sentence that reports a bulk action's outcome."""
    parts = []
    if result.changed:
        done = actions.ACTION_DONE[result.action]
        parts.append(f"{_tasks(len(result.changed)).capitalize()} {done}.")
    if result.stop_requested:
        parts.append(f"Asked {_tasks(len(result.stop_requested), 'running task')} to stop; "
                     "each shows CANCELLED once its handler stops.")
    if result.skipped:
        reasons = "; ".join(f"{count} {reason}" for reason, count in result.skip_reasons().items())
        if not parts:
            parts.append(f"Nothing changed: {_tasks(len(result.skipped))} skipped ({reasons}).")
        else:
            parts.append(f"Skipped {_tasks(len(result.skipped))} ({reasons}).")
    if not parts:
        parts.append("Nothing changed: no task matched.")
    if result.more:
        parts.append(f"More matching tasks remain, because one request changes at most "
                     f"{actions.MAX_TASKS_PER_REQUEST:,}. Apply the action again for the rest.")
    changed = result.changed or result.stop_requested
    return ("success" if changed else "error"), " ".join(parts)


def _tasks(count: int, noun: str = "task") -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def parse_bulk_body(data: dict) -> tuple[str, list[int], listing.TaskFilter | None]:
    """Read a JSON bulk request: {"action", "ids": [...]} or {"action", "filter": {...}}.

    The filter takes the query parameters of the tasks page (q, status,
    type, queue, created_after, created_before) as strings. Raise
    ValidationError naming every invalid field.
    """
    errors = {}
    for name in sorted(set(data) - {"action", "ids", "filter"}):
        errors[name] = "is not a known field (known: action, ids, filter)"
    action = data.get("action")
    if action is None:
        errors["action"] = f"is required: one of {', '.join(actions.ACTIONS)}"
    elif not isinstance(action, str) or action not in actions.ACTIONS:
        errors["action"] = (f"is invalid: must be one of {', '.join(actions.ACTIONS)}, "
                            f"got {json.dumps(action)}")
    if ("ids" in data) == ("filter" in data):
        errors["ids"] = "give exactly one of ids (a list of task ids) or filter (an object)"
        raise ValidationError(errors)

    ids: list[int] = []
    filters = None
    if "ids" in data:
        ids = _bulk_ids(data["ids"], errors)
    else:
        filters = _bulk_filter(data["filter"], errors)
    if errors:
        raise ValidationError(errors)
    return action, ids, filters


def _bulk_ids(value, errors: dict) -> list[int]:
    valid = isinstance(value, list) and all(
        isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= MAX_ID
        for item in value)
    if not valid:
        errors["ids"] = "must be a list of task ids (positive whole numbers)"
        return []
    if not 1 <= len(value) <= actions.MAX_SELECTED:
        errors["ids"] = f"must list from 1 to {actions.MAX_SELECTED} task ids"
    return list(dict.fromkeys(value))


def _bulk_filter(value, errors: dict) -> listing.TaskFilter | None:
    if not isinstance(value, dict):
        errors["filter"] = f"must be an object with any of {', '.join(FILTER_NAMES)}"
        return None
    known = {}
    for name, item in value.items():
        if name not in FILTER_NAMES:
            errors[f"filter.{name}"] = f"is not a known filter (known: {', '.join(FILTER_NAMES)})"
        elif item is not None and not isinstance(item, str):
            errors[f"filter.{name}"] = "must be a string"
        elif item is not None:
            known[name] = item
    parsed = parse_list_request(MultiDict(known))
    for name, message in parsed.errors.items():
        errors[f"filter.{name}"] = message
    return parsed.filters


# Retention


@bp.post("/tasks/retention")
def delete_old_tasks():
    """Delete finished tasks older than a number of days, after a confirmation with the count."""
    days_text = request.form.get("older_than_days", "")
    try:
        days = retention.check_days(days_text)
    except ValueError as error:
        return render_template("retention_confirm.html", days=days_text,
                               error=f"older_than_days {error}."), 400

    cutoff = retention.cutoff_for(days)
    if request.form.get("confirmed") != "1":
        return render_template("retention_confirm.html", days=days, cutoff=cutoff,
                               count=retention.count_expired(cutoff), error=None,
                               batch_size=retention.BATCH_SIZE)

    result = retention.delete_expired(cutoff, max_batches=RETENTION_BATCHES_PER_REQUEST,
                                      source=RETENTION_SOURCE)
    message = (f"Deleted {_tasks(result.deleted, 'finished task')} that finished more than "
               f"{days} days ago, with their events.")
    if result.more:
        task, _ = queue.submit({"type": retention.TASK_TYPE,
                                "params": {"older_than_days": days}}, source=RETENTION_SOURCE)
        message += (f" More remain; task #{task.id} deletes them in the background, "
                    f"{retention.BATCH_SIZE} at a time.")
    flash(message, "success")
    return redirect(url_for("pages.dashboard"), code=303)
