"""Task-type parameters, the registry, and the validation of a whole submission.

None of these tests touches a database.
"""

import math

import pytest

from app.tasks import Param, TaskType, ValidationError, registry, task_type
from app.tasks.registry import Registry
from app.tasks.submission import (
    MAX_DELAY_SECONDS,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_TIMEOUT_SECONDS,
    SUBMISSION_FIELDS,
    Submission,
    validate_submission,
)


def _handler(ctx, **params):
    return params


def _other_handler(ctx, **params):
    return None


def _errors(call, *args, **kwargs) -> dict:
    with pytest.raises(ValidationError) as raised:
        call(*args, **kwargs)
    return raised.value.fields


@pytest.fixture
def types():
    """A registry of its own, so tests never touch the built-in types."""
    own = Registry()
    own.register(TaskType("resize", handler=_handler, params={
        "width": Param(int, min=1, max=4000),
        "mode": Param(str, required=False, default="fit", choices=("fit", "fill")),
    }))
    own.register(TaskType("ping", handler=_handler))
    return own


# Param: conversion


@pytest.mark.parametrize(
    "raw, expected",
    [(42, 42), ("42", 42), (" 7 ", 7), ("-3", -3), (3.0, 3), (0, 0)],
)
def test_param_int_converts(raw, expected):
    value = Param(int).check(raw)

    assert value == expected
    assert type(value) is int


@pytest.mark.parametrize("raw", [3.5, "3.5", "abc", "", True, False, None, [1], {"a": 1}])
def test_param_int_rejects(raw):
    with pytest.raises(ValueError, match="must be a whole number"):
        Param(int).check(raw)


@pytest.mark.parametrize(
    "raw, expected",
    [(2.5, 2.5), ("2.5", 2.5), (" 1e3 ", 1000.0), (3, 3.0), ("0", 0.0)],
)
def test_param_float_converts(raw, expected):
    value = Param(float).check(raw)

    assert value == expected
    assert type(value) is float


@pytest.mark.parametrize("raw", ["x", "", None, True, [1.0]])
def test_param_float_rejects_non_number(raw):
    with pytest.raises(ValueError, match="must be a number"):
        Param(float).check(raw)


@pytest.mark.parametrize("raw", [math.nan, math.inf, -math.inf, "nan", "inf", "-Infinity"])
def test_param_float_rejects_non_finite(raw):
    with pytest.raises(ValueError, match="must be a finite number"):
        Param(float).check(raw)


@pytest.mark.parametrize("raw", ["hello", "", "  spaced  "])
def test_param_str_keeps_text(raw):
    assert Param(str).check(raw) == raw


@pytest.mark.parametrize("raw", [5, 1.5, True, None, ["a"]])
def test_param_str_rejects_non_string(raw):
    with pytest.raises(ValueError, match="must be a string"):
        Param(str).check(raw)


@pytest.mark.parametrize(
    "raw", [True, "true", "TRUE", "1", "yes", "on", "y", "Y", "On"],
)
def test_param_bool_true_values(raw):
    assert Param(bool).check(raw) is True


@pytest.mark.parametrize("raw", [False, "false", "0", "no", "off", "n", "", "OFF"])
def test_param_bool_false_values(raw):
    assert Param(bool).check(raw) is False


@pytest.mark.parametrize("raw", ["maybe", 1, 0, None, "2", 1.0])
def test_param_bool_rejects(raw):
    with pytest.raises(ValueError, match="must be true or false"):
        Param(bool).check(raw)


def test_param_unknown_kind_raises_type_error():
    with pytest.raises(TypeError, match="Param kind must be one of str, int, float, bool"):
        Param(list)


@pytest.mark.parametrize(
    "kind, name", [(str, "text"), (int, "integer"), (float, "number"), (bool, "boolean")]
)
def test_param_kind_name(kind, name):
    assert Param(kind).kind_name == name


# Param: ranges, lengths and choices


def test_param_int_range_messages():
    param = Param(int, min=1, max=10)

    assert param.check(1) == 1
    assert param.check(10) == 10
    with pytest.raises(ValueError, match="^must be at least 1$"):
        param.check(0)
    with pytest.raises(ValueError, match="^must be at most 10$"):
        param.check(11)


def test_param_float_range_messages():
    param = Param(float, min=0.5, max=2.5)

    assert param.check("0.5") == 0.5
    with pytest.raises(ValueError, match="^must be at least 0.5$"):
        param.check(0.49)
    with pytest.raises(ValueError, match="^must be at most 2.5$"):
        param.check(2.51)


def test_param_large_bounds_written_in_full():
    param = Param(int, min=-2_000_000, max=2_000_000)

    with pytest.raises(ValueError, match="^must be at most 2000000$"):
        param.check(2_000_001)
    with pytest.raises(ValueError, match="^must be at least -2000000$"):
        param.check(-2_000_001)


def test_param_str_length_messages():
    param = Param(str, min_length=2, max_length=5)

    assert param.check("ab") == "ab"
    assert param.check("abcde") == "abcde"
    with pytest.raises(ValueError, match="^must be at least 2 characters long$"):
        param.check("a")
    with pytest.raises(ValueError, match="^must be at most 5 characters long$"):
        param.check("abcdef")


def test_param_str_default_max_length():
    param = Param(str)

    assert param.check("x" * 10_000) == "x" * 10_000
    with pytest.raises(ValueError, match="at most 10000 characters"):
        param.check("x" * 10_001)


def test_param_choices_message():
    param = Param(str, choices=("fit", "fill"))

    assert param.check("fill") == "fill"
    with pytest.raises(ValueError, match="^must be one of fit, fill$"):
        param.check("crop")


def test_param_int_choices_after_conversion():
    param = Param(int, choices=(1, 2, 4))

    assert param.check("4") == 4
    with pytest.raises(ValueError, match="must be one of 1, 2, 4"):
        param.check("3")


# TaskType.validate_params


def test_validate_params_returns_clean_values(types):
    clean = types.get("resize").validate_params({"width": "640", "mode": "fill"})

    assert clean == {"width": 640, "mode": "fill"}


def test_validate_params_error_keys_name_parameter(types):
    errors = _errors(types.get("resize").validate_params, {"width": "0", "mode": "crop"})

    assert errors == {
        "params.width": "must be at least 1",
        "params.mode": "must be one of fit, fill",
    }


def test_validate_params_unknown_parameter(types):
    errors = _errors(types.get("resize").validate_params, {"width": 10, "height": 10})

    assert errors == {"params.height": "is not a parameter of resize (known: width, mode)"}


def test_validate_params_unknown_parameter_of_type_without_params(types):
    errors = _errors(types.get("ping").validate_params, {"x": 1})

    assert errors == {"params.x": "is not a parameter of ping (known: none)"}


@pytest.mark.parametrize("raw", [{}, {"width": None}, {"width": ""}, {"width": "   "}])
def test_validate_params_required_missing(types, raw):
    errors = _errors(types.get("resize").validate_params, raw)

    assert errors == {"params.width": "is required"}


@pytest.mark.parametrize(
    "raw", [{"width": 5}, {"width": 5, "mode": ""}, {"width": 5, "mode": None}]
)
def test_validate_params_default_fills_blank(types, raw):
    assert types.get("resize").validate_params(raw) == {"width": 5, "mode": "fit"}


def test_validate_params_optional_without_default_is_left_out():
    kind = TaskType("note", handler=_handler, params={"text": Param(str, required=False)})

    assert kind.validate_params({}) == {}
    assert kind.validate_params({"text": ""}) == {}
    assert kind.validate_params({"text": "hi"}) == {"text": "hi"}


def test_validate_params_required_with_default_uses_default():
    kind = TaskType("count", handler=_handler, params={"n": Param(int, default=3)})

    assert kind.validate_params({}) == {"n": 3}


@pytest.mark.parametrize("raw", [None, {}])
def test_validate_params_none_or_empty(types, raw):
    assert types.get("ping").validate_params(raw) == {}


@pytest.mark.parametrize("raw", [[1, 2], "width=5", 5])
def test_validate_params_not_an_object(types, raw):
    errors = _errors(types.get("resize").validate_params, raw)

    assert errors == {"params": "must be an object of parameter names to values"}


@pytest.mark.parametrize(
    "raw, expected",
    [({}, False), ({"notify": None}, False), ({"notify": ""}, False),
     ({"notify": "on"}, True), ({"notify": True}, True), ({"notify": "false"}, False)],
)
def test_validate_params_bool_missing_means_false(raw, expected):
    kind = TaskType("mail", handler=_handler, params={"notify": Param(bool)})

    assert kind.validate_params(raw) == {"notify": expected}


@pytest.mark.parametrize("raw, expected", [({}, True), ({"notify": None}, True),
                                           ({"notify": False}, False), ({"notify": "off"}, False)])
def test_validate_params_bool_missing_takes_default(raw, expected):
    kind = TaskType("mail", handler=_handler, params={"notify": Param(bool, default=True)})

    assert kind.validate_params(raw) == {"notify": expected}


def test_validate_params_bool_invalid(types):
    kind = TaskType("mail", handler=_handler, params={"notify": Param(bool)})

    errors = _errors(kind.validate_params, {"notify": "perhaps"})

    assert errors == {"params.notify": "must be true or false"}


def test_validate_params_reports_every_error_at_once(types):
    errors = _errors(types.get("resize").validate_params, {"mode": "crop", "depth": 3})

    assert set(errors) == {"params.width", "params.mode", "params.depth"}


def test_validation_error_message_lists_fields():
    error = ValidationError({"type": "is required", "params.width": "must be at least 1"})

    assert str(error) == "invalid task input (type: is required; params.width: must be at least 1)"
    assert error.fields == {"type": "is required", "params.width": "must be at least 1"}


# The registry


def test_registry_register_and_look_up():
    own = Registry()
    kind = own.register(TaskType("b_type", handler=_handler))
    own.register(TaskType("a_type", handler=_handler))

    assert kind.name == "b_type"
    assert own.get("b_type") is kind
    assert own.get("missing") is None
    assert "a_type" in own
    assert "missing" not in own
    assert own.names() == ["a_type", "b_type"]
    assert [t.name for t in own] == ["a_type", "b_type"]


def test_registry_duplicate_with_other_handler_raises():
    own = Registry()
    own.register(TaskType("resize", handler=_handler))

    with pytest.raises(ValueError) as raised:
        own.register(TaskType("resize", handler=_other_handler))

    message = str(raised.value)
    assert "task type 'resize' is already registered by" in message
    assert f"{__name__}._handler" in message
    assert own.get("resize").handler is _handler


def test_registry_same_handler_again_replaces_entry():
    own = Registry()
    own.register(TaskType("resize", handler=_handler, description="old"))

    own.register(TaskType("resize", handler=_handler, description="new"))

    assert own.get("resize").description == "new"
    assert own.names() == ["resize"]


def test_registry_unregister():
    own = Registry()
    own.register(TaskType("resize", handler=_handler))

    own.unregister("resize")
    own.unregister("never_registered")

    assert "resize" not in own
    assert own.names() == []


def test_registry_has_built_in_types():
    import app.handlers  # noqa: F401  (registers the built-in types)

    for name in ("noop", "sleep", "fail", "flaky", "word_count"):
        assert name in registry, name


def test_task_type_decorator_registers_function():
    try:
        @task_type("decorated", params={"n": Param(int)}, max_attempts=2, timeout_seconds=4)
        def decorated(ctx, n):
            """Double a number.

            More text that the description leaves out.
            """
            return 2 * n

        kind = registry.get("decorated")
        assert kind.handler is decorated
        assert kind.description == "Double a number."
        assert kind.max_attempts == 2
        assert kind.timeout_seconds == 4
        assert kind.params == {"n": Param(int)}
        assert decorated(None, 3) == 6
    finally:
        registry.unregister("decorated")


def test_task_type_decorator_explicit_description_wins():
    try:
        @task_type("described", description="Given here.")
        def described(ctx):
            """From the docstring."""

        assert registry.get("described").description == "Given here."
    finally:
        registry.unregister("described")


def test_task_type_decorator_without_docstring():
    try:
        @task_type("bare")
        def bare(ctx):
            return None

        assert registry.get("bare").description == ""
        assert registry.get("bare").params == {}
    finally:
        registry.unregister("bare")


def test_task_type_decorator_duplicate_name_raises():
    try:
        @task_type("twice")
        def first(ctx):
            return 1

        with pytest.raises(ValueError, match="already registered"):
            @task_type("twice")
            def second(ctx):
                return 2

        assert registry.get("twice").handler is first
    finally:
        registry.unregister("twice")


# validate_submission


def test_submission_minimal(types):
    submission = validate_submission({"type": "ping"}, types=types)

    assert submission == Submission(type="ping", params={})
    assert submission.priority == 0
    assert submission.delay_seconds == 0.0
    assert submission.max_attempts is None
    assert submission.timeout_seconds is None
    assert submission.queue == "default"
    assert submission.idempotency_key is None


def test_submission_every_field(types):
    submission = validate_submission({
        "type": "resize",
        "params": {"width": "800"},
        "priority": "7",
        "delay_seconds": "1.5",
        "max_attempts": 5,
        "timeout_seconds": 60,
        "queue": "images.large-1_a",
        "idempotency_key": "upload-17",
    }, types=types)

    assert submission.type == "resize"
    assert submission.params == {"width": 800, "mode": "fit"}
    assert submission.priority == 7
    assert submission.delay_seconds == 1.5
    assert submission.max_attempts == 5
    assert submission.timeout_seconds == 60.0
    assert submission.queue == "images.large-1_a"
    assert submission.idempotency_key == "upload-17"


@pytest.mark.parametrize("body", [[("type", "ping")], "type=ping", None, 5])
def test_submission_body_not_an_object(types, body):
    errors = _errors(validate_submission, body, types=types)

    assert errors == {"body": "must be a JSON object"}


def test_submission_unknown_field(types):
    errors = _errors(validate_submission, {"type": "ping", "colour": "red"}, types=types)

    assert list(errors) == ["colour"]
    assert errors["colour"].startswith("is not a known field (known: type, params, ")
    for name in SUBMISSION_FIELDS:
        assert name in errors["colour"]


@pytest.mark.parametrize("value", [None, "", "   "])
def test_submission_type_required(types, value):
    data = {} if value is None else {"type": value}

    errors = _errors(validate_submission, data, types=types)

    assert errors == {"type": "is required"}


@pytest.mark.parametrize("value", ["unknown", 5, ["ping"], "PING"])
def test_submission_type_must_be_registered(types, value):
    errors = _errors(validate_submission, {"type": value}, types=types)

    assert errors == {"type": "must be one of the registered task types: ping, resize"}


def test_submission_type_unknown_skips_params(types):
    errors = _errors(validate_submission, {"type": "nope", "params": {"x": 1}}, types=types)

    assert set(errors) == {"type"}


def test_submission_params_errors_merged(types):
    errors = _errors(validate_submission, {"type": "resize", "params": {"width": 0}}, types=types)

    assert errors == {"params.width": "must be at least 1"}


@pytest.mark.parametrize(
    "raw, expected", [(5, 5), ("5", 5), (" -100 ", -100), (100, 100), (3.0, 3)],
)
def test_submission_priority_valid(types, raw, expected):
    assert validate_submission({"type": "ping", "priority": raw}, types=types).priority == expected


@pytest.mark.parametrize(
    "raw, message",
    [
        (101, "must be between -100 and 100"),
        (-101, "must be between -100 and 100"),
        (1.5, "must be a whole number"),
        ("high", "must be a whole number"),
        (True, "must be a whole number"),
        ([1], "must be a whole number"),
        (math.inf, "must be a whole number"),
    ],
)
def test_submission_priority_invalid(types, raw, message):
    errors = _errors(validate_submission, {"type": "ping", "priority": raw}, types=types)

    assert errors == {"priority": message}


@pytest.mark.parametrize(
    "raw, expected", [(0, 0.0), ("2.5", 2.5), (MAX_DELAY_SECONDS, float(MAX_DELAY_SECONDS))],
)
def test_submission_delay_valid(types, raw, expected):
    submission = validate_submission({"type": "ping", "delay_seconds": raw}, types=types)

    assert submission.delay_seconds == expected


@pytest.mark.parametrize(
    "raw, message",
    [
        (-1, f"must be at least 0 and at most {MAX_DELAY_SECONDS}"),
        (MAX_DELAY_SECONDS + 1, f"must be at least 0 and at most {MAX_DELAY_SECONDS}"),
        ("soon", "must be a number"),
        (True, "must be a number"),
        (math.nan, "must be a finite number"),
        ("inf", "must be a finite number"),
    ],
)
def test_submission_delay_invalid(types, raw, message):
    errors = _errors(validate_submission, {"type": "ping", "delay_seconds": raw}, types=types)

    assert errors == {"delay_seconds": message}


@pytest.mark.parametrize("raw, expected", [(1, 1), ("3", 3), (100, 100)])
def test_submission_max_attempts_valid(types, raw, expected):
    submission = validate_submission({"type": "ping", "max_attempts": raw}, types=types)

    assert submission.max_attempts == expected


@pytest.mark.parametrize(
    "raw, message",
    [(0, "must be between 1 and 100"), (101, "must be between 1 and 100"),
     (-1, "must be between 1 and 100"), (2.5, "must be a whole number"),
     (False, "must be a whole number")],
)
def test_submission_max_attempts_invalid(types, raw, message):
    errors = _errors(validate_submission, {"type": "ping", "max_attempts": raw}, types=types)

    assert errors == {"max_attempts": message}


@pytest.mark.parametrize(
    "raw, expected", [(0.001, 0.001), ("30", 30.0), (MAX_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS)],
)
def test_submission_timeout_valid(types, raw, expected):
    submission = validate_submission({"type": "ping", "timeout_seconds": raw}, types=types)

    assert submission.timeout_seconds == expected


@pytest.mark.parametrize(
    "raw, message",
    [
        (0, f"must be greater than 0 and at most {MAX_TIMEOUT_SECONDS}"),
        (-5, f"must be greater than 0 and at most {MAX_TIMEOUT_SECONDS}"),
        (MAX_TIMEOUT_SECONDS + 1, f"must be greater than 0 and at most {MAX_TIMEOUT_SECONDS}"),
        ("long", "must be a number"),
        (math.inf, "must be a finite number"),
    ],
)
def test_submission_timeout_invalid(types, raw, message):
    errors = _errors(validate_submission, {"type": "ping", "timeout_seconds": raw}, types=types)

    assert errors == {"timeout_seconds": message}


@pytest.mark.parametrize("raw", ["mail", "a", "A.b-c_9", "q" * 100])
def test_submission_queue_valid(types, raw):
    assert validate_submission({"type": "ping", "queue": raw}, types=types).queue == raw


@pytest.mark.parametrize(
    "raw", ["two words", "q" * 101, "mail/high", "é", "mail\n", "mail\x00", 5, ["mail"]]
)
def test_submission_queue_invalid(types, raw):
    errors = _errors(validate_submission, {"type": "ping", "queue": raw}, types=types)

    assert errors == {"queue": "must be 1 to 100 letters, digits, '_', '.' or '-'"}


def test_submission_idempotency_key_max_length(types):
    key = "k" * MAX_IDEMPOTENCY_KEY_LENGTH

    submission = validate_submission({"type": "ping", "idempotency_key": key}, types=types)

    assert submission.idempotency_key == key


@pytest.mark.parametrize(
    "raw, message",
    [("k" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1), "must be at most 200 characters long"),
     (17, "must be a string"), (["k"], "must be a string"),
     ("a\x00b", "must not contain a NUL character")],
)
def test_submission_idempotency_key_invalid(types, raw, message):
    errors = _errors(validate_submission, {"type": "ping", "idempotency_key": raw}, types=types)

    assert errors == {"idempotency_key": message}


@pytest.mark.parametrize("blank", [None, "", "  "])
def test_submission_blank_optional_fields_use_defaults(types, blank):
    data = {"type": "ping", "priority": blank, "delay_seconds": blank, "max_attempts": blank,
            "timeout_seconds": blank, "queue": blank, "idempotency_key": blank}

    assert validate_submission(data, types=types) == Submission(type="ping", params={})


def test_submission_reports_every_error_at_once(types):
    errors = _errors(validate_submission, {
        "type": "resize",
        "params": {"width": "wide"},
        "priority": 500,
        "delay_seconds": -1,
        "max_attempts": 0,
        "timeout_seconds": 0,
        "queue": "bad queue",
        "idempotency_key": 1,
        "extra": True,
    }, types=types)

    assert set(errors) == {
        "params.width", "priority", "delay_seconds", "max_attempts", "timeout_seconds",
        "queue", "idempotency_key", "extra",
    }


def test_submission_uses_global_registry_by_default():
    import app.handlers  # noqa: F401  (registers the built-in types)

    submission = validate_submission({"type": "sleep", "params": {"seconds": "1"}})

    assert submission.params == {"seconds": 1.0}
