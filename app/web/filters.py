"""Jinja filters for times, durations and JSON on the pages.

Times show relative to now ("12 s ago", "in 3 min") inside a <time> element
whose datetime attribute carries the UTC instant and whose title carries the
exact time in the zone that the TIMEZONE setting names. The same zone applies
on every page, whichever database stored the time.
"""

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app
from markupsafe import Markup

from app.tasks import TaskStatus

EXACT_FORMAT = "%Y-%m-%d %H:%M:%S %Z"


def display_zone() -> ZoneInfo:
    """Return the zone of the TIMEZONE setting, which check_settings validated at start-up."""
    return ZoneInfo(current_app.config.get("TIMEZONE") or "UTC")


def zone_label(now: datetime | None = None) -> str:
    """Name the display zone for a page footer: "UTC" or "Europe/Berlin (UTC+01:00)"."""
    zone = display_zone()
    if zone.key == "UTC":
        return "UTC"
    offset = (now or datetime.now(UTC)).astimezone(zone).strftime("%z")
    return f"{zone.key} (UTC{offset[:3]}:{offset[3:]})"


def utc_text(value: datetime | None) -> str:
    """Format an aware timestamp as "2026-12-04 20:01:30 UTC", or "" for None."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def exact_time(value: datetime | None) -> str:
    """Format an aware timestamp in the display zone, e.g. "2026-12-04 21:01:30 CET"."""
    if value is None:
        return ""
    return value.astimezone(display_zone()).strftime(EXACT_FORMAT)


def relative_text(value: datetime, now: datetime) -> str:
    """Describe `value` relative to `now`: "now", "12 s ago", "in 3 min", "2 h ago", "5 d ago".

    Each unit counts whole units, rounded down, so that a text never runs
    ahead of the clock. taskboard.js formats the same way between refreshes.
    """
    seconds = int((value - now).total_seconds())
    magnitude = abs(seconds)
    if magnitude < 1:
        return "now"
    if magnitude < 60:
        amount = f"{magnitude} s"
    elif magnitude < 3600:
        amount = f"{magnitude // 60} min"
    elif magnitude < 86400:
        amount = f"{magnitude // 3600} h"
    else:
        amount = f"{magnitude // 86400} d"
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def time_tag(value: datetime | None, empty: str = "–", now: datetime | None = None) -> Markup:
    """Render a <time> element: relative text, exact time in the title, UTC instant in datetime.

    taskboard.js finds these elements by their data-relative attribute and
    keeps the relative text current between refreshes.
    """
    if value is None:
        return Markup('<span class="muted">{}</span>').format(empty)
    iso = value.astimezone(UTC).isoformat(timespec="seconds")
    text = relative_text(value, now or datetime.now(UTC))
    return Markup('<time datetime="{}" title="{}" data-relative>{}</time>').format(
        iso, exact_time(value), text)


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
    blueprint.add_app_template_filter(exact_time)
    blueprint.add_app_template_filter(time_tag)
    blueprint.add_app_template_filter(duration_text)
    blueprint.add_app_template_filter(pretty_json)
    blueprint.add_app_template_filter(status_class)
    blueprint.add_app_template_global(zone_label)
