"""Template filters for times, and the TIMEZONE setting they follow.

The filters that read the setting run in an application on each database, so
the times they format come back from SQLite and PostgreSQL alike.
"""

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from app import create_app
from app.settings import ConfigError
from app.tasks import queries, queue
from app.web.filters import exact_time, relative_text, time_tag, zone_label

NOW = datetime(2026, 12, 4, 20, 0, 0, tzinfo=UTC)
WINTER = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
SUMMER = datetime(2026, 7, 15, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("offset, text", [
    (timedelta(0), "now"),
    (timedelta(milliseconds=-400), "now"),
    (timedelta(milliseconds=700), "now"),
    (timedelta(seconds=-1), "1 s ago"),
    (timedelta(seconds=-12.9), "12 s ago"),
    (timedelta(seconds=-59), "59 s ago"),
    (timedelta(seconds=-60), "1 min ago"),
    (timedelta(minutes=-59, seconds=-59), "59 min ago"),
    (timedelta(hours=-2, minutes=-30), "2 h ago"),
    (timedelta(days=-1), "1 d ago"),
    (timedelta(days=-400), "400 d ago"),
    (timedelta(seconds=5), "in 5 s"),
    (timedelta(minutes=3, seconds=20), "in 3 min"),
    (timedelta(hours=5), "in 5 h"),
    (timedelta(days=2, hours=1), "in 2 d"),
])
def test_relative_text_units(offset, text):
    assert relative_text(NOW + offset, NOW) == text


def test_relative_text_ignores_zone_of_value():
    berlin_noon = datetime(2026, 12, 4, 21, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    assert relative_text(berlin_noon, NOW) == "now"


def test_time_tag_none_shows_dash(app):
    assert str(time_tag(None)) == '<span class="muted">–</span>'
    assert str(time_tag(None, "never")) == '<span class="muted">never</span>'


def test_time_tag_markup_in_utc(app):
    html = str(time_tag(NOW - timedelta(seconds=12), now=NOW))
    assert html == ('<time datetime="2026-12-04T19:59:48+00:00" title="2026-12-04 19:59:48 UTC" '
                    'data-relative>12 s ago</time>')


def test_time_tag_title_in_configured_zone(make_app):
    app = make_app(TIMEZONE="Europe/Berlin")
    with app.app_context():
        html = str(time_tag(NOW + timedelta(minutes=3), now=NOW))
    assert 'datetime="2026-12-04T20:03:00+00:00"' in html
    assert 'title="2026-12-04 21:03:00 CET"' in html
    assert ">in 3 min</time>" in html


def test_exact_time_follows_daylight_saving(make_app):
    app = make_app(TIMEZONE="America/New_York")
    with app.app_context():
        assert exact_time(WINTER) == "2026-01-15 07:00:00 EST"
        assert exact_time(SUMMER) == "2026-07-15 08:00:00 EDT"


def test_exact_time_of_none_is_empty(app):
    assert exact_time(None) == ""


def test_zone_label_names_zone_and_offset(make_app):
    app = make_app(TIMEZONE="Asia/Kolkata")
    with app.app_context():
        assert zone_label(WINTER) == "Asia/Kolkata (UTC+05:30)"


def test_zone_label_utc(app):
    assert zone_label(WINTER) == "UTC"


def test_stored_time_shown_in_configured_zone(make_app):
    app = make_app(TIMEZONE="Australia/Sydney")
    with app.app_context():
        task, _ = queue.submit({"type": "noop", "params": {}})
        stored = queries.get_task(task.id).created_at
        client = app.test_client()
        html = client.get(f"/tasks/{task.id}").get_data(as_text=True)
    assert stored.tzinfo is not None
    expected = stored.astimezone(UTC).isoformat(timespec="seconds")
    tag = re.search(rf'<time datetime="{re.escape(expected)}" title="([^"]+)"', html)
    assert tag, "no <time> element for the creation time"
    assert tag.group(1).endswith((" AEDT", " AEST"))
    assert "Times are shown in Australia/Sydney (UTC+1" in html


def test_footer_names_utc_by_default(client):
    html = client.get("/events").get_data(as_text=True)
    assert "Times are shown in UTC." in html


@pytest.mark.parametrize("value", ["Mars/Olympus_Mons", "utc", "", " UTC", "../etc/passwd",
                                   "Europe", 5, None])
def test_timezone_setting_invalid_rejected(tmp_path, value):
    with pytest.raises(ConfigError) as caught:
        create_app({"TESTING": True, "TIMEZONE": value, "EMBEDDED_WORKER": False},
                   instance_path=str(tmp_path))
    message = str(caught.value)
    assert "TIMEZONE (environment variable TASKBOARD_TIMEZONE)" in message
    assert "IANA time zone name" in message
    assert repr(value) in message
    assert "\n" not in message


def test_timezone_setting_read_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKBOARD_TIMEZONE", "Europe/Lisbon")
    app = create_app({"TESTING": True, "EMBEDDED_WORKER": False}, instance_path=str(tmp_path))
    assert app.config["TIMEZONE"] == "Europe/Lisbon"
