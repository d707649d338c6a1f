"""Jinja filters for times, durations and JSON on the pages."""

import json
from datetime import UTC, datetime

from flask import Blueprint
from markupsafe import Markup

from app.tasks import TaskStatus


def utc_text(value: datetime | None) -> str:
    """Format an aware timestamp as "2026-12-04 20:01:30 UTC", or "" for None."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def time_tag(value: datetime | None, empty: str = "–") -> Markup:
    """Render a <time> element whose datetime attribute carries the ISO 8601 form."""
    if value is None:
        return Markup('<span class="muted">{}</span>').format(empty)
    iso = value.astimezone(UTC).isoformat(timespec="seconds")
    return Markup('<time datetime="{}">{}</time>').format(iso, utc_text(value))


def duration_text(seconds: float | None, empty: str = "–") -> str:
    """Format seconds as "0.42 s", "12 s", "3 min 5 s" or "2 h 4 min"."""
    if seconds is None:
        return empty
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def pretty_json(value) -> str:
    """Return `value` as indented JSON; the template escapes it like any other text."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def status_class(status: str) -> str:
    """Return the CSS class that colours a status, e.g. "status-failed"."""
    if status not in {member.value for member in TaskStatus}:
        return "status-unknown"
    return f"status-{status.lower()}"


def register(blueprint: Blueprint) -> None:
    blueprint.add_app_template_filter(utc_text)
    blueprint.add_app_template_filter(time_tag)
    blueprint.add_app_template_filter(duration_text)
    blueprint.add_app_template_filter(pretty_json)
    blueprint.add_app_template_filter(status_class)
