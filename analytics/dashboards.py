"""What the admin dashboards show: the campaign dashboard and the funnel report, as plain
dicts of display-ready values and SVG charts, built from the analytics services' answers.

The numbers come from the services only: a dashboard asks analytics.reports.report_request
for a report run (ROI: analytics.roi.campaign_roi; funnels:
analytics.services.funnel_compute), so it answers from the cache the nightly refresh
fills, runs under the reports' statement timeout, and leaves a large report to a Celery
task while the page waits for it. This module formats the results (money in the reporting
currency, rates as percentages, intervals as text) and draws the charts, so the admin
views stay thin and the Django test client and a real browser see the same page.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils.safestring import SafeString, mark_safe

from analytics import charts
from analytics.funnels import FunnelSpecInvalid
from analytics.models import ReportRun
from analytics.reports import report_request
from analytics.services import funnel_validate

DASH = "—"


# --- formatting --------------------------------------------------------------------------


def money(value: Any) -> str:
    """Money in the reporting currency, "1,234.50 USD"; a dash for None."""
    if value is None:
        return DASH
    return f"{Decimal(str(value)):,.2f} {settings.REPORTING_CURRENCY}"


def signed_money(value: Any) -> str:
    if value is None:
        return DASH
    return f"{Decimal(str(value)):+,.2f} {settings.REPORTING_CURRENCY}"


def percent(value: Any, places: int = 2) -> str:
    """A ratio as a percentage: 0.1234 -> "12.34%"."""
    if value is None:
        return DASH
    return f"{float(value) * 100:,.{places}f}%"


def points(value: Any) -> str:
    """A difference of two rates in percentage points: 0.05 -> "+5.00 pp"."""
    if value is None:
        return DASH
    return f"{float(value) * 100:+,.2f} pp"


def times(value: Any) -> str:
    """ROAS: 2.5 -> "2.50x"."""
    if value is None:
        return DASH
    return f"{float(value):,.2f}x"


def count(value: Any) -> str:
    return DASH if value is None else f"{int(value):,}"


def p_value(value: Any) -> str:
    if value is None:
        return DASH
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def duration(seconds: Any) -> str:
    """A time to convert: "45 s", "12.5 min", "3.2 h", "2.1 d"."""
    if seconds is None:
        return DASH
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _safe(svg: str) -> SafeString:
    # charts.py escapes every label it draws; the SVG is markup to embed as is.
    return mark_safe(svg)


# --- report runs -------------------------------------------------------------------------


def roi_run(
    campaign_id: int, *, goal: str | None = None, window_days: int | None = None, refresh: bool = False
) -> ReportRun:
    """The report run answering the campaign's ROI and lift (analytics.roi.campaign_roi;
    goal and window: the campaign's own unless given): cached, just computed, or queued."""
    params: dict[str, Any] = {"campaign": campaign_id}
    if goal:
        params["goal"] = goal
    if window_days is not None:
        params["window_days"] = window_days
    return report_request(ReportRun.Kind.ROI, params, refresh=refresh)


# --- campaign dashboard ------------------------------------------------------------------


def _lift_text(lift: dict | None, fmt: Callable[[Any], str]) -> str:
    """A lift as text, "+5.00 pp (95% CI +1.20 pp to +8.80 pp; p = 0.012)", or why there is none."""
    if not lift or lift.get("absolute") is None:
        return (lift or {}).get("reason") or "not measurable"
    text = fmt(lift["absolute"])
    if lift.get("ci_low") is not None and lift.get("ci_high") is not None:
        text += f" (95% CI {fmt(lift['ci_low'])} to {fmt(lift['ci_high'])}; {p_value(lift.get('p_value'))})"
    return text


def _relative_text(lift: dict | None) -> str:
    if not lift or lift.get("relative") is None:
        return DASH
    text = f"{lift['relative'] * 100:+,.1f}%"
    low, high = lift.get("relative_ci_low"), lift.get("relative_ci_high")
    if low is not None and high is not None:
        text += f" (95% CI {low * 100:+,.1f}% to {high * 100:+,.1f}%)"
    return text


def campaign_dashboard(report: dict) -> dict:
    """Display values and charts of a campaign's ROI and lift report."""
    treated, control = report.get("treated") or {}, report.get("control") or {}
    lift = report.get("lift") or {}
    conversion_lift, revenue_lift = lift.get("conversion_rate"), lift.get("revenue_per_customer")
    has_holdout = bool(control.get("customers"))
    currency = settings.REPORTING_CURRENCY
    intervals = []
    if has_holdout:
        for label, item, scale in (
            ("conversion rate (pp)", conversion_lift, 100.0),
            (f"revenue per customer ({currency})", revenue_lift, 1.0),
        ):
            if item and item.get("ci_low") is not None:
                intervals.append((label, item, scale))
    lift_charts = [
        _safe(
            charts.lift_chart(
                [charts.Interval(label, item["absolute"] * scale, item["ci_low"] * scale, item["ci_high"] * scale)],
                title=f"Lift in {label}, treated minus control, with its 95% interval",
                fmt=lambda value: f"{value:+,.2f}",
            )
        )
        for label, item, scale in intervals
    ]
    comparison_charts = (
        [
            (
                label,
                _safe(
                    charts.bar_chart(
                        [
                            (name, float(group.get(key) or 0))
                            for name, group in (("treated", treated), ("control", control))
                        ],
                        title=f"{label}, treated and control",
                        fmt=fmt,
                    )
                ),
            )
            for key, label, fmt in (
                ("conversion_rate", "Conversion rate", lambda value: f"{value:.2%}"),
                ("revenue_per_customer", f"Revenue per customer ({currency})", lambda value: f"{value:,.2f}"),
            )
        ]
        if has_holdout
        else []
    )
    daily_points = _every_day(report.get("daily") or [])
    return {
        "summary": [
            ("sends", count(report.get("sends"))),
            ("conversions", count(report.get("conversions"))),
            ("revenue", money(report.get("revenue"))),
            ("cost", money(report.get("cost"))),
            ("ROI", percent(report.get("roi"), 1)),
            ("ROAS", times(report.get("roas"))),
            ("CPA", money(report.get("cpa"))),
        ],
        "goal": report.get("goal"),
        "window_days": report.get("window_days"),
        # The page explains a missing holdout itself, at the lift it prevents.
        "notes": [note for note in report.get("notes") or [] if has_holdout or not note.startswith("No holdout")],
        "groups": [
            {
                "name": name,
                "customers": count(group.get("customers")),
                "conversions": count(group.get("conversions")),
                "conversion_rate": percent(group.get("conversion_rate")),
                "revenue": money(group.get("revenue")),
                "revenue_per_customer": money(group.get("revenue_per_customer")),
            }
            for name, group in (("treated", treated), ("control", control))
        ],
        "has_holdout": has_holdout,
        "lift": {
            "conversion_rate": _lift_text(conversion_lift, points),
            "conversion_rate_relative": _relative_text(conversion_lift),
            "revenue_per_customer": _lift_text(revenue_lift, signed_money),
            "revenue_per_customer_relative": _relative_text(revenue_lift),
            "incremental_revenue": signed_money(report.get("incremental_revenue")),
            "incremental_roi": percent(report.get("incremental_roi"), 1),
        },
        "lift_charts": lift_charts,
        "comparison_charts": comparison_charts,
        "daily_chart": _safe(
            charts.daily_chart(daily_points, title=f"Daily revenue ({currency})", fmt=lambda value: f"{value:,.2f}")
        ),
        "breakdowns": [
            (title, dimension, [_breakdown_row(row) for row in report.get(key) or []])
            for title, dimension, key in (
                ("By creative", "creative", "by_creative"),
                ("By channel", "channel", "by_channel"),
            )
        ],
    }


def _every_day(daily: list[dict]) -> list[tuple[str, float]]:
    """(day, revenue) for every day from the first to the last of the series: the service
    lists only days with sends or revenue, and a gap must read as a zero bar, not vanish."""
    revenue = {date.fromisoformat(str(day["date"])): float(day.get("revenue") or 0) for day in daily}
    if not revenue:
        return []
    first, last = min(revenue), max(revenue)
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return [(day.isoformat(), revenue.get(day, 0.0)) for day in days]


def _breakdown_row(row: dict) -> dict:
    return {
        "label": row.get("label") or DASH,
        "sends": count(row.get("sends")),
        "conversions": count(row.get("conversions")),
        "revenue": money(row.get("revenue")),
        "cost": money(row.get("cost")),
        "roi": percent(row.get("roi"), 1),
        "roas": times(row.get("roas")),
        "cpa": money(row.get("cpa")),
    }


# --- funnel report -----------------------------------------------------------------------


# The breakdown a report keeps when the form leaves it alone: the saved funnel's own.
AS_SAVED = object()
RANGE_KEYS = ("date_from", "date_to", "last_days")


def funnel_spec_check(spec: Any) -> tuple[dict | None, list[str]]:
    """(the spec normalised, []) when it is valid, else (None, every problem as "field:
    message", e.g. "steps[1].kind: ..."): analytics.services.funnel_validate decides, the
    database references (segments, clustering, campaigns) included."""
    try:
        return funnel_validate(spec).as_json(), []
    except FunnelSpecInvalid as exc:
        return None, [f"{error['field']}: {error['message']}" for error in exc.errors]


def funnel_report_spec(
    saved: dict, *, date_from: date | None = None, date_to: date | None = None, breakdown: Any = AS_SAVED
) -> dict | None:
    """The saved spec with the report form's choices: a date range (whole days in the
    reporting timezone, date_to inclusive) in place of the saved one, and a breakdown
    (None: none) in place of the saved one; None when the form changes nothing."""
    if (date_from is None or date_to is None) and breakdown is AS_SAVED:
        return None
    spec = dict(saved) if isinstance(saved, dict) else {}
    if date_from is not None and date_to is not None:
        for key in RANGE_KEYS:
            spec.pop(key, None)
        spec["date_from"], spec["date_to"] = date_from.isoformat(), date_to.isoformat()
    if breakdown is not AS_SAVED:
        spec.pop("breakdown", None)
        if breakdown is not None:
            spec["breakdown"] = breakdown
    return spec


def funnel_run(funnel_id: int, spec: dict | None = None, *, refresh: bool = False) -> ReportRun:
    """The report run answering a saved funnel (analytics.services.funnel_compute), or the
    given spec (the saved one with the report form's range or breakdown). The saved
    funnel as it is shares its run with the nightly refresh."""
    params = {"funnel": funnel_id} if spec is None else {"spec": spec}
    return report_request(ReportRun.Kind.FUNNEL, params, refresh=refresh)


def run_status(run: ReportRun) -> dict:
    """What the page says about the run behind it."""
    return {
        "id": run.pk,
        "status": run.status,
        "pending": run.status in (ReportRun.Status.QUEUED, ReportRun.Status.RUNNING),
        "error": run.error if run.status == ReportRun.Status.FAILED else "",
        "computed_at": run.computed_at,
        "duration": DASH if run.duration_ms is None else f"{run.duration_ms / 1000:,.3f} s",
    }


def _step_rows(steps: list[dict]) -> list[dict]:
    return [
        {
            "number": step.get("step"),
            "label": step.get("label") or step.get("kind"),
            "customers": count(step.get("customers")),
            "from_previous": percent(step.get("conversion_from_previous"), 1),
            "from_first": percent(step.get("conversion_from_first"), 1),
            "drop_off": count(step.get("drop_off")),
            "drop_off_rate": percent(step.get("drop_off_rate"), 1),
            "median": duration((step.get("time_from_previous") or {}).get("median")),
            "p90": duration((step.get("time_from_previous") or {}).get("p90")),
        }
        for step in steps
    ]


def _funnel_chart(steps: list[dict], title: str) -> SafeString:
    return _safe(
        charts.funnel_chart(
            [charts.FunnelStep(str(step.get("label") or step.get("kind")), int(step["customers"])) for step in steps],
            title=title,
        )
    )


def _totals_text(totals: dict | None) -> str:
    totals = totals or {}
    return (
        f"{count(totals.get('entered'))} entered, {count(totals.get('converted'))} converted "
        f"({percent(totals.get('conversion_rate'), 1)})"
    )


def _range_text(result: dict) -> str:
    """The range as it was asked: "2026-11-01 to 2026-11-30", or "the last 30 days"."""
    spec = result.get("spec") or {}
    if "last_days" in spec:
        return f"the last {spec['last_days']} days"
    return f"{spec.get('date_from', result.get('date_from'))} to {spec.get('date_to', result.get('date_to'))}"


def funnel_dashboard(result: dict, *, name: str) -> dict:
    """Display values and charts of a funnel result (analytics.funnels.compute's shape)."""
    steps = result.get("steps") or []
    breakdown = result.get("breakdown") or {}
    return {
        "range": _range_text(result),
        "order": result.get("order"),
        "window": duration(result.get("window_seconds")),
        "totals": _totals_text(result.get("totals")),
        "chart": _funnel_chart(steps, f"{name}: customers per step"),
        "steps": _step_rows(steps),
        "breakdown_by": breakdown.get("by"),
        "breakdown": [
            {
                "label": group.get("label"),
                "totals": _totals_text(group.get("totals")),
                "steps": _step_rows(group.get("steps") or []),
                "chart": _funnel_chart(group.get("steps") or [], f"{name}, {group.get('label')}: customers per step"),
            }
            for group in breakdown.get("values") or []
        ],
    }
