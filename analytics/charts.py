"""Server-side SVG charts for the analytics dashboards: small pure functions that take plain
numbers and labels and return one `<svg>` element as a string.

Why server-side SVG: the admin runs with no CDN or internet, and a chart drawn by the
server is in the page the moment it loads (a headless browser and the Django test client
see the same bars). Every label is XML-escaped (campaign and creative names are the
marketer's free text); every chart carries a `<title>` and `<desc>` for screen readers and
each mark its own `<title>` (a hover tooltip with the exact value). Marks have classes
(`bar`, `point`, `error-bar`) so tests and styles can find them.

No Django here: the admin marks the returned string safe.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

# Django admin's palette, so the charts sit well in its pages.
BAR_COLOUR = "#417690"
CONTROL_COLOUR = "#999999"
NEGATIVE_COLOUR = "#ba2121"
AXIS_COLOUR = "#666666"
FONT = 'font-family="sans-serif" font-size="12"'

_ids = itertools.count(1)

Formatter = Callable[[float], str]


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _px(value: float) -> str:
    """A coordinate as SVG text: two decimals at most, no trailing zeros (stable for tests)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _text(value: str) -> str:
    return escape(str(value), quote=True)


def _open(kind: str, width: float, height: float, title: str, desc: str) -> tuple[str, str]:
    """The opening of a chart: an <svg> labelled by its own <title> and <desc>."""
    # Unique ids: several charts share one page, and aria-labelledby must find its own title.
    uid = f"chart-{kind}-{next(_ids)}"
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" role="img" '
        f'width="{_px(width)}" height="{_px(height)}" viewBox="0 0 {_px(width)} {_px(height)}" '
        f'aria-labelledby="{uid}-title {uid}-desc">'
        f'<title id="{uid}-title">{_text(title)}</title><desc id="{uid}-desc">{_text(desc)}</desc>'
    )
    return head, "</svg>"


# --- funnel ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunnelStep:
    label: str
    customers: int


def funnel_chart(
    steps: Sequence[FunnelStep],
    *,
    title: str = "Funnel",
    width: int = 640,
    bar_height: int = 28,
    gap: int = 22,
    label_width: int = 160,
) -> str:
    """Horizontal bars, one per step, their length proportional to the customers reaching
    it (the first step's bar is full length unless a later step has more, as an `any`
    funnel may); beside each bar its count and % of the first step, and under it the
    drop-off from the previous step."""
    if not steps:
        head, tail = _open("funnel", width, 40, title, "No steps.")
        return f'{head}<text x="8" y="24" {FONT}>No steps.</text>{tail}'
    top = max(max(step.customers for step in steps), 1)
    first = steps[0].customers
    plot = width - label_width - 150  # room for "12,345 (100.0%)" right of the bar
    height = len(steps) * (bar_height + gap) + 8
    desc = "; ".join(
        f"step {i}, {step.label}: {step.customers:,} customers" + (f" ({step.customers / first:.1%})" if first else "")
        for i, step in enumerate(steps, 1)
    )
    head, tail = _open("funnel", width, height, title, desc)
    parts = [head]
    for i, step in enumerate(steps):
        y = 4 + i * (bar_height + gap)
        length = plot * step.customers / top
        share = f" ({step.customers / first:.1%})" if first else ""
        middle = y + bar_height / 2 + 4
        parts.append(
            f'<text class="bar-label" x="{_px(label_width - 8)}" y="{_px(middle)}" text-anchor="end" {FONT}>'
            f"{_text(step.label)}</text>"
            f'<rect class="bar" data-value="{step.customers}" x="{label_width}" y="{_px(y)}" '
            f'width="{_px(length)}" height="{bar_height}" fill="{BAR_COLOUR}">'
            f"<title>{_text(step.label)}: {step.customers:,} customers{share}</title></rect>"
            f'<text class="bar-value" x="{_px(label_width + length + 6)}" y="{_px(middle)}" {FONT}>'
            f"{step.customers:,}{share}</text>"
        )
        if i > 0:
            previous = steps[i - 1].customers
            lost = previous - step.customers
            rate = f" ({lost / previous:.1%})" if previous else ""
            parts.append(
                f'<text class="dropoff" x="{label_width}" y="{_px(y - 6)}" fill="{NEGATIVE_COLOUR}" '
                f'font-family="sans-serif" font-size="11">&#8595; {lost:,} dropped{rate}</text>'
            )
    parts.append(tail)
    return "".join(parts)


# --- plain horizontal bars ---------------------------------------------------------------


def bar_chart(
    bars: Sequence[tuple[str, float]],
    *,
    title: str = "Bars",
    fmt: Formatter = _number,
    colours: Sequence[str] = (BAR_COLOUR, CONTROL_COLOUR),
    width: int = 640,
    bar_height: int = 22,
    gap: int = 10,
    label_width: int = 160,
) -> str:
    """Horizontal bars (label, value >= 0), lengths proportional to the value, the value
    printed beside each; colours cycle (treated blue, control grey)."""
    if not bars:
        head, tail = _open("bars", width, 40, title, "Nothing to show.")
        return f'{head}<text x="8" y="24" {FONT}>Nothing to show.</text>{tail}'
    top = max(max(float(value) for _, value in bars), 0.0) or 1.0
    plot = width - label_width - 110
    height = len(bars) * (bar_height + gap) + gap
    head, tail = _open("bars", width, height, title, "; ".join(f"{label}: {fmt(value)}" for label, value in bars))
    parts = [head]
    for i, (label, value) in enumerate(bars):
        y = gap + i * (bar_height + gap)
        length = plot * max(float(value), 0.0) / top
        middle = y + bar_height / 2 + 4
        parts.append(
            f'<text class="bar-label" x="{_px(label_width - 8)}" y="{_px(middle)}" text-anchor="end" {FONT}>'
            f"{_text(label)}</text>"
            f'<rect class="bar" data-value="{value}" x="{label_width}" y="{_px(y)}" width="{_px(length)}" '
            f'height="{bar_height}" fill="{colours[i % len(colours)]}"><title>{_text(label)}: {_text(fmt(value))}'
            f"</title></rect>"
            f'<text class="bar-value" x="{_px(label_width + length + 6)}" y="{_px(middle)}" {FONT}>'
            f"{_text(fmt(value))}</text>"
        )
    parts.append(tail)
    return "".join(parts)


# --- lift with error bars ----------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    label: str
    estimate: float
    low: float
    high: float


def lift_chart(
    rows: Sequence[Interval],
    *,
    title: str = "Lift",
    fmt: Formatter = _number,
    width: int = 640,
    row_height: int = 44,
    label_width: int = 180,
) -> str:
    """A forest plot: per row a point at the estimate and a horizontal error bar from the
    interval's low to high end, against a dashed zero line. An interval that excludes zero
    is drawn in colour (green above, red below); one that spans zero in grey, so "we can't
    tell" reads differently from a real effect."""
    rows = [row for row in rows if row.low is not None and row.high is not None and row.estimate is not None]
    if not rows:
        head, tail = _open("lift", width, 40, title, "No interval to show.")
        return f'{head}<text x="8" y="24" {FONT}>No interval to show.</text>{tail}'
    low = min(0.0, *(row.low for row in rows))
    high = max(0.0, *(row.high for row in rows))
    span = high - low or 1.0
    low, high = low - span * 0.05, high + span * 0.05  # a margin so end caps are not clipped
    plot_left, plot_right = label_width, width - 16
    height = len(rows) * row_height + 36

    def x(value: float) -> float:
        return plot_left + (value - low) / (high - low) * (plot_right - plot_left)

    desc = "; ".join(
        f"{row.label}: {fmt(row.estimate)}, 95% interval {fmt(row.low)} to {fmt(row.high)}" for row in rows
    )
    head, tail = _open("lift", width, height, title, desc)
    zero = x(0.0)
    parts = [
        head,
        f'<line class="zero" x1="{_px(zero)}" y1="4" x2="{_px(zero)}" y2="{_px(height - 20)}" '
        f'stroke="{AXIS_COLOUR}" stroke-dasharray="4 3"/>',
        f'<text x="{_px(zero)}" y="{_px(height - 6)}" text-anchor="middle" {FONT}>0</text>',
    ]
    for i, row in enumerate(rows):
        y = 4 + i * row_height + row_height / 2
        colour = "#2e7d32" if row.low > 0 else NEGATIVE_COLOUR if row.high < 0 else CONTROL_COLOUR
        interval = f"{fmt(row.estimate)} (95% interval {fmt(row.low)} to {fmt(row.high)})"
        x1, x2 = x(row.low), x(row.high)
        parts.append(
            f'<text class="bar-label" x="{_px(label_width - 8)}" y="{_px(y + 4)}" text-anchor="end" {FONT}>'
            f"{_text(row.label)}</text>"
            f'<g class="error-bar" data-low="{row.low}" data-high="{row.high}" stroke="{colour}" stroke-width="2">'
            f'<line x1="{_px(x1)}" y1="{_px(y)}" x2="{_px(x2)}" y2="{_px(y)}"/>'
            f'<line x1="{_px(x1)}" y1="{_px(y - 6)}" x2="{_px(x1)}" y2="{_px(y + 6)}"/>'
            f'<line x1="{_px(x2)}" y1="{_px(y - 6)}" x2="{_px(x2)}" y2="{_px(y + 6)}"/>'
            f"<title>{_text(row.label)}: {_text(interval)}</title></g>"
            f'<circle class="point" data-value="{row.estimate}" cx="{_px(x(row.estimate))}" cy="{_px(y)}" r="5" '
            f'fill="{colour}"><title>{_text(row.label)}: {_text(interval)}</title></circle>'
            f'<text class="point-value" x="{_px(x(row.estimate))}" y="{_px(y - 10)}" text-anchor="middle" {FONT}>'
            f"{_text(fmt(row.estimate))}</text>"
            f'<text class="interval-end" x="{_px(x1)}" y="{_px(y + 18)}" text-anchor="middle" '
            f'font-family="sans-serif" font-size="10" fill="{AXIS_COLOUR}">{_text(fmt(row.low))}</text>'
            f'<text class="interval-end" x="{_px(x2)}" y="{_px(y + 18)}" text-anchor="middle" '
            f'font-family="sans-serif" font-size="10" fill="{AXIS_COLOUR}">{_text(fmt(row.high))}</text>'
        )
    parts.append(tail)
    return "".join(parts)


# --- daily bars --------------------------------------------------------------------------


def daily_chart(
    points: Sequence[tuple[str, float]],
    *,
    title: str = "Daily",
    fmt: Formatter = _number,
    width: int = 640,
    height: int = 200,
) -> str:
    """Vertical bars, one per day (label, value), heights proportional to the value from a
    zero baseline; negative days (more refunds than revenue) hang below it in red. The
    first and last day are labelled on the axis, the largest value on the left."""
    if not points:
        head, tail = _open("daily", width, 40, title, "No days in the range.")
        return f'{head}<text x="8" y="24" {FONT}>No days in the range.</text>{tail}'
    values = [float(value) for _, value in points]
    top, bottom = max(0.0, *values), min(0.0, *values)
    span = (top - bottom) or 1.0
    left, right, plot_top, plot_bottom = 64, width - 8, 8, height - 24
    plot_height = plot_bottom - plot_top
    baseline = plot_top + plot_height * top / span
    slot = (right - left) / len(points)
    bar_width = min(48.0, max(1.0, slot * 0.8))  # a few days must not become slabs
    desc = "; ".join(f"{label}: {fmt(value)}" for label, value in points)
    head, tail = _open("daily", width, height, title, desc)
    parts = [
        head,
        f'<line class="baseline" x1="{left}" y1="{_px(baseline)}" x2="{right}" y2="{_px(baseline)}" '
        f'stroke="{AXIS_COLOUR}"/>',
        f'<text x="{left - 4}" y="{plot_top + 10}" text-anchor="end" {FONT}>{_text(fmt(top))}</text>',
    ]
    for i, ((label, _), value) in enumerate(zip(points, values, strict=True)):
        size = plot_height * abs(value) / span
        y = baseline - size if value >= 0 else baseline
        parts.append(
            f'<rect class="bar" data-value="{value}" x="{_px(left + i * slot + (slot - bar_width) / 2)}" '
            f'y="{_px(y)}" width="{_px(bar_width)}" height="{_px(size)}" '
            f'fill="{BAR_COLOUR if value >= 0 else NEGATIVE_COLOUR}">'
            f"<title>{_text(label)}: {_text(fmt(value))}</title></rect>"
        )
    first, last = points[0][0], points[-1][0]
    parts.append(f'<text x="{left}" y="{height - 6}" {FONT}>{_text(first)}</text>')
    if len(points) > 1:
        parts.append(f'<text x="{right}" y="{height - 6}" text-anchor="end" {FONT}>{_text(last)}</text>')
    parts.append(tail)
    return "".join(parts)
