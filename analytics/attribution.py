"""Multi-touch attribution: the conversions in a date range credited to the campaign
touches that preceded them.

- Conversion: a goal-kind touchpoint (default `purchase`) occurring in [date_from,
  date_to] (whole days in settings.REPORTING_TIMEZONE). The lines of one order (same
  customer and order_id) are one conversion, at its first line's time; a goal touchpoint
  without an order id is a conversion of its own. Revenue is net of the order's `refund`
  touchpoints, whenever they came (the report tells what an order finally earned).
- Touches: the customer's `sent` and `click` touchpoints that carry a campaign (any
  campaign) in [conversion - window_days, conversion), ordered by time then id.
- Models, each a set of weights per conversion summing to 1: last_touch (default),
  first_touch, linear (1/n each), time_decay (2^(-age / half_life_days), normalised) and
  position_based (40% first, 40% last, 20% shared by the middle; one touch takes all, two
  take half each).
- Credits: a touch's weight x the conversion's revenue (and x 1 conversion), summed per
  (campaign, channel, creative). Totals per campaign, channel and creative are sums of
  those cells, rounded to the cent by the largest-remainder method so that every list
  adds up exactly to the attributed revenue (rounded to the cent); conversion credits are
  rounded to 4 places the same way, adding up to the attributed conversions.
- Unattributed: conversions with no touch in the window, reported separately.

One SQL statement with window functions (ROW_NUMBER, COUNT and SUM over the conversion's
touches) on PostgreSQL and SQLite; Python only rounds a few cells.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date, datetime, time, timedelta
from decimal import ROUND_FLOOR, Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection

from analytics.db import report_session
from campaigns.models import Campaign, Creative
from marketing.models import Touchpoint

MODELS = ("last_touch", "first_touch", "linear", "time_decay", "position_based")
DEFAULT_WINDOW_DAYS = 30
DEFAULT_HALF_LIFE_DAYS = 7.0
CENT = Decimal("0.01")
CREDIT_PLACES = Decimal("0.0001")


def _weight_sql(model: str) -> str:
    """The raw weight of touch `pos` of `n` (age in days: `age`); normalised per conversion."""
    return {
        "last_touch": "CASE WHEN pos = n THEN 1.0 ELSE 0.0 END",
        "first_touch": "CASE WHEN pos = 1 THEN 1.0 ELSE 0.0 END",
        "linear": "1.0",
        "time_decay": "POWER(0.5, age / %s)",
        "position_based": (
            "CASE WHEN n = 1 THEN 1.0 WHEN n = 2 THEN 0.5 WHEN pos = 1 OR pos = n THEN 0.4 ELSE 0.2 / (n - 2) END"
        ),
    }[model]


def _age_days_sql(later: str, earlier: str) -> str:
    if connection.vendor == "postgresql":
        return f"(EXTRACT(EPOCH FROM ({later} - {earlier})) / 86400.0)"
    return f"(julianday({later}) - julianday({earlier}))"


def _minus_days_sql(column: str, days: int) -> tuple[str, list]:
    if connection.vendor == "postgresql":
        return f"({column} - %s * INTERVAL '1 day')", [days]
    return f"django_format_dtdelta('-', {column}, %s)", [int(timedelta(days=days).total_seconds()) * 10**6]


def _attribution_sql(
    model: str, goal: str, start: datetime, end: datetime, window_days: int, half_life_days: float
) -> tuple[str, list]:
    table = connection.ops.quote_name(Touchpoint._meta.db_table)
    adapt = connection.ops.adapt_datetimefield_value
    window_start, window_params = _minus_days_sql("c.converted_at", window_days)
    age = _age_days_sql("c.converted_at", "t.occurred_at")
    weight = _weight_sql(model)
    weight_params = [half_life_days] if model == "time_decay" else []
    # Touches can precede the range by the window: bound the scan of the touch kinds by time.
    touch_from = start - timedelta(days=window_days)
    sql = f"""
        WITH lines AS (
            SELECT customer_id, occurred_at, revenue, order_id,
                   CASE WHEN order_id <> '' THEN 'o:' || order_id ELSE 'e:' || event_id END AS conversion_key
            FROM {table}
            WHERE kind = %s AND occurred_at >= %s AND occurred_at < %s
        ),
        orders AS (
            SELECT customer_id, conversion_key, MAX(order_id) AS order_id, MIN(occurred_at) AS converted_at,
                   SUM(COALESCE(revenue, 0)) AS revenue
            FROM lines GROUP BY customer_id, conversion_key
        ),
        refunds AS (
            SELECT o.customer_id, o.conversion_key, SUM(COALESCE(r.revenue, 0)) AS amount
            FROM orders o JOIN {table} r ON r.customer_id = o.customer_id AND r.order_id = o.order_id
            WHERE o.order_id <> '' AND r.kind = 'refund'
            GROUP BY o.customer_id, o.conversion_key
        ),
        conversions AS (
            SELECT o.customer_id, o.conversion_key, o.converted_at, o.revenue - COALESCE(f.amount, 0) AS revenue
            FROM orders o LEFT JOIN refunds f ON f.customer_id = o.customer_id AND f.conversion_key = o.conversion_key
        ),
        touches AS (
            SELECT c.customer_id, c.conversion_key, c.revenue, t.campaign_id, t.channel, t.creative_id,
                   ROW_NUMBER() OVER (
                       PARTITION BY c.customer_id, c.conversion_key ORDER BY t.occurred_at, t.id
                   ) AS pos,
                   COUNT(*) OVER (PARTITION BY c.customer_id, c.conversion_key) AS n,
                   {age} AS age
            FROM conversions c JOIN {table} t ON t.customer_id = c.customer_id
            WHERE t.kind IN ('sent', 'click') AND t.campaign_id IS NOT NULL
              AND t.occurred_at >= %s AND t.occurred_at < %s
              AND t.occurred_at >= {window_start} AND t.occurred_at < c.converted_at
        ),
        weighted AS (
            SELECT customer_id, conversion_key, revenue, campaign_id, channel, creative_id, {weight} AS raw
            FROM touches
        ),
        credited AS (
            SELECT campaign_id, channel, creative_id, revenue,
                   raw / SUM(raw) OVER (PARTITION BY customer_id, conversion_key) AS share
            FROM weighted
        ),
        touched AS (SELECT DISTINCT customer_id, conversion_key FROM touches)
        SELECT 'cell', campaign_id, channel, creative_id, SUM(share), SUM(share * revenue)
        FROM credited WHERE share > 0  -- the uncredited touches of last/first touch
        GROUP BY campaign_id, channel, creative_id
        UNION ALL
        SELECT CASE WHEN t.customer_id IS NULL THEN 'unattributed' ELSE 'attributed' END,
               NULL, NULL, NULL, COUNT(*), SUM(c.revenue)
        FROM conversions c
        LEFT JOIN touched t ON t.customer_id = c.customer_id AND t.conversion_key = c.conversion_key
        GROUP BY CASE WHEN t.customer_id IS NULL THEN 'unattributed' ELSE 'attributed' END
    """
    params = [
        goal,
        adapt(start),
        adapt(end),
        adapt(touch_from),
        adapt(end),
        *window_params,
        *weight_params,
    ]
    return sql, params


def allocate(total: Decimal, raw: dict, quantum: Decimal) -> dict:
    """Largest-remainder rounding: each value rounded down to `quantum`, then the units
    left to reach `total` (itself a multiple of quantum) go to the largest remainders
    (ties by key order), so the rounded values add up to `total` exactly."""
    if not raw:
        return {}
    floors = {key: (Decimal(repr(value)) / quantum).to_integral_value(ROUND_FLOOR) for key, value in raw.items()}
    remainders = {key: Decimal(repr(value)) / quantum - floors[key] for key, value in raw.items()}
    units = int((total / quantum).to_integral_value()) - int(sum(floors.values()))
    order = sorted(raw, key=lambda key: (-remainders[key], _sort_key(key)))
    if units < 0:  # float sums a hair above the total
        order = sorted(raw, key=lambda key: (remainders[key], _sort_key(key)))
    for index in range(abs(units)):
        floors[order[index % len(order)]] += 1 if units > 0 else -1
    return {key: (floors[key] * quantum).quantize(quantum) for key in raw}


def _sort_key(key: tuple) -> tuple:
    return tuple((value is None, value if value is not None else 0) for value in key)


def attribution_report(
    *,
    model: str = "last_touch",
    date_from: date,
    date_to: date,
    window_days: int = DEFAULT_WINDOW_DAYS,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    goal: str = "purchase",
) -> dict:
    """Credits of the conversions in [date_from, date_to] (see the module docstring)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}")
    if date_to < date_from:
        raise ValueError("date_to must not be before date_from")
    if window_days < 1:
        raise ValueError("window_days must be 1 or more")
    if not (half_life_days > 0 and math.isfinite(half_life_days)):
        raise ValueError("half_life_days must be more than 0")
    tz = ZoneInfo(settings.REPORTING_TIMEZONE)
    start = datetime.combine(date_from, time.min, tzinfo=tz)
    end = datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=tz)
    sql, params = _attribution_sql(model, goal, start, end, window_days, half_life_days)
    with report_session(hash_joins=True), connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()

    cells: dict[tuple, tuple[float, float]] = {}
    totals = {"attributed": (0, Decimal(0)), "unattributed": (0, Decimal(0))}
    for part, campaign_id, channel, creative_id, credit, revenue in rows:
        if part == "cell":
            cells[(campaign_id, channel or "", creative_id)] = (float(credit), float(revenue or 0))
        else:
            totals[part] = (int(credit), Decimal(str(revenue or 0)))
    attributed_count, attributed_revenue = totals["attributed"]
    unattributed_count, unattributed_revenue = totals["unattributed"]
    attributed_cents = attributed_revenue.quantize(CENT)
    revenue_cells = allocate(attributed_cents, {key: value[1] for key, value in cells.items()}, CENT)
    credit_cells = allocate(Decimal(attributed_count), {key: value[0] for key, value in cells.items()}, CREDIT_PLACES)

    def rollup(index: int) -> list[dict]:
        revenue: dict = defaultdict(Decimal)
        credit: dict = defaultdict(Decimal)
        for key in cells:
            revenue[key[index]] += revenue_cells[key]
            credit[key[index]] += credit_cells[key]
        ordered = sorted(revenue, key=lambda k: (-revenue[k], -credit[k], _sort_key((k,))))
        return [(k, credit[k], revenue[k]) for k in ordered]

    campaign_ids = {key[0] for key in cells}
    creative_ids = {key[2] for key in cells if key[2] is not None}
    campaign_names = dict(Campaign.objects.filter(pk__in=campaign_ids).values_list("pk", "name"))
    creative_names = {
        pk: f"{name} ({kind})"
        for pk, name, kind in Creative.objects.filter(pk__in=creative_ids).values_list("pk", "name", "channel_kind")
    }
    return {
        "model": model,
        "goal": goal,
        "date_from": date_from.isoformat(),
        "date_to": date_to.isoformat(),
        "window_days": window_days,
        "half_life_days": half_life_days if model == "time_decay" else None,
        "currency": settings.REPORTING_CURRENCY,
        "timezone": settings.REPORTING_TIMEZONE,
        "conversions": attributed_count + unattributed_count,
        "revenue": str((attributed_revenue + unattributed_revenue).quantize(CENT)),
        "attributed": {"conversions": attributed_count, "revenue": str(attributed_cents)},
        "unattributed": {"conversions": unattributed_count, "revenue": str(unattributed_revenue.quantize(CENT))},
        "by_campaign": [
            {
                "campaign": k,
                "label": campaign_names.get(k, f"campaign {k}"),
                "conversions": str(c),
                "revenue": str(r),
            }
            for k, c, r in rollup(0)
        ],
        "by_channel": [
            {"channel": k, "label": k or "(none)", "conversions": str(c), "revenue": str(r)} for k, c, r in rollup(1)
        ],
        "by_creative": [
            {
                "creative": k,
                "label": "(none)" if k is None else creative_names.get(k, f"creative {k}"),
                "conversions": str(c),
                "revenue": str(r),
            }
            for k, c, r in rollup(2)
        ],
    }
