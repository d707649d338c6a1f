"""SVG charts: scales, shapes, escaping and text alternatives."""

import math
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask

from app.tasks.stats import MinuteCount, QueueDepth, TimingReport, TypeTimings
from app.web import charts

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 3, 2, 11, 31, tzinfo=UTC)


@pytest.fixture(autouse=True)
def app_context():
    app = Flask(__name__)
    app.config["TIMEZONE"] = "UTC"
    with app.app_context():
        yield app


def _parse(chart) -> ElementTree.Element:
    return ElementTree.fromstring(str(chart.svg))


def _minutes(values: dict[int, tuple[int, int]]) -> list[MinuteCount]:
    return [MinuteCount(minute=START + timedelta(minutes=index),
                        succeeded=values.get(index, (0, 0))[0], failed=values.get(index, (0, 0))[1])
            for index in range(60)]


def _timings(name, count, run, wait) -> TypeTimings:
    return TypeTimings(type=name, count=count, run_seconds=dict(zip((50, 95, 99), run, strict=True)),
                       wait_seconds=dict(zip((50, 95, 99), wait, strict=True)))


def _report(types) -> TimingReport:
    return TimingReport(since=START, until=START + timedelta(hours=1),
                        sample_size=sum(t.count for t in types), limit=5000, types=types)


# Scales and text


@pytest.mark.parametrize(("maximum", "whole", "expected"), [
    (0, True, [0, 1]),
    (3, True, [0, 1, 2, 3]),
    (7, True, [0, 2, 4, 6, 8]),
    (100, True, [0, 50, 100]),
    (101, True, [0, 50, 100, 150]),
    (0.3, False, [0, 0.1, 0.2, 0.30000000000000004]),
])
def test_axis_ticks_cover_maximum(maximum, whole, expected):
    ticks = charts.axis_ticks(maximum, whole=whole)

    assert ticks == pytest.approx(expected)
    assert ticks[-1] >= maximum


def test_axis_ticks_step_is_one_two_or_five():
    for maximum in (9, 33, 480, 12_345, 0.07):
        ticks = charts.axis_ticks(maximum)
        step = ticks[1] - ticks[0]
        leading = step / 10 ** math.floor(math.log10(step))
        assert round(leading, 6) in {1, 2, 5}, (maximum, step)


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0004, "400 µs"),
    (0.012, "12 ms"),
    (1.25, "1.25 s"),
    (185, "3 min 5 s"),
    (0, "0 s"),
    (None, "–"),
])
def test_seconds_text_formats(seconds, text):
    assert charts.seconds_text(seconds) == text


# Finished per minute


def test_finished_chart_draws_one_bar_per_outcome():
    chart = charts.finished_chart(_minutes({0: (4, 0), 10: (2, 2), 59: (0, 1)}))

    rects = _parse(chart).findall(f"{SVG}rect")
    classes = [rect.get("class") for rect in rects]
    assert classes.count("chart-bar-succeeded") == 2
    assert classes.count("chart-bar-failed") == 2


def test_finished_chart_bar_heights_follow_counts():
    chart = charts.finished_chart(_minutes({0: (4, 0), 1: (2, 0)}))

    heights = [float(rect.get("height")) for rect in _parse(chart).findall(f"{SVG}rect")]
    assert heights[0] == pytest.approx(2 * heights[1])


def test_finished_chart_stacks_failed_on_succeeded():
    chart = charts.finished_chart(_minutes({5: (3, 1)}))

    succeeded, failed = _parse(chart).findall(f"{SVG}rect")
    assert float(failed.get("y")) + float(failed.get("height")) == pytest.approx(float(succeeded.get("y")))


def test_finished_chart_text_alternative():
    chart = charts.finished_chart(_minutes({10: (30, 10), 20: (5, 0)}))
    svg = _parse(chart)

    assert svg.get("role") == "img"
    assert svg.find(f"{SVG}title").text == chart.title
    assert svg.find(f"{SVG}desc").text == chart.summary
    assert svg.get("aria-labelledby") == f"{chart.id}-title"
    assert "35 tasks succeeded and 10 failed (22.2% failed)" in chart.summary
    assert "busiest minute was 11:41, with 40 finished" in chart.summary
    assert chart.columns == ["Minute", "Succeeded", "Failed"]
    assert len(chart.rows) == 60
    assert chart.rows[10] == ["11:41", "30", "10"]


def test_finished_chart_without_tasks_says_so():
    chart = charts.finished_chart(_minutes({}))

    assert chart.summary == "No task succeeded or failed in the last hour."
    assert _parse(chart).findall(f"{SVG}rect") == []


def test_finished_chart_labels_minutes_in_display_zone(app_context):
    app_context.config["TIMEZONE"] = "Asia/Kolkata"

    chart = charts.finished_chart(_minutes({0: (1, 0)}))

    assert chart.rows[0][0] == "17:01"


# Queue depth


def test_depth_chart_draws_line_per_queue():
    minutes = [START + timedelta(minutes=index) for index in range(3)]
    depth = QueueDepth(minutes=minutes, waiting={"mail": [1, 2, 3], "reports": [0, 0, 4]})

    chart = charts.depth_chart(depth, start=START, end=START + timedelta(minutes=59))

    lines = _parse(chart).findall(f"{SVG}polyline")
    assert len(lines) == 2
    assert [title.text for line in lines for title in line.findall(f"{SVG}title")] == ["mail", "reports"]
    assert chart.columns == ["Minute", "mail", "reports"]
    assert chart.rows[2] == ["11:33", "3", "4"]
    assert [label for _, label in chart.legend] == ["mail", "reports"]


def test_depth_chart_breaks_line_at_missing_minutes():
    minutes = [START, START + timedelta(minutes=1), START + timedelta(minutes=5)]
    depth = QueueDepth(minutes=minutes, waiting={"mail": [1, 2, 3]})

    svg = _parse(charts.depth_chart(depth, start=START, end=START + timedelta(minutes=59)))

    assert len(svg.findall(f"{SVG}polyline")) == 1
    assert len(svg.findall(f"{SVG}circle")) == 1


def test_depth_chart_draws_highest_queues_only():
    names = [f"q{index:02d}" for index in range(12)]
    depth = QueueDepth(minutes=[START], waiting={name: [index] for index, name in enumerate(names)})

    chart = charts.depth_chart(depth, start=START, end=START + timedelta(minutes=59))

    assert chart.columns[1:] == names[4:]
    assert "4 more queues with lower peaks are not drawn" in chart.note


def test_depth_chart_escapes_queue_names():
    depth = QueueDepth(minutes=[START], waiting={"<b>&x": [2]})

    chart = charts.depth_chart(depth, start=START, end=START + timedelta(minutes=59))

    assert "<b>" not in str(chart.svg)
    assert "&lt;b&gt;&amp;x" in str(chart.svg)
    assert _parse(chart).find(f"{SVG}circle/{SVG}title").text == "<b>&x"


def test_depth_chart_without_samples_says_so():
    chart = charts.depth_chart(QueueDepth(minutes=[], waiting={}), start=START,
                               end=START + timedelta(minutes=59))

    assert chart.summary == "No queue depth samples in the last hour."
    assert chart.rows == []


# Percentiles


def test_timing_charts_bar_widths_follow_values():
    report = _report([_timings("mail.send", 10, (1.0, 2.0, 4.0), (0.1, 0.2, 0.3))])

    run, wait = charts.timing_charts(report)

    widths = [float(rect.get("width")) for rect in _parse(run).findall(f"{SVG}rect")]
    assert widths[1] == pytest.approx(2 * widths[0])
    assert widths[2] == pytest.approx(4 * widths[0])
    assert "mail.send has the highest p99: 4.00 s" in run.summary
    assert "mail.send has the highest p99: 300 ms" in wait.summary


def test_timing_table_lists_every_type():
    types = [_timings(f"type{index:02d}", index + 1, (0.5, 1.0, 2.0), (0.0, 0.1, 0.2))
             for index in range(15)]

    run, _ = charts.timing_charts(_report(types))
    columns, rows = charts.timing_table(_report(types))

    assert len(rows) == 15
    assert columns == ["Type", "Tasks", "Run p50", "Run p95", "Run p99",
                       "Wait p50", "Wait p95", "Wait p99"]
    assert rows[0] == ["type00", "1", "500 ms", "1.00 s", "2.00 s", "0 s", "100 ms", "200 ms"]
    drawn = [label.text for label in _parse(run).findall(f"{SVG}text")
             if label.text and label.text.startswith("type")]
    assert len(drawn) == charts.MAX_TYPE_ROWS
    assert "type00" not in drawn


def test_timing_charts_without_tasks_say_so():
    run, wait = charts.timing_charts(_report([]))

    assert run.summary == "No task succeeded or failed in the last hour."
    assert _parse(wait).findall(f"{SVG}rect") == []


def test_charts_have_no_style_attributes():
    depth = QueueDepth(minutes=[START, START + timedelta(minutes=1)], waiting={"mail": [1, 2]})
    built = [
        charts.finished_chart(_minutes({3: (1, 1)})),
        charts.depth_chart(depth, start=START, end=START + timedelta(minutes=59)),
        *charts.timing_charts(_report([_timings("a", 1, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0))])),
    ]

    for chart in built:
        for element in _parse(chart).iter():
            assert "style" not in element.attrib, (chart.id, element.tag)


@pytest.mark.parametrize(("maximum", "expected"), [
    (0.3, [0, 0.1, 0.2, 0.30000000000000004]),
    (7, [0, 2, 4, 6, 8]),
    (130, [0, 60, 120, 180]),
    (3000, [0, 900, 1800, 2700, 3600]),
])
def test_duration_ticks_use_clock_steps(maximum, expected):
    assert charts.duration_ticks(maximum) == pytest.approx(expected)
