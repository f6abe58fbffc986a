"""RFM: each customer's recency, frequency and monetary value, scored 1-5, and the named
group their R and F scores put them in.

As of a date D (default: today in settings.REPORTING_TIMEZONE), only touchpoints that
occurred before the end of D in the reporting timezone count:

- recency_days: D minus the date (reporting timezone) of the customer's last purchase,
  in whole days (0 = bought on D);
- frequency: the number of distinct `order_id`s of their purchases (a purchase is one
  touchpoint per order line);
- monetary: the revenue of their purchases minus the revenue of their refunds (ingest
  stores a refund's amount as positive money), rounded to 4 decimals.

A customer without a purchase up to D has a row with every value and score null (refunds
alone do not make a buyer).

**Scores** (the tie rule): among the n customers with a purchase, order them from worst
to best (recency: most days first; frequency and monetary: smallest first) and take
`rank` = SQL `rank()` over that order, so tied customers share the lowest rank of their
group. Then

    score = 1 + floor(5 * (rank - 1) / n)        (an integer from 1 to 5)

Equal values always get equal scores; a big tied group sits in the quintile where it
starts (if 60% of buyers have one order, they all get f_score 1). It is pandas'
`Series.rank(method="min")` put through the same formula, which is how tests/test_rfm.py
checks it.

The computation is one INSERT … SELECT for the buyers (aggregates, then window functions)
and one for everyone else (nulls), in one transaction with the DELETE of the old rows; it
runs on PostgreSQL and SQLite; the two differ only in the day arithmetic
(`_DAYS_BETWEEN`), and the local date of a timestamp comes from Django's own per-backend
SQL.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from marketing.models import Customer, CustomerRFM, Touchpoint

# `{as_of}` - `{last_date}` in whole days. PostgreSQL subtracts dates to an integer;
# SQLite keeps dates as text, which julianday() reads.
_DAYS_BETWEEN = {
    "postgresql": "(CAST({as_of} AS date) - {last_date})",
    "sqlite": "CAST(julianday({as_of}) - julianday({last_date}) AS INTEGER)",
}

# The named groups on the classic R x F grid (F on the x axis, R on the y axis):
#
#   R\F   1                 2                    3                    4          5
#   5     new               potential_loyalists  potential_loyalists  champions  champions
#   4     promising         potential_loyalists  potential_loyalists  loyal      loyal
#   3     need_attention    need_attention       need_attention       loyal      loyal
#   2     hibernating       hibernating          at_risk              at_risk    cant_lose
#   1     lost              lost                 at_risk              at_risk    cant_lose
#
# It is the widely used RF segment map, with two changes so that the groups are the ten
# we name: its "about to sleep" cells (R 3, F 1-2) join need_attention, and its
# hibernating corner is split by recency (R 2: hibernating, R 1: lost). M does not place
# a customer on this grid; it is carried for the API and for rule segments.
RFM_GROUPS: dict[str, tuple[tuple[range, range], ...]] = {
    # name: ((r_scores, f_scores), ...) rectangles of the grid
    "champions": ((range(5, 6), range(4, 6)),),
    "loyal": ((range(3, 5), range(4, 6)),),
    "potential_loyalists": ((range(4, 6), range(2, 4)),),
    "new": ((range(5, 6), range(1, 2)),),
    "promising": ((range(4, 5), range(1, 2)),),
    "need_attention": ((range(3, 4), range(1, 4)),),
    "at_risk": ((range(1, 3), range(3, 5)),),
    "cant_lose": ((range(1, 3), range(5, 6)),),
    "hibernating": ((range(2, 3), range(1, 3)),),
    "lost": ((range(1, 2), range(1, 3)),),
}


def rfm_group(r: int | None, f: int | None, m: int | None = None) -> str | None:
    """The named group of an (R, F) score pair (see RFM_GROUPS); None when unscored."""
    if r is None or f is None:
        return None
    for name, cells in RFM_GROUPS.items():
        if any(r in r_scores and f in f_scores for r_scores, f_scores in cells):
            return name
    return None


def rfm_today() -> date:
    return timezone.now().astimezone(ZoneInfo(settings.REPORTING_TIMEZONE)).date()


def rfm_refresh(as_of: date | None = None) -> int:
    """Recompute every customer's RFM as of `as_of` (default: today in the reporting
    timezone) and replace the table with it. Returns the number of rows written (one
    per customer, with or without a purchase)."""
    as_of = as_of or rfm_today()
    tzname = settings.REPORTING_TIMEZONE
    # The end of the as-of day in the reporting timezone (DST-correct: midnight of the
    # next local day), as the UTC instant the touchpoint log compares with.
    cutoff = datetime.combine(as_of + timedelta(days=1), time.min, tzinfo=ZoneInfo(tzname))
    ops, qn = connection.ops, connection.ops.quote_name

    last_date_sql, last_date_params = ops.datetime_cast_date_sql("o.last_purchase_at", [], tzname)
    recency_sql = _DAYS_BETWEEN[connection.vendor].format(as_of="%s", last_date=last_date_sql)

    def score(column: str, direction: str) -> str:
        return f"1 + 5 * (RANK() OVER (ORDER BY {column} {direction}) - 1) / COUNT(*) OVER ()"

    table = qn(CustomerRFM._meta.db_table)
    columns = "(customer_id, as_of, recency_days, frequency, monetary, r_score, f_score, m_score, computed_at)"
    buyers_sql = f"""
        INSERT INTO {table} {columns}
        SELECT s.customer_id, %s, s.recency_days, s.frequency, s.monetary, s.r_score, s.f_score, s.m_score, %s
        FROM (
            SELECT customer_id, recency_days, frequency, monetary,
                   {score("recency_days", "DESC")} AS r_score,
                   {score("frequency", "ASC")} AS f_score,
                   {score("monetary", "ASC")} AS m_score
            FROM (
                SELECT o.customer_id, {recency_sql} AS recency_days, o.frequency, o.monetary
                FROM (
                    SELECT t.customer_id,
                           MAX(CASE WHEN t.kind = 'purchase' THEN t.occurred_at END) AS last_purchase_at,
                           COUNT(DISTINCT CASE WHEN t.kind = 'purchase' THEN t.order_id END) AS frequency,
                           ROUND(COALESCE(SUM(CASE WHEN t.kind = 'purchase' THEN t.revenue END), 0)
                                 - COALESCE(SUM(CASE WHEN t.kind = 'refund' THEN t.revenue END), 0), 4) AS monetary
                    FROM {qn(Touchpoint._meta.db_table)} t
                    WHERE t.kind IN ('purchase', 'refund') AND t.occurred_at < %s
                    GROUP BY t.customer_id
                    HAVING MAX(CASE WHEN t.kind = 'purchase' THEN 1 END) = 1
                ) o
            ) rfm
        ) s
    """
    # Everyone else: a row of nulls. A second statement rather than a LEFT JOIN of all
    # customers to the scored buyers, which SQLite runs as a nested loop over both.
    others_sql = f"""
        INSERT INTO {table} {columns}
        SELECT c.id, %s, NULL, NULL, NULL, NULL, NULL, NULL, %s
        FROM {qn(Customer._meta.db_table)} c
        WHERE NOT EXISTS (SELECT 1 FROM {table} r WHERE r.customer_id = c.id)
    """
    # as_of as a date object: typed on PostgreSQL, ISO text on SQLite (Django's adapter).
    computed_at = ops.adapt_datetimefield_value(timezone.now())
    buyers_params = [as_of, computed_at, as_of, *last_date_params, ops.adapt_datetimefield_value(cutoff)]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table}")
        cursor.execute(buyers_sql, buyers_params)
        written = cursor.rowcount
        cursor.execute(others_sql, [as_of, computed_at])
        return written + cursor.rowcount
