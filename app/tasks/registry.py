"""Task types: a name, a handler and the schema of its parameters.

A module registers a type with the decorator:

    @task_type("resize", params={"width": Param(int, min=1, max=4000)})
    def resize(ctx, width):
        ...

The form and the JSON API both validate input with `TaskType.validate_params`,
so the two can never disagree about what a valid task is.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError

_KIND_NAMES = {str: "text", int: "integer", float: "number", bool: "boolean"}


@dataclass(frozen=True)
class Param:
    """One parameter of a task type.

    `kind` is str, int, float or bool. `multiline` asks the form for a text
    area. `min`/`max` bound numbers, `min_length`/`max_length` bound text,
    and `choices` limits a value to a fixed list.
    """

    kind: type = str
    required: bool = True
    default: Any = None
    min: float | None = None
    max: float | None = None
    min_length: int | None = None
    max_length: int | None = 10_000
    choices: tuple | None = None
    multiline: bool = False
    label: str | None = None
    help: str = ""

    def __post_init__(self):
        if self.kind not in _KIND_NAMES:
            raise TypeError(f"Param kind must be one of str, int, float, bool; got {self.kind!r}")

    @property
    def kind_name(self) -> str:
        return _KIND_NAMES[self.kind]

    def convert(self, value: Any) -> Any:
        """Return `value` as this parameter's kind, or raise ValueError with a message."""
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {"true", "1", "yes", "on", "y"}:
                return True
            if isinstance(value, str) and value.lower() in {"false", "0", "no", "off", "n", ""}:
                return False
            raise ValueError("must be true or false")
        if self.kind is int:
            if isinstance(value, bool):
                raise ValueError("must be a whole number")
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, int):
                return value
            if isinstance(value, str):
                try:
                    return int(value.strip())
                except ValueError:
                    raise ValueError("must be a whole number") from None
            raise ValueError("must be a whole number")
        if self.kind is float:
            if isinstance(value, bool):
                raise ValueError("must be a number")
            try:
                number = float(value.strip() if isinstance(value, str) else value)
            except (TypeError, ValueError):
                raise ValueError("must be a number") from None
            if not math.isfinite(number):
                raise ValueError("must be a finite number")
            return number
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value

    def check(self, value: Any) -> Any:
        """Convert and range-check `value`; raise ValueError naming the rule it breaks."""
        value = self.convert(value)
        if self.kind in (int, float):
            if self.min is not None and value < self.min:
                raise ValueError(f"must be at least {format_number(self.min)}")
            if self.max is not None and value > self.max:
                raise ValueError(f"must be at most {format_number(self.max)}")
        if self.kind is str:
            if self.min_length is not None and len(value) < self.min_length:
                raise ValueError(f"must be at least {self.min_length} characters long")
            if self.max_length is not None and len(value) > self.max_length:
                raise ValueError(f"must be at most {self.max_length} characters long")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(map(str, self.choices))}")
        return value


def format_number(value: float) -> str:
    """Format a bound for an error message: whole numbers in full, others as %g."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:g}"


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


@dataclass(frozen=True)
class TaskType:
    name: str
    handler: Callable
    params: dict[str, Param] = field(default_factory=dict)
    description: str = ""
    max_attempts: int | None = None
    timeout_seconds: float | None = None

    def validate_params(self, raw: Any) -> dict:
        """Return clean parameters, or raise ValidationError keyed by "params.<name>"."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ValidationError({"params": "must be an object of parameter names to values"})

        errors = {}
        clean = {}
        for name in raw:
            if name not in self.params:
                known = ", ".join(self.params) or "none"
                errors[f"params.{name}"] = f"is not a parameter of {self.name} (known: {known})"

        for name, param in self.params.items():
            value = raw.get(name)
            # A missing bool takes its default, or false: the form always
            # sends its checkboxes, so only API clients leave one out.
            if param.kind is bool and value is None:
                clean[name] = bool(param.default)
                continue
            if param.kind is not bool and _is_blank(value):
                if param.required and param.default is None:
                    errors[f"params.{name}"] = "is required"
                elif param.default is not None:
                    clean[name] = param.default
                continue
            try:
                clean[name] = param.check(value)
            except ValueError as error:
                errors[f"params.{name}"] = str(error)

        if errors:
            raise ValidationError(errors)
        return clean


class Registry:
    """Task types by name."""

    def __init__(self):
        self._types: dict[str, TaskType] = {}

    def register(self, task_type: TaskType) -> TaskType:
        existing = self._types.get(task_type.name)
        if existing is not None and existing.handler is not task_type.handler:
            raise ValueError(
                f"task type {task_type.name!r} is already registered by "
                f"{existing.handler.__module__}.{existing.handler.__qualname__}"
            )
        self._types[task_type.name] = task_type
        return task_type

    def unregister(self, name: str) -> None:
        self._types.pop(name, None)

    def get(self, name: str) -> TaskType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def __contains__(self, name: str) -> bool:
        return name in self._types

    def __iter__(self):
        return iter(sorted(self._types.values(), key=lambda t: t.name))


registry = Registry()


def task_type(
    name: str,
    *,
    params: dict[str, Param] | None = None,
    description: str = "",
    max_attempts: int | None = None,
    timeout_seconds: float | None = None,
):
    """Register the decorated function as the handler of task type `name`.

    The handler is called as `handler(ctx, **params)` and returns a
    JSON-serialisable result. `max_attempts` and `timeout_seconds` default to
    the DEFAULT_MAX_ATTEMPTS and DEFAULT_TIMEOUT_SECONDS settings.
    """

    def decorate(function: Callable) -> Callable:
        registry.register(
            TaskType(
                name=name,
                handler=function,
                params=dict(params or {}),
                description=description or (function.__doc__ or "").strip().split("\n")[0],
                max_attempts=max_attempts,
                timeout_seconds=timeout_seconds,
            )
        )
        return function

    return decorate
