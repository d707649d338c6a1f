"""Server-rendered SVG charts: tasks finished per minute, queue depth, and time percentiles.

Each builder returns a Chart: the <svg> markup, a summary sentence, and the
rows of a table with the numbers drawn, which the page shows in a <details>
element as the chart's text alternative. The <svg> carries role="img" with
the title and the summary as its accessible name and description.

Colours come from classes defined in taskboard.css, because the
Content-Security-Policy forbids style attributes. Every value that reaches
the markup is escaped by markupsafe, queue and type names included.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from markupsafe import Markup, escape

from app.tasks.stats import PERCENTILES, MinuteCount, QueueDepth, TimingReport

from .filters import display_zone, duration_text

WIDTH = 720
HEIGHT = 220
MARGIN_LEFT = 56
MARGIN_RIGHT = 16
MARGIN_TOP = 12
MARGIN_BOTTOM = 28
# Queue lines and task-type rows drawn at most; the tables list all of them.
MAX_SERIES = 8
MAX_TYPE_ROWS = 12
TYPE_ROW_HEIGHT = 30
# The percentile charts sit two side by side, so they are drawn narrower
# to keep their text about as large as the full-width charts' text.
PERCENTILE_WIDTH = 480
PERCENTILE_LABEL_WIDTH = 110
Y_TICK_TARGET = 4


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    svg: Markup
    summary: str
    columns: list[str]
    rows: list[list[str]]
    # (CSS class, label) pairs for the legend under the chart.
    legend: list[tuple[str, str]] = field(default_factory=list)
    note: str | None = None


# Scales and text


def axis_ticks(maximum: float, *, whole: bool = False, target: int = Y_TICK_TARGET) -> list[float]:
    """Return evenly spaced ticks from 0 that cover `maximum`, at a step of 1, 2 or 5 times a power of 10.

    With `whole`, the step is at least 1, for counts.
    """
    if maximum <= 0 or not math.isfinite(maximum):
        maximum = 1
    raw_step = maximum / target
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw_step)
    if whole:
        step = max(1, round(step))
    count = math.ceil(maximum / step - 1e-9)
    return [index * step for index in range(count + 1)]


# Tick steps of a duration axis from one second up: whole seconds, minutes
# and hours that a reader adds up at a glance. Below a second, axis_ticks
# steps by 1, 2 or 5 times a power of 10.
DURATION_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
                  3600, 7200, 10800, 21600, 43200, 86400)


def duration_ticks(maximum: float, *, target: int = Y_TICK_TARGET) -> list[float]:
    """Return evenly spaced ticks in seconds from 0 that cover `maximum`."""
    if maximum / target < 1:
        return axis_ticks(maximum, target=target)
    raw_step = maximum / target
    step = next((step for step in DURATION_STEPS if step >= raw_step), None)
    if step is None:
        step = math.ceil(raw_step / DURATION_STEPS[-1]) * DURATION_STEPS[-1]
    count = math.ceil(maximum / step - 1e-9)
    return [float(index * step) for index in range(count + 1)]


def seconds_text(seconds: float | None) -> str:
    """Format a duration for a chart: "850 µs", "12 ms", "1.25 s", "3 min 5 s"."""
    if seconds is None:
        return "–"
    if seconds == 0:
        return "0 s"
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return duration_text(seconds)


def count_text(value: float) -> str:
    return f"{round(value):,}"


def counted(count: int, noun: str) -> str:
    """Return "1 task" or "2,500 tasks": the count with the noun in singular or plural."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def minute_text(moment: datetime) -> str:
    """Format a minute as "14:05" in the display zone."""
    return moment.astimezone(display_zone()).strftime("%H:%M")


def _number(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _tag(name: str, content=None, **attributes) -> Markup:
    """Render one SVG element; a trailing "_" in an attribute name is dropped and "_" becomes "-".

    Strings are escaped and numbers written as they are. Plain string joins
    cost far less than Markup.format per attribute in charts of hundreds of elements.
    """
    parts = [f"<{name}"]
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, float):
            text = _number(value)
        elif isinstance(value, int):
            text = str(value)
        else:
            text = escape(value)
        parts.append(f' {key.rstrip("_").replace("_", "-")}="{text}"')
    parts.append("/>" if content is None else f">{escape(content)}</{name}>")
    return Markup("".join(parts))


def _svg(chart_id: str, title: str, summary: str, height: float, body: list[Markup], *,
         width: int = WIDTH) -> Markup:
    return _tag(
        "svg",
        Markup("".join([
            _tag("title", title, id=f"{chart_id}-title"),
            _tag("desc", summary, id=f"{chart_id}-desc"),
            *body,
        ])),
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {width} {_number(height)}",
        class_="chart-svg",
        role="img",
        aria_labelledby=f"{chart_id}-title",
        aria_describedby=f"{chart_id}-desc",
        preserveAspectRatio="xMidYMid meet",
    )


def _value_axis(ticks: list[float], label: Callable[[float], str], *, top: float,
                bottom: float) -> list[Markup]:
    """Draw horizontal grid lines with their labels on the left, for ticks from bottom to top."""
    elements = []
    highest = ticks[-1]
    for tick in ticks:
        y = bottom - (bottom - top) * tick / highest
        elements.append(_tag("line", x1=float(MARGIN_LEFT), x2=float(WIDTH - MARGIN_RIGHT),
                             y1=y, y2=y, class_="chart-grid"))
        elements.append(_tag("text", label(tick), x=float(MARGIN_LEFT - 6), y=y + 4,
                             class_="chart-label", text_anchor="end"))
    return elements


# Tasks finished per minute


def finished_chart(minutes: list[MinuteCount]) -> Chart:
    """Build stacked bars of the tasks that succeeded and failed in each minute."""
    chart_id = "chart-finished"
    title = "Tasks finished per minute, last hour"
    succeeded = sum(minute.succeeded for minute in minutes)
    failed = sum(minute.failed for minute in minutes)
    summary = _finished_summary(minutes, succeeded, failed)

    top, bottom = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    ticks = axis_ticks(max((m.succeeded + m.failed for m in minutes), default=0), whole=True)
    scale = (bottom - top) / ticks[-1]
    band = (WIDTH - MARGIN_LEFT - MARGIN_RIGHT) / max(1, len(minutes))
    body = _value_axis(ticks, count_text, top=top, bottom=bottom)

    for index, minute in enumerate(minutes):
        x = MARGIN_LEFT + index * band + band * 0.1
        label = minute_text(minute.minute)
        base = float(bottom)
        for value, css_class, word in ((minute.succeeded, "chart-bar-succeeded", "succeeded"),
                                       (minute.failed, "chart-bar-failed", "failed")):
            if not value:
                continue
            height = value * scale
            base -= height
            body.append(_tag("rect", _tag("title", f"{label}: {value:,} {word}"),
                             x=x, y=base, width=band * 0.8, height=height, class_=css_class))
        if index % 10 == 0 or index == len(minutes) - 1:
            body.append(_tag("text", label, x=x + band * 0.4, y=float(HEIGHT - 8),
                             class_="chart-label", text_anchor="middle"))

    rows = [[minute_text(m.minute), f"{m.succeeded:,}", f"{m.failed:,}"] for m in minutes]
    return Chart(
        id=chart_id, title=title, svg=_svg(chart_id, title, summary, HEIGHT, body),
        summary=summary, columns=["Minute", "Succeeded", "Failed"], rows=rows,
        legend=[("chart-key-succeeded", "Succeeded"), ("chart-key-failed", "Failed")],
        note="The last minute is still in progress.",
    )


def _finished_summary(minutes: list[MinuteCount], succeeded: int, failed: int) -> str:
    if not succeeded and not failed:
        return "No task succeeded or failed in the last hour."
    busiest = max(minutes, key=lambda minute: minute.succeeded + minute.failed)
    share = failed / (succeeded + failed) * 100
    return (f"In the last hour {counted(succeeded, 'task')} succeeded and {failed:,} failed "
            f"({share:.1f}% failed). The busiest minute was {minute_text(busiest.minute)}, "
            f"with {busiest.succeeded + busiest.failed:,} finished.")


# Queue depth


def depth_chart(depth: QueueDepth, *, start: datetime, end: datetime) -> Chart:
    """Build one line per queue of the tasks waiting at each sampled minute between start and end.

    A line breaks where minutes were not sampled, so a gap shows as a gap
    and not as a straight line across it. The queues with the highest peaks
    are drawn, up to MAX_SERIES; the table lists those same queues.
    """
    chart_id = "chart-depth"
    title = "Waiting tasks per queue, last hour"
    drawn = sorted(depth.waiting, key=lambda name: (-max(depth.waiting[name]), name))[:MAX_SERIES]
    drawn.sort()
    summary = _depth_summary(depth, drawn)

    top, bottom = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    ticks = axis_ticks(depth.peak, whole=True)
    span = max((end - start).total_seconds(), 1.0)

    def x_of(moment: datetime) -> float:
        return left + (right - left) * (moment - start).total_seconds() / span

    def y_of(value: int) -> float:
        return bottom - (bottom - top) * value / ticks[-1]

    body = _value_axis(ticks, count_text, top=top, bottom=bottom)
    for offset in range(0, int(span // 60) + 1, 10):
        moment = start + timedelta(minutes=offset)
        body.append(_tag("text", minute_text(moment), x=x_of(moment), y=float(HEIGHT - 8),
                         class_="chart-label", text_anchor="middle"))

    for index, name in enumerate(drawn):
        css_class = f"chart-line chart-series-{index}"
        for segment in _segments(depth.minutes, depth.waiting[name]):
            points = [(x_of(minute), y_of(value)) for minute, value in segment]
            if len(points) == 1:
                x, y = points[0]
                body.append(_tag("circle", _tag("title", name), cx=x, cy=y, r=2.5,
                                 class_=f"chart-dot chart-series-{index}"))
                continue
            body.append(_tag("polyline", _tag("title", name),
                             points=" ".join(f"{_number(x)},{_number(y)}" for x, y in points),
                             class_=css_class))

    rows = [[minute_text(minute), *(f"{depth.waiting[name][position]:,}" for name in drawn)]
            for position, minute in enumerate(depth.minutes)]
    hidden = len(depth.waiting) - len(drawn)
    note = ("Samples come from workers, once a minute; a minute without a running worker has "
            "none.")
    if hidden:
        note += f" {hidden} more queues with lower peaks are not drawn."
    return Chart(
        id=chart_id, title=title, svg=_svg(chart_id, title, summary, HEIGHT, body),
        summary=summary, columns=["Minute", *drawn], rows=rows,
        legend=[(f"chart-key-series-{index}", name) for index, name in enumerate(drawn)],
        note=note,
    )


def _segments(minutes: list[datetime], values: list[int]) -> list[list[tuple[datetime, int]]]:
    """Split a series into runs of consecutive minutes."""
    segments: list[list[tuple[datetime, int]]] = []
    previous = None
    for minute, value in zip(minutes, values, strict=True):
        if previous is None or minute - previous > timedelta(minutes=1):
            segments.append([])
        segments[-1].append((minute, value))
        previous = minute
    return segments


def _depth_summary(depth: QueueDepth, drawn: list[str]) -> str:
    if not depth.minutes:
        return "No queue depth samples in the last hour."
    latest = depth.minutes[-1]
    now_parts = ", ".join(f"{name} {depth.waiting[name][-1]:,}" for name in drawn)
    peak_name = max(drawn, key=lambda name: max(depth.waiting[name]))
    peak_values = depth.waiting[peak_name]
    peak_at = depth.minutes[peak_values.index(max(peak_values))]
    return (f"{counted(len(depth.minutes), 'sample')}. Waiting at {minute_text(latest)}: {now_parts}. "
            f"The highest was {peak_name}, with {max(peak_values):,} at {minute_text(peak_at)}.")


# Run and wait time percentiles


def timing_charts(report: TimingReport) -> tuple[Chart, Chart]:
    """Build horizontal bars of the p50, p95 and p99 run time and wait time of each task type."""
    drawn = sorted(report.types, key=lambda timings: (-timings.count, timings.type))[:MAX_TYPE_ROWS]
    drawn.sort(key=lambda timings: timings.type)
    run = _percentile_chart("chart-run-time", "Run time per task type", drawn,
                            lambda timings: timings.run_seconds, report)
    wait = _percentile_chart("chart-wait-time", "Wait time per task type", drawn,
                             lambda timings: timings.wait_seconds, report)
    return run, wait


def timing_table(report: TimingReport) -> tuple[list[str], list[list[str]]]:
    """Return the columns and rows of the percentile table, one row per task type."""
    columns = ["Type", "Tasks",
               *(f"Run p{rank}" for rank in PERCENTILES), *(f"Wait p{rank}" for rank in PERCENTILES)]
    rows = [[timings.type, f"{timings.count:,}",
             *(seconds_text(timings.run_seconds[rank]) for rank in PERCENTILES),
             *(seconds_text(timings.wait_seconds[rank]) for rank in PERCENTILES)]
            for timings in report.types]
    return columns, rows


def _percentile_chart(chart_id: str, title: str, drawn, values_of, report: TimingReport) -> Chart:
    left, right = PERCENTILE_LABEL_WIDTH, PERCENTILE_WIDTH - MARGIN_RIGHT
    height = MARGIN_TOP + max(1, len(drawn)) * TYPE_ROW_HEIGHT + MARGIN_BOTTOM
    bottom = height - MARGIN_BOTTOM
    ticks = duration_ticks(max((values_of(t)[PERCENTILES[-1]] for t in drawn), default=0))
    scale = (right - left) / ticks[-1]

    body = []
    for index, tick in enumerate(ticks):
        x = left + tick * scale
        body.append(_tag("line", x1=x, x2=x, y1=float(MARGIN_TOP), y2=float(bottom),
                         class_="chart-grid"))
        # The last label ends at its grid line, so that it stays inside the chart.
        anchor = "end" if index == len(ticks) - 1 else "middle"
        body.append(_tag("text", seconds_text(tick), x=x, y=float(height - 8),
                         class_="chart-label", text_anchor=anchor))
    bar_height = (TYPE_ROW_HEIGHT - 6) / len(PERCENTILES)
    for row, timings in enumerate(drawn):
        y = MARGIN_TOP + row * TYPE_ROW_HEIGHT + 3
        body.append(_tag("text", _shorten(timings.type), x=float(left - 8),
                         y=y + TYPE_ROW_HEIGHT / 2 + 1, class_="chart-label", text_anchor="end"))
        for index, rank in enumerate(PERCENTILES):
            value = values_of(timings)[rank]
            body.append(_tag(
                "rect", _tag("title", f"{timings.type} p{rank}: {seconds_text(value)}"),
                x=float(left), y=y + index * bar_height, width=max(0.5, value * scale),
                height=bar_height - 1, class_=f"chart-bar-p{rank}"))

    if drawn:
        slowest = max(drawn, key=lambda timings: values_of(timings)[PERCENTILES[-1]])
        summary = (f"Over {counted(report.sample_size, 'task')} that finished in the last hour, "
                   f"{slowest.type} has the highest p{PERCENTILES[-1]}: "
                   f"{seconds_text(values_of(slowest)[PERCENTILES[-1]])}.")
    else:
        summary = "No task succeeded or failed in the last hour."
    return Chart(
        id=chart_id, title=title,
        svg=_svg(chart_id, title, summary, height, body, width=PERCENTILE_WIDTH),
        summary=summary, columns=[], rows=[],
        legend=[(f"chart-key-p{rank}", f"p{rank}") for rank in PERCENTILES],
    )


def _shorten(text: str, limit: int = 16) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
