"""Validation of a task submission, shared by the form, the JSON API and code."""

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ValidationError
from .models import MAX_ATTEMPTS_LIMIT, MAX_PRIORITY
from .registry import Registry, format_number, registry

MAX_DELAY_SECONDS = 366 * 24 * 3600
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
MAX_IDEMPOTENCY_KEY_LENGTH = 200
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
# One half of a UTF-16 surrogate pair. Valid Unicode text never contains one
# alone, but JSON may escape one ("\\ud800") and Python decodes it.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
LONE_SURROGATE_ERROR = ("contains a lone surrogate (an escape from \\ud800 to \\udfff "
                        "without its pair), which is not valid Unicode text")

SUBMISSION_FIELDS = (
    "type",
    "params",
    "priority",
    "delay_seconds",
    "max_attempts",
    "timeout_seconds",
    "queue",
    "idempotency_key",
)


@dataclass(frozen=True)
class Submission:
    """A checked request to run a task."""

    type: str
    params: dict
    priority: int = 0
    delay_seconds: float = 0.0
    max_attempts: int | None = None
    timeout_seconds: float | None = None
    queue: str = "default"
    idempotency_key: str | None = None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _integer(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise ValueError("must be a whole number")
    if not low <= value <= high:
        raise ValueError(f"must be between {low} and {high}")
    return value


def _number(value: Any, low: float, high: float, *, low_inclusive: bool = True) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError("must be a number") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    too_low = number < low if low_inclusive else number <= low
    if too_low or number > high:
        bound = "at least" if low_inclusive else "greater than"
        raise ValueError(
            f"must be {bound} {format_number(low)} and at most {format_number(high)}"
        )
    return number


def lone_surrogate_path(value: Any) -> str | None:
    """Return the dotted path ("params.text") of a key or string with a lone surrogate, or None.

    The path of `value` itself is "". The walk uses a stack, not recursion,
    because json.loads accepts nesting about as deep as Python's recursion
    limit.
    """
    pending = [("", None, value)]
    while pending:
        path, key, item = pending.pop()
        if isinstance(key, str) and LONE_SURROGATE.search(key):
            return path
        if isinstance(item, str) and LONE_SURROGATE.search(item):
            return path
        if isinstance(item, Mapping):
            pending.extend((_join(path, name), name, child) for name, child in item.items())
        elif isinstance(item, (list, tuple)):
            pending.extend((_join(path, index), None, child) for index, child in enumerate(item))
    return None


def _join(path: str, name) -> str:
    return f"{path}.{name}" if path else str(name)


def validate_submission(data: Mapping, *, types: Registry = registry) -> Submission:
    """Check every field of a submission and return it clean.

    Raise ValidationError naming every invalid field at once, so that a form
    or an API client can fix them all in one go. Field names are those of the
    JSON API; parameters are reported as "params.<name>".
    """
    if not isinstance(data, Mapping):
        raise ValidationError({"body": "must be a JSON object"})
    # Such a string cannot be written as UTF-8, so no page could show the
    # task, and the other checks of that field would be moot.
    where = lone_surrogate_path(data)
    if where is not None:
        raise ValidationError({where: LONE_SURROGATE_ERROR})

    errors: dict[str, str] = {}
    for name in data:
        if name not in SUBMISSION_FIELDS:
            errors[str(name)] = f"is not a known field (known: {', '.join(SUBMISSION_FIELDS)})"

    type_name = data.get("type")
    task_type = None
    if _blank(type_name):
        errors["type"] = "is required"
    elif not isinstance(type_name, str) or type_name not in types:
        errors["type"] = f"must be one of the registered task types: {', '.join(types.names())}"
    else:
        task_type = types.get(type_name)

    params = {}
    if task_type is not None:
        try:
            params = task_type.validate_params(data.get("params"))
        except ValidationError as error:
            errors.update(error.fields)

    values: dict[str, Any] = {}
    checks = {
        "priority": lambda v: _integer(v, -MAX_PRIORITY, MAX_PRIORITY),
        "delay_seconds": lambda v: _number(v, 0, MAX_DELAY_SECONDS),
        "max_attempts": lambda v: _integer(v, 1, MAX_ATTEMPTS_LIMIT),
        "timeout_seconds": lambda v: _number(v, 0, MAX_TIMEOUT_SECONDS, low_inclusive=False),
    }
    for name, check in checks.items():
        if _blank(data.get(name)):
            continue
        try:
            values[name] = check(data[name])
        except ValueError as error:
            errors[name] = str(error)

    queue = data.get("queue")
    if not _blank(queue):
        if not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue):
            errors["queue"] = "must be 1 to 100 letters, digits, '_', '.' or '-'"
        else:
            values["queue"] = queue

    key = data.get("idempotency_key")
    if not _blank(key):
        if not isinstance(key, str):
            errors["idempotency_key"] = "must be a string"
        elif "\x00" in key:
            errors["idempotency_key"] = "must not contain a NUL character"
        elif len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            errors["idempotency_key"] = (
                f"must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters long"
            )
        else:
            values["idempotency_key"] = key

    if errors:
        raise ValidationError(errors)
    return Submission(type=type_name, params=params, **values)
