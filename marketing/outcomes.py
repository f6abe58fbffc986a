"""The exposure -> outcome join: the one definition of a campaign's outcome (DESIGN.md),
which learning (labels, uplift, off-policy evaluation) and analytics (lift, attribution,
ROI) both build on.

For a campaign, a goal touchpoint kind and a window of W days:

- exposure: each customer's first `sent` or `held_out` touchpoint carrying the campaign's
  id. The first of the two decides the group: `treated` (sent) or `control` (held out);
  `exposure_at` is its time. (A customer is in one group in every run, the holdout being
  stable; if the holdout share was changed between runs, the earliest exposure decides.)
- conversions: the customer's goal-kind touchpoints with exposure_at < occurred_at <=
  exposure_at + W days, whatever campaign they carry (or none): distinct orders
  (order_id) where the touchpoints name one, else distinct events; `converted` when any.
- revenue: the revenue of those goal touchpoints, minus the revenue of `refund`
  touchpoints of the same orders that occurred in the same window (ingest stores a
  refund's amount as positive money).

Set-based: one SQL statement (`outcomes_sql`, which callers may embed in bigger queries),
on PostgreSQL and SQLite; the two differ only in how "exposure_at + W days" is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.utils.dateparse import parse_datetime

from marketing.models import Touchpoint

TREATED, CONTROL = "treated", "control"
GROUPS = (TREATED, CONTROL)
_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class Outcome:
    customer_id: int
    group: str  # "treated" | "control"
    exposure_at: datetime
    converted: bool
    conversions: int
    revenue: Decimal


def _window_end(column: str, window_days: int) -> tuple[str, list]:
    if connection.vendor == "postgresql":
        return f"({column} + %s * INTERVAL '1 day')", [window_days]
    # Django's own SQLite function for datetime + duration (microseconds): keeps fractions.
    return f"django_format_dtdelta('+', {column}, %s)", [int(timedelta(days=window_days).total_seconds()) * 10**6]


def outcomes_sql(campaign_id: int, *, goal_kind: str, window_days: int) -> tuple[str, list]:
    """SQL and parameters of one row per exposed customer: (customer_id, grp,
    exposure_at, conversions, revenue), ordered by customer id."""
    if window_days < 0:
        raise ValueError("window_days must be 0 or more")
    table = connection.ops.quote_name(Touchpoint._meta.db_table)
    end, end_params = _window_end("e.exposure_at", window_days)
    sql = f"""
        WITH exposure AS (
            SELECT customer_id,
                   MIN(occurred_at) AS exposure_at,
                   MIN(CASE WHEN kind = 'sent' THEN occurred_at END) AS first_sent,
                   MIN(CASE WHEN kind = 'held_out' THEN occurred_at END) AS first_held
            FROM {table}
            WHERE campaign_id = %s AND kind IN ('sent', 'held_out')
            GROUP BY customer_id
        ),
        windowed AS (
            SELECT e.customer_id, e.exposure_at, e.first_sent, e.first_held, {end} AS window_end
            FROM exposure e
        ),
        goal AS (
            SELECT w.customer_id, g.order_id, g.event_id, g.revenue
            FROM windowed w JOIN {table} g ON g.customer_id = w.customer_id
            WHERE g.kind = %s AND g.occurred_at > w.exposure_at AND g.occurred_at <= w.window_end
        ),
        refunded AS (
            SELECT o.customer_id, SUM(r.revenue) AS amount
            FROM (SELECT DISTINCT customer_id, order_id FROM goal WHERE order_id <> '') o
            JOIN windowed w ON w.customer_id = o.customer_id
            JOIN {table} r ON r.customer_id = o.customer_id AND r.order_id = o.order_id
            WHERE r.kind = 'refund' AND r.occurred_at > w.exposure_at AND r.occurred_at <= w.window_end
            GROUP BY o.customer_id
        )
        SELECT w.customer_id,
               CASE WHEN w.first_sent IS NOT NULL AND (w.first_held IS NULL OR w.first_sent <= w.first_held)
                    THEN 'treated' ELSE 'control' END AS grp,
               w.exposure_at,
               COUNT(DISTINCT CASE WHEN g.order_id <> '' THEN 'o:' || g.order_id ELSE 'e:' || g.event_id END)
                   AS conversions,
               COALESCE(SUM(g.revenue), 0) - COALESCE(MAX(rf.amount), 0) AS revenue
        FROM windowed w
        LEFT JOIN goal g ON g.customer_id = w.customer_id
        LEFT JOIN refunded rf ON rf.customer_id = w.customer_id
        GROUP BY w.customer_id, w.first_sent, w.first_held, w.exposure_at
        ORDER BY w.customer_id
    """
    return sql, [campaign_id, *end_params, goal_kind]


def _money(value) -> Decimal:
    # PostgreSQL answers NUMERIC; SQLite sums to a float.
    return Decimal(str(value or 0)).quantize(_PLACES)


def _instant(value) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return parse_datetime(value).replace(tzinfo=UTC)


def campaign_outcomes(campaign_id: int, *, goal_kind: str, window_days: int) -> list[Outcome]:
    """Every exposed customer of the campaign with their outcome, by customer id."""
    sql, params = outcomes_sql(campaign_id, goal_kind=goal_kind, window_days=window_days)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [
        Outcome(
            customer_id=customer_id,
            group=group,
            exposure_at=_instant(exposure_at),
            converted=conversions > 0,
            conversions=conversions,
            revenue=_money(revenue),
        )
        for customer_id, group, exposure_at, conversions, revenue in rows
    ]


def campaign_outcome_totals(campaign_id: int, *, goal_kind: str, window_days: int) -> dict[str, dict]:
    """Per group ("treated", "control"; both always present): customers, converted
    (customers with a conversion), conversions and revenue (net of refunds)."""
    sql, params = outcomes_sql(campaign_id, goal_kind=goal_kind, window_days=window_days)
    totals = {group: {"customers": 0, "converted": 0, "conversions": 0, "revenue": _money(0)} for group in GROUPS}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT o.grp, COUNT(*), SUM(CASE WHEN o.conversions > 0 THEN 1 ELSE 0 END), "
            f"SUM(o.conversions), SUM(o.revenue) FROM ({sql}) o GROUP BY o.grp",
            params,
        )
        for group, customers, converted, conversions, revenue in cursor.fetchall():
            totals[group] = {
                "customers": customers,
                "converted": int(converted),
                "conversions": int(conversions),
                "revenue": _money(revenue),
            }
    return totals
