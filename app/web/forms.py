"""The dashboard's task submission form, built per task type from its parameters.

The form only renders and collects input. Validation belongs to
app.tasks.submission, which the JSON API shares, so the form passes the raw
values on and attaches the ValidationError messages back to its fields.
"""

from flask import current_app
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    Field,
    FloatField,
    Form,
    FormField,
    HiddenField,
    IntegerField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.widgets import NumberInput

from app.tasks import Param, TaskType, registry
from app.tasks.models import MAX_ATTEMPTS_LIMIT, MAX_PRIORITY

PARAMS_PREFIX = "params"

# Submission fields of the JSON API that the form shows, by their form field name.
SUBMISSION_FIELD_NAMES = ("type", "priority", "delay_seconds", "max_attempts")


class SubmissionForm(FlaskForm):
    """The fields every task type shares; `params` is added per type."""

    type = SelectField("Task type", choices=[], validate_choice=False)
    # The type whose parameter fields the browser showed. When it differs from
    # `type`, the person changed the type without JavaScript and has not seen
    # the new type's fields yet.
    shown_type = HiddenField()
    priority = IntegerField(
        "Priority", default=0,
        description=f"From -{MAX_PRIORITY} to {MAX_PRIORITY}. Higher runs first.",
        render_kw={"min": -MAX_PRIORITY, "max": MAX_PRIORITY, "step": 1},
    )
    delay_seconds = FloatField(
        "Delay (seconds)", default=0, widget=NumberInput(step="any", min=0),
        description="Seconds to wait before the task becomes due.",
    )
    max_attempts = IntegerField(
        "Max attempts",
        description="Empty uses the task type's default.",
        render_kw={"min": 1, "max": MAX_ATTEMPTS_LIMIT, "step": 1, "placeholder": "default"},
    )

    # Messages for submission fields the form does not show, such as an
    # unknown parameter name. The template lists them above the fields.
    form_errors: list[str]

    @property
    def task_type(self) -> TaskType | None:
        return registry.get(self.shown_type.data or "")

    def param_fields(self) -> list[Field]:
        return list(self.params) if hasattr(self, "params") else []

    def submission_data(self) -> dict:
        """Return the input as the fields of the JSON API, raw, for queue.submit."""
        params = {}
        for field in self.param_fields():
            name = field.name.removeprefix(f"{PARAMS_PREFIX}-")
            if isinstance(field, BooleanField):
                params[name] = field.data
            elif isinstance(field, TextAreaField):
                params[name] = _text_area_value(field)
            else:
                params[name] = _raw(field)
        return {
            # The posted value, not the preselected one: a POST without a
            # type must be rejected, not run as whatever the form shows.
            "type": _raw(self.type),
            "params": params,
            "priority": _raw(self.priority),
            "delay_seconds": _raw(self.delay_seconds),
            "max_attempts": _raw(self.max_attempts),
        }

    def attach_errors(self, errors: dict[str, str]) -> None:
        """Show each ValidationError message next to the field it names."""
        params = {field.name.removeprefix(f"{PARAMS_PREFIX}-"): field
                  for field in self.param_fields()}
        for name, message in errors.items():
            field = None
            if name in SUBMISSION_FIELD_NAMES:
                field = self[name]
            elif name.startswith(f"{PARAMS_PREFIX}."):
                field = params.get(name.removeprefix(f"{PARAMS_PREFIX}."))
            if field is not None:
                field.errors = [f"{field.label.text} {message}."]
            else:
                self.form_errors.append(f"{name} {message}.")


def _raw(field: Field) -> str | None:
    """Return the text the person typed, so the domain's checks and messages apply."""
    return field.raw_data[0] if field.raw_data else None


def _text_area_value(field: Field) -> str | None:
    """Return a text area's text with the browser's CRLF line breaks turned into LF.

    HTML forms send every line break in a text area as CRLF, whatever the
    person's system; a handler should see the text as it was typed.
    """
    value = _raw(field)
    return None if value is None else value.replace("\r\n", "\n")


def _param_field(name: str, param: Param) -> Field:
    """Return a WTForms field for one task-type parameter."""
    label = param.label or name.replace("_", " ").capitalize()
    required = param.required and param.default is None
    render_kw: dict = {"required": True} if required else {}
    options = {"label": label, "description": param.help, "default": param.default,
               "render_kw": render_kw}

    if param.choices is not None:
        choices = [SelectChoice(str(choice), str(choice)) for choice in param.choices]
        if not required:
            choices.insert(0, SelectChoice("", "(default)" if param.default is not None else "(none)"))
        default = None if param.default is None else str(param.default)
        return SelectField(choices=choices, validate_choice=False,
                           **{**options, "default": default})

    if param.kind is bool:
        return BooleanField(**{**options, "default": bool(param.default)})

    if param.kind in (int, float):
        bounds = {key: value for key, value in (("min", param.min), ("max", param.max))
                  if value is not None}
        if param.kind is int:
            render_kw.update(bounds, step=1)
            return IntegerField(**options)
        return FloatField(widget=NumberInput(step="any", **bounds), **options)

    if param.max_length is not None:
        render_kw["maxlength"] = param.max_length
    if param.min_length is not None and required:
        render_kw["minlength"] = param.min_length
    if param.multiline:
        render_kw.setdefault("rows", 6)
        return TextAreaField(**options)
    return StringField(**options)


def _params_form_class(task_type: TaskType) -> type[Form]:
    fields = {name: _param_field(name, param) for name, param in task_type.params.items()}
    return type(f"{task_type.name}ParamsForm", (Form,), fields)


def default_type_name() -> str | None:
    """Return the type the form shows first: DEFAULT_TASK_TYPE if registered, else the first."""
    preferred = current_app.config.get("DEFAULT_TASK_TYPE")
    if preferred in registry:
        return preferred
    names = registry.names()
    return names[0] if names else None


def build_submission_form(type_name: str | None = None, *, fresh: bool = False,
                          keep_params: bool = True) -> SubmissionForm:
    """Build the submission form with the parameter fields of one task type.

    `type_name` picks the fields. An unknown or missing name falls back to the
    first registered type, which is also what a browser preselects when the
    select contains no matching option. On a POST the fields hold the posted
    values, unless `fresh` asks for defaults everywhere or `keep_params` is
    false, which resets only the parameters (those of a type the person has
    not seen yet).
    """
    task_type = registry.get(type_name or "") or registry.get(default_type_name() or "")
    attributes = {}
    if task_type is not None and task_type.params:
        attributes["params"] = FormField(_params_form_class(task_type), label="Parameters")
    form_class = type("TaskSubmissionForm", (SubmissionForm,), attributes)

    # FlaskForm reads the request's form on a POST unless formdata is None.
    form = form_class(formdata=None) if fresh else form_class()
    form.form_errors = []
    form.type.choices = [SelectChoice(name, name) for name in registry.names()]
    if task_type is not None:
        form.shown_type.data = task_type.name
        if fresh or not form.type.data:
            form.type.data = task_type.name
        if not keep_params and "params" in attributes:
            form.params.form.process(formdata=None)
    return form


def field_attributes(field: Field, extra: dict | None = None) -> dict:
    """Return the HTML attributes that tie a field to its hint and error message."""
    attributes = dict(extra or {})
    described_by = []
    if field.description:
        described_by.append(f"{field.id}-hint")
    if field.errors:
        described_by.append(f"{field.id}-error")
        attributes["aria-invalid"] = "true"
    if described_by:
        attributes["aria-describedby"] = " ".join(described_by)
    return attributes


def type_defaults(task_type: TaskType) -> dict:
    """Return the max attempts and timeout a task of this type gets unless the form sets them."""
    config = current_app.config
    return {
        "max_attempts": task_type.max_attempts or config["DEFAULT_MAX_ATTEMPTS"],
        "timeout_seconds": task_type.timeout_seconds or config["DEFAULT_TIMEOUT_SECONDS"],
    }
