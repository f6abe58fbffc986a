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
from django.db.models import Max, Min
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


def customer_range_sql(customers: tuple[int, int] | None, column: str = "customer_id") -> tuple[str, list]:
    """ " AND <column> >= low AND <column> < high" and its parameters for a customer range
    (low, high), or nothing for None (every customer)."""
    if customers is None:
        return "", []
    return f" AND {column} >= %s AND {column} < %s", [int(customers[0]), int(customers[1])]


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


def send_outcomes_sql(
    campaign_ids: list[int], *, goal_kind: str, window_days: int, since: datetime, until: datetime
) -> tuple[str, list]:
    """Per-send outcomes (what learning trains on): one row per `sent` or `held_out`
    touchpoint of the campaigns that occurred in [since, until): (touchpoint_id,
    customer_id, campaign_id, kind, channel, creative_id, occurred_at, converted), where
    converted is 1 when the customer has a goal-kind touchpoint with send < occurred_at <=
    send + W days (whatever campaign it carries), else 0; ordered by touchpoint id.

    Unlike `outcomes_sql` (one exposure per customer: the campaign's comparison), every send
    is a row: each is a decision with its own features and outcome."""
    if window_days < 0:
        raise ValueError("window_days must be 0 or more")
    if not campaign_ids:
        raise ValueError("campaign_ids must not be empty")
    table = connection.ops.quote_name(Touchpoint._meta.db_table)
    end, end_params = _window_end("s.occurred_at", window_days)
    placeholders = ", ".join(["%s"] * len(campaign_ids))
    sql = f"""
        SELECT s.id, s.customer_id, s.campaign_id, s.kind, s.channel, s.creative_id, s.occurred_at,
               CASE WHEN EXISTS (
                   SELECT 1 FROM {table} g
                   WHERE g.customer_id = s.customer_id AND g.kind = %s
                     AND g.occurred_at > s.occurred_at AND g.occurred_at <= {end}
               ) THEN 1 ELSE 0 END AS converted
        FROM {table} s
        WHERE s.campaign_id IN ({placeholders}) AND s.kind IN ('sent', 'held_out')
          AND s.occurred_at >= %s AND s.occurred_at < %s
        ORDER BY s.id
    """
    adapt = connection.ops.adapt_datetimefield_value
    return sql, [goal_kind, *end_params, *[int(c) for c in campaign_ids], adapt(since), adapt(until)]


def outcome_ctes_sql(
    campaign_id: int,
    *,
    goal_kind: str,
    window_days: int,
    since: datetime | None = None,
    until: datetime | None = None,
    flags: tuple[str, ...] = (),
    bound_by_exposures: bool = False,
    customers: tuple[int, int] | None = None,
) -> tuple[str, list]:
    """`outcomes_sql`'s definition as common table expressions that aggregate queries (ROI,
    lift, daily series) build on with their own final SELECT: a "WITH ..." prefix and its
    parameters. Same exposure, group, window, order counting and refunds as
    `outcomes_sql` (tests/test_roi.py checks they agree), shaped for aggregates over a
    million exposures: exposure and flags per customer in one pass over the campaign's
    touchpoints in customer order (PostgreSQL: merged index-only scans, no sort; see
    `_first_exposure_sql`), only customers with goal touchpoints aggregated again, refunds
    joined by order, no per-customer index lookups.

    `since`/`until`, when given, bound the goal and refund touchpoints read (the
    campaign's first exposure and its last exposure + window: see `exposure_span`): the
    same answer, but the planner reads the time index's slice of the goal kind instead of
    a year of it, and estimates the join from it. `bound_by_exposures`: the same bounds
    taken from the exposures inside the statement (first exposure, last exposure +
    window), where `exposure_span` would cost a pass over the campaign's index. `flags`:
    touchpoint kinds (e.g. click, open) carrying the campaign whose presence per customer
    is wanted (columns has_<kind>, 0 or 1), read in the same pass. `customers`: (low, high),
    only customers with low <= id < high (every read restricted by the index's customer
    column): disjoint ranges partition the answer, so parts of one report can run on
    several connections at once (analytics.db.run_parts) and their aggregates add up.

    - exposure(customer_id, grp, exposure_at, channel, creative_id, has_<flag>...): each
      exposed customer once; for the treated, channel and creative of their first send
      (null for the control).
    - exposure_groups(grp, channel, creative_id, customers, with_<flag>..., first_at,
      last_at): the exposures per group and first send's channel and creative: customers,
      those with each flag, first and last exposure (one pass over the exposures serves
      both a report's counts and the span).
    - goal(customer_id, grp, exposure_at, channel, creative_id, has_<flag>..., occurred_at, order_id,
      conversion_key, revenue): the goal touchpoints in each customer's window, with the
      customer's exposure columns; conversion_key 'o:<order>' or 'e:<event>'.
    - refund(customer_id, grp, occurred_at, revenue): the refunds netted out (positive
      amounts): those of the goal orders, in the window.
    - converted(customer_id, grp, channel, creative_id, has_<flag>..., conversions,
      revenue): per customer with a goal touchpoint, conversions and revenue net of
      refunds, as `outcomes_sql` has them, with the customer's exposure columns.
    """
    if window_days < 0:
        raise ValueError("window_days must be 0 or more")
    for flag in flags:
        if not flag.isidentifier() or flag in ("sent", "held_out"):
            raise ValueError(f"flag {flag!r} must be a kind other than sent/held_out, usable in a column name")
    table = connection.ops.quote_name(Touchpoint._meta.db_table)
    end, end_params = _window_end("x.exposure_at", window_days)
    order_end, _ = _window_end("o.exposure_at", window_days)
    flag_names = "".join(f", has_{flag}" for flag in flags)
    flag_sums = "".join(f", SUM(has_{flag}) AS with_{flag}" for flag in flags)
    first, first_params = _first_exposure_sql(table, campaign_id, flags, customers)
    bounds, bound_params = customer_range_sql(customers, "{alias}.customer_id")
    if since is not None:
        bounds += " AND {alias}.occurred_at > %s"
        bound_params.append(connection.ops.adapt_datetimefield_value(since))
    if until is not None:
        bounds += " AND {alias}.occurred_at <= %s"
        bound_params.append(connection.ops.adapt_datetimefield_value(until))
    span, span_params = "", []
    if bound_by_exposures:
        last_end, span_params = _window_end("last_at", window_days)
        # From the per-group summary (a few rows) rather than another pass over the exposures.
        span = "span AS (SELECT MIN(first_at) AS first_at, MAX(last_at) AS last_at FROM exposure_groups),"
        bounds += " AND {alias}.occurred_at > (SELECT first_at FROM span)"
        bounds += f" AND {{alias}}.occurred_at <= (SELECT {last_end} FROM span)"
        bound_params += span_params
    sql = f"""
        WITH exposure AS ({first}),
        exposure_groups AS (
            SELECT grp, channel, creative_id, COUNT(*) AS customers{flag_sums},
                   MIN(exposure_at) AS first_at, MAX(exposure_at) AS last_at
            FROM exposure GROUP BY grp, channel, creative_id
        ),
        {span}
        goal AS (
            SELECT x.customer_id, x.grp, x.exposure_at, x.channel, x.creative_id{flag_names.replace(", ", ", x.")},
                   g.occurred_at, g.order_id,
                   CASE WHEN g.order_id <> '' THEN 'o:' || g.order_id ELSE 'e:' || g.event_id END AS conversion_key,
                   COALESCE(g.revenue, 0) AS revenue
            FROM exposure x JOIN {table} g ON g.customer_id = x.customer_id
            WHERE g.kind = %s{bounds.format(alias="g")}
              AND g.occurred_at > x.exposure_at AND g.occurred_at <= {end}
        ),
        refund AS (
            -- The goal orders carry their customer's exposure: no second join of the exposures.
            SELECT o.customer_id, o.grp, r.occurred_at, COALESCE(r.revenue, 0) AS revenue
            FROM (SELECT DISTINCT customer_id, grp, exposure_at, order_id FROM goal WHERE order_id <> '') o
            JOIN {table} r ON r.customer_id = o.customer_id AND r.order_id = o.order_id
            WHERE r.kind = 'refund'{bounds.format(alias="r")}
              AND r.occurred_at > o.exposure_at AND r.occurred_at <= {order_end}
        ),
        converted AS (
            -- The exposure's columns ride along from `goal` (functionally dependent on the
            -- customer): no second join of the million exposures.
            SELECT gc.customer_id, gc.grp, gc.channel, gc.creative_id{flag_names.replace(", ", ", gc.")},
                   gc.conversions, gc.revenue - COALESCE(rc.revenue, 0) AS revenue
            FROM (SELECT customer_id, grp, channel, creative_id{flag_names},
                         COUNT(*) AS conversions, SUM(revenue) AS revenue
                  -- Orders first, then customers: two hash aggregates where COUNT(DISTINCT)
                  -- would sort the goal rows.
                  FROM (SELECT customer_id, grp, channel, creative_id{flag_names}, conversion_key,
                               SUM(revenue) AS revenue
                        FROM goal GROUP BY customer_id, grp, channel, creative_id{flag_names}, conversion_key) k
                  GROUP BY customer_id, grp, channel, creative_id{flag_names}) gc
            LEFT JOIN (SELECT customer_id, SUM(revenue) AS revenue FROM refund GROUP BY customer_id) rc
                ON rc.customer_id = gc.customer_id
        )
    """
    params = [*first_params, goal_kind, *bound_params, *end_params, *bound_params, *end_params]
    return sql, params


def _first_exposure_sql(
    table: str, campaign_id: int, flags: tuple[str, ...], customers: tuple[int, int] | None = None
) -> tuple[str, list]:
    """The `exposure` CTE's SELECT (customer_id, grp, exposure_at, channel, creative_id,
    has_<flag>...): each exposed customer's first `sent`/`held_out` touchpoint, the
    earliest, `sent` before `held_out` at the same instant and the lowest id among sends at
    the same instant (as in outcomes_sql). `customers`: (low, high), only customers with
    low <= id < high."""
    # Every read of the campaign's touchpoints is restricted the same way: the campaign
    # index's customer column bounds the range scan.
    within, within_params = customer_range_sql(customers)
    if connection.vendor != "postgresql":
        # One sort of the campaign's touchpoints per customer: exposures first, earliest
        # first, `sent` before `held_out` at the same instant, so each customer's first row
        # is their exposure; the flags are window aggregates over the same order.
        flag_windows = "".join(
            f", MAX(CASE WHEN kind = '{flag}' THEN 1 ELSE 0 END) OVER w AS has_{flag}" for flag in flags
        )
        flag_names = "".join(f", has_{flag}" for flag in flags)
        kinds = ", ".join(f"'{kind}'" for kind in ("sent", "held_out", *flags))
        order = (
            "CASE WHEN kind IN ('sent', 'held_out') THEN 0 ELSE 1 END, occurred_at, "
            "CASE WHEN kind = 'sent' THEN 0 ELSE 1 END, id"
        )
        sql = f"""
            SELECT customer_id, CASE WHEN kind = 'sent' THEN 'treated' ELSE 'control' END AS grp,
                   occurred_at AS exposure_at,
                   CASE WHEN kind = 'sent' THEN channel END AS channel,
                   CASE WHEN kind = 'sent' THEN creative_id END AS creative_id{flag_names}
            FROM (SELECT customer_id, kind, occurred_at, channel, creative_id{flag_windows},
                         ROW_NUMBER() OVER w AS n
                  FROM {table}
                  WHERE campaign_id = %s AND kind IN ({kinds}){within}
                  WINDOW w AS (PARTITION BY customer_id ORDER BY {order}
                               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)) r
            WHERE n = 1 AND kind IN ('sent', 'held_out')
        """
        return sql, [campaign_id, *within_params]
    # PostgreSQL: no sort and no hash. The campaign index (campaign_id, kind, customer_id,
    # occurred_at, id) INCLUDE (channel, creative_id) hands each kind's touchpoints over in
    # customer order, index-only: the first send per customer is a DISTINCT ON over that
    # order, the first hold-out a grouped MIN, each flag kind a distinct list of customers,
    # all merge-joined in that order (flags to each side before the full join: a join on
    # the full join's COALESCE(customer) would hash a million rows). The window above
    # sorted the campaign's 1.3M touchpoints per report: 1.9 s of bench/reports.py's ROI.
    treated = "s.customer_id IS NOT NULL AND (h.customer_id IS NULL OR s.occurred_at <= h.occurred_at)"
    flag_params = [param for _ in flags for param in (campaign_id, *within_params)]

    def flagged(alias: str) -> tuple[str, str]:
        columns = "".join(f", CASE WHEN f_{flag}.customer_id IS NULL THEN 0 ELSE 1 END AS has_{flag}" for flag in flags)
        joins = "".join(
            f" LEFT JOIN (SELECT DISTINCT customer_id FROM {table} WHERE campaign_id = %s AND kind = '{flag}'{within})"
            f" f_{flag} ON f_{flag}.customer_id = {alias}.customer_id"
            for flag in flags
        )
        return columns, joins

    sent_flags, sent_joins = flagged("s0")
    held_flags, held_joins = flagged("h0")
    either = "".join(f", COALESCE(s.has_{flag}, h.has_{flag}) AS has_{flag}" for flag in flags)
    sql = f"""
        SELECT COALESCE(s.customer_id, h.customer_id) AS customer_id,
               CASE WHEN {treated} THEN 'treated' ELSE 'control' END AS grp,
               CASE WHEN {treated} THEN s.occurred_at ELSE h.occurred_at END AS exposure_at,
               CASE WHEN {treated} THEN s.channel END AS channel,
               CASE WHEN {treated} THEN s.creative_id END AS creative_id{either}
        FROM (SELECT s0.customer_id, s0.occurred_at, s0.channel, s0.creative_id{sent_flags}
              FROM (SELECT DISTINCT ON (customer_id) customer_id, occurred_at, channel, creative_id
                    FROM {table} WHERE campaign_id = %s AND kind = 'sent'{within}
                    ORDER BY customer_id, occurred_at, id) s0{sent_joins}) s
        FULL JOIN (SELECT h0.customer_id, h0.occurred_at{held_flags}
                   FROM (SELECT customer_id, MIN(occurred_at) AS occurred_at
                         FROM {table} WHERE campaign_id = %s AND kind = 'held_out'{within}
                         GROUP BY customer_id) h0{held_joins}) h
            ON h.customer_id = s.customer_id
    """
    return sql, [campaign_id, *within_params, *flag_params, campaign_id, *within_params, *flag_params]


def exposure_span(campaign_id: int) -> tuple[datetime, datetime] | None:
    """The campaign's first and last exposure (`sent`/`held_out` touchpoint), or None: one
    index-only pass over the campaign's exposures in the (campaign_id, kind, customer_id,
    ...) index. (outcome_ctes_sql's `bound_by_exposures` takes the same span inside its
    statement instead.)"""
    span = Touchpoint.objects.filter(campaign_id=campaign_id, kind__in=("sent", "held_out")).aggregate(
        first=Min("occurred_at"), last=Max("occurred_at")
    )
    return (span["first"], span["last"]) if span["first"] is not None else None
