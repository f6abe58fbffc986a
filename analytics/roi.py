"""ROI and holdout lift of a campaign, built on the exposure -> outcome join of
marketing.outcomes (one definition of outcome, DESIGN.md).

What is measured (goal kind and window: the campaign's unless overridden):

- Groups: treated = customers whose first exposure to the campaign is a `sent`
  touchpoint, control = `held_out` (marketing.outcomes decides). `conversions` of a group
  counts converted customers (any goal touchpoint in (exposure, exposure + window]), so
  `conversion_rate` = conversions / customers; `orders` counts the distinct orders/events.
  Revenue is net of refunds of those orders in the window.
- Cost = the cost of the messages sent (Message.cost: the channel's cost per message,
  stored on the message when it was sent) + the campaign's fixed cost. A send imported
  through the touchpoint API has no message and costs nothing but the fixed cost.
- ROI figures use the treated group's revenue and conversions: ROAS = revenue / cost,
  CPA = cost / conversions, ROI = (revenue - cost) / cost. CTR = customers who clicked /
  treated customers, open rate likewise; CVR = clickers who converted / clickers (click
  to conversion). Clicks and opens are touchpoints carrying the campaign's id.
- Lift (analytics.stats): conversion rate and revenue per customer, treated minus
  control; `ci_low`/`ci_high` bound the ABSOLUTE difference, `relative_ci_*` the relative
  lift. Incremental conversions/revenue = treated customers x absolute lift; incremental
  ROI = (incremental revenue - cost) / cost.
- Daily series in settings.REPORTING_TIMEZONE: sends (sent touchpoints) per day, and the
  treated customers' goal events (conversions) and revenue (refunds on their own day) per
  day they occurred.
- Breakdowns per channel (the touchpoint's channel label, e.g. "email") and per creative,
  by the channel/creative of each treated customer's first send; the holdout has neither,
  so breakdowns carry no lift.

The work is one statement per customer range over marketing.outcomes.outcome_ctes_sql
(the outcome join as CTEs, bounded to the campaign's span so the goal kind is read through
its index), returning a few dozen aggregate rows: per (group, channel, creative) the
customers, converted customers, orders, revenue and its sum of squares (what Welch's t
needs), the sends per (day, channel, creative), and the treated group's conversions and
refunds per day; plus one over the campaign's messages for their cost. Every figure is a
sum over customers, so disjoint customer ranges add up: the ranges (2 per connection) and
the cost run at once on REPORT_PARALLELISM connections over one snapshot
(analytics.db.run_parts), each in a report session (no JIT, no nested loops, more
work_mem). bench/reports.py (b) times it on a campaign with a million messages.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection
from django.utils.dateparse import parse_datetime

from analytics.db import customer_ranges, run_parts
from analytics.stats import Moments, compare_proportions, welch
from campaigns.models import Campaign, Channel, Creative, Message
from marketing.errors import NotFound
from marketing.models import Touchpoint
from marketing.outcomes import customer_range_sql, outcome_ctes_sql

_PLACES = Decimal("0.0001")
GROUPS = ("treated", "control")


def money(value) -> Decimal:
    """NUMERIC from PostgreSQL, a float (or None) from SQLite: 4 places, as stored."""
    return Decimal(str(value or 0)).quantize(_PLACES)


def _ratio(numerator, denominator) -> float | None:
    """numerator / denominator in Decimal (money is exact), as a float; None over 0."""
    if not denominator:
        return None
    return float(Decimal(str(numerator)) / Decimal(str(denominator)))


def _local_day_sql(column: str, tz: str) -> tuple[str, list]:
    """SQL for the local day (PostgreSQL) or the UTC minute (SQLite, whose date functions
    know no time zones; minutes convert exactly, every zone's offset being whole minutes)."""
    if connection.vendor == "postgresql":
        return f"(({column}) AT TIME ZONE %s)::date", [tz]
    return f"strftime('%%Y-%%m-%%d %%H:%%M', {column})", []


def _to_local_day(bucket, tz: ZoneInfo) -> date:
    if isinstance(bucket, date) and not isinstance(bucket, datetime):
        return bucket
    instant = parse_datetime(bucket + ":00").replace(tzinfo=UTC)
    return instant.astimezone(tz).date()


def _fetch(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _report_rows(
    campaign_id: int, goal_kind: str, window_days: int, tz: str, customers: tuple[int, int] | None = None
) -> list[tuple]:
    """One statement over the outcome join's CTEs, its parts tagged by the first column
    (then grp, channel, creative_id, day bucket, values):
    'x': per (group, first send's channel/creative): customers, clicked, opened;
    'c': the same for converted customers: converted, orders, revenue, revenue squares,
         clicked;
    's': per (channel, creative, day): sends (all `sent` touchpoints);
    'd': per day: the treated group's conversions (orders/events) and revenue;
    'r': per day: the treated group's netted refunds."""
    table = connection.ops.quote_name(Touchpoint._meta.db_table)
    # The goal read bounded by the campaign's span (first exposure to last exposure +
    # window) taken from the exposures in the statement itself: a separate exposure_span
    # would read the campaign's index once more.
    ctes, cte_params = outcome_ctes_sql(
        campaign_id,
        goal_kind=goal_kind,
        window_days=window_days,
        flags=("click", "open"),
        bound_by_exposures=True,
        customers=customers,
    )
    within, within_params = customer_range_sql(customers)
    day, day_params = _local_day_sql("occurred_at", tz)
    sql = f"""
        {ctes}
        SELECT 'x', grp, channel, creative_id, CAST(NULL AS DATE), customers, with_click, with_open, NULL, NULL
        FROM exposure_groups
        UNION ALL
        SELECT 'c', grp, channel, creative_id, CAST(NULL AS DATE), COUNT(*), SUM(conversions), SUM(revenue),
               SUM(revenue * revenue), SUM(has_click)
        FROM converted GROUP BY grp, channel, creative_id
        UNION ALL
        SELECT 's', NULL, channel, creative_id, {day}, COUNT(*), NULL, NULL, NULL, NULL
        FROM {table} WHERE campaign_id = %s AND kind = 'sent'{within}
        GROUP BY channel, creative_id, {day}
        UNION ALL
        SELECT 'd', NULL, NULL, NULL, {day}, COUNT(DISTINCT CAST(customer_id AS TEXT) || conversion_key),
               SUM(revenue), NULL, NULL, NULL
        FROM goal WHERE grp = 'treated'
        GROUP BY {day}
        UNION ALL
        SELECT 'r', NULL, NULL, NULL, {day}, NULL, SUM(revenue), NULL, NULL, NULL
        FROM refund WHERE grp = 'treated'
        GROUP BY {day}
    """
    params = [
        *cte_params,
        *day_params,
        campaign_id,
        *within_params,
        *day_params,
        *day_params,
        *day_params,
        *day_params,
        *day_params,
    ]
    return _fetch(sql, params)


def _exposed_id_bounds(campaign_id: int) -> tuple[int | None, int | None]:
    """The lowest and highest id of the campaign's exposed customers (None, None: none):
    four index probes of the campaign index, one per end and kind."""
    table = connection.ops.quote_name(Touchpoint._meta.db_table)
    ends = " UNION ALL ".join(
        f"SELECT (SELECT {edge}(customer_id) FROM {table} WHERE campaign_id = %s AND kind = '{kind}')"
        for edge in ("MIN", "MAX")
        for kind in ("sent", "held_out")
    )
    found = [value for (value,) in _fetch(ends, [campaign_id] * 4) if value is not None]
    return (min(found), max(found)) if found else (None, None)


def _cost_rows(campaign_id: int) -> list[tuple]:
    """(channel kind, creative_id, messages, cost) of the sent messages (cost is set when
    a message is sent, and kept when it is later delivered)."""
    message = connection.ops.quote_name(Message._meta.db_table)
    channel = connection.ops.quote_name(Channel._meta.db_table)
    # Grouped by channel id before the channel's kind is joined: a million messages
    # aggregate to a few rows first, rather than each being joined.
    sql = f"""
        SELECT ch.kind, m.creative_id, SUM(m.messages), SUM(m.cost)
        FROM (SELECT channel_id, creative_id, COUNT(*) AS messages, SUM(cost) AS cost
              FROM {message} WHERE campaign_id = %s AND cost IS NOT NULL
              GROUP BY channel_id, creative_id) m
        LEFT JOIN {channel} ch ON ch.id = m.channel_id
        GROUP BY ch.kind, m.creative_id
    """
    return _fetch(sql, [campaign_id])


def _empty_stats() -> dict:
    return {
        "customers": 0,
        "conversions": 0,
        "orders": 0,
        "revenue": Decimal(0),
        "squares": Decimal(0),
        "clicked": 0,
        "opened": 0,
        "clicked_converted": 0,
    }


def _add(stats: dict, part: str, values: list) -> None:
    if part == "x":
        customers, clicked, opened = values[:3]
        stats["customers"] += int(customers)
        stats["clicked"] += int(clicked or 0)
        stats["opened"] += int(opened or 0)
    else:
        converted, orders, revenue, squares, clicked = values
        stats["conversions"] += int(converted)
        stats["orders"] += int(orders or 0)
        stats["revenue"] += Decimal(str(revenue or 0))
        stats["squares"] += Decimal(str(squares or 0))
        stats["clicked_converted"] += int(clicked or 0)


def _group_answer(stats: dict) -> dict:
    customers = stats["customers"]
    return {
        "customers": customers,
        "conversions": stats["conversions"],
        "conversion_rate": _ratio(stats["conversions"], customers),
        "orders": stats["orders"],
        "revenue": str(money(stats["revenue"])),
        "revenue_per_customer": str(money(stats["revenue"] / customers)) if customers else None,
    }


def _economics(revenue: Decimal, cost: Decimal, conversions: int) -> dict:
    return {
        "cpa": str(money(cost / conversions)) if conversions else None,
        "roas": _ratio(revenue, cost),
        "roi": _ratio(revenue - cost, cost),
    }


def campaign_roi(campaign_id: int, *, goal: str | None = None, window_days: int | None = None) -> dict:
    """The campaign's ROI and lift report (see the module docstring); NotFound for an
    unknown campaign."""
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        raise NotFound(f"Campaign {campaign_id} does not exist.")
    goal_kind = goal or campaign.goal_event
    window = campaign.attribution_window_days if window_days is None else int(window_days)
    tz_name = settings.REPORTING_TIMEZONE
    tz = ZoneInfo(tz_name)

    groups = {name: _empty_stats() for name in GROUPS}
    by_channel: dict[str, dict] = defaultdict(_empty_stats)
    by_creative: dict[int | None, dict] = defaultdict(_empty_stats)
    sends_by_channel: dict[str, int] = defaultdict(int)
    sends_by_creative: dict[int | None, int] = defaultdict(int)
    daily: dict[date, dict] = defaultdict(lambda: {"sends": 0, "conversions": 0, "revenue": Decimal(0)})
    # The customers split into ranges computed at once on several connections over one
    # snapshot (analytics.db.run_parts), the message costs beside them; every part's rows
    # are additive, so they are simply summed below.
    ranges = customer_ranges(partial(_exposed_id_bounds, campaign.pk))
    parts = [partial(_report_rows, campaign.pk, goal_kind, window, tz_name, customers) for customers in ranges]
    *range_rows, cost_rows = run_parts([*parts, partial(_cost_rows, campaign.pk)], hash_joins=True)
    rows = [row for part_rows in range_rows for row in part_rows]
    for part, grp, channel, creative_id, bucket, *values in rows:
        if part in ("x", "c"):
            targets = [groups[grp]]
            if grp == "treated":
                targets += [by_channel[channel or ""], by_creative[creative_id]]
            for stats in targets:
                _add(stats, part, values)
        elif part == "s":
            sends = int(values[0])
            sends_by_channel[channel or ""] += sends
            sends_by_creative[creative_id] += sends
            daily[_to_local_day(bucket, tz)]["sends"] += sends
        elif part == "d":
            day = daily[_to_local_day(bucket, tz)]
            day["conversions"] += int(values[0])
            day["revenue"] += Decimal(str(values[1] or 0))
        else:  # "r": refunds netted out, on their own day
            daily[_to_local_day(bucket, tz)]["revenue"] -= Decimal(str(values[1] or 0))

    cost_by_channel: dict[str, Decimal] = defaultdict(Decimal)
    cost_by_creative: dict[int | None, Decimal] = defaultdict(Decimal)
    messages_sent = 0
    for channel_kind, creative_id, messages, cost in cost_rows:
        messages_sent += int(messages)
        cost_by_channel[channel_kind or ""] += Decimal(str(cost or 0))
        cost_by_creative[creative_id] += Decimal(str(cost or 0))
    messages_cost = money(sum(cost_by_channel.values(), Decimal(0)))
    fixed_cost = money(campaign.fixed_cost)
    cost = messages_cost + fixed_cost

    treated, control = groups["treated"], groups["control"]
    revenue = money(treated["revenue"])
    conversion_lift = compare_proportions(
        treated["conversions"], treated["customers"], control["conversions"], control["customers"]
    )
    revenue_lift = welch(
        Moments(treated["customers"], treated["revenue"], treated["squares"]),
        Moments(control["customers"], control["revenue"], control["squares"]),
    )
    incremental_conversions = (
        conversion_lift.absolute * treated["customers"] if conversion_lift.absolute is not None else None
    )
    incremental_revenue = (
        money(Decimal(repr(revenue_lift.absolute)) * treated["customers"])
        if revenue_lift.absolute is not None
        else None
    )
    notes = []
    if not control["customers"]:
        notes.append("No holdout: no customer of this campaign was held out, so there is no lift to measure.")
    if not treated["customers"]:
        notes.append("No sends: no customer of this campaign was sent a message.")
    elif not treated["conversions"] and not control["conversions"]:
        notes.append(f"No conversions: no exposed customer had a '{goal_kind}' touchpoint within {window} days.")

    creative_names = {
        c.pk: (c.name, c.channel_kind)
        for c in Creative.objects.filter(pk__in=[k for k in {*by_creative, *sends_by_creative} if k is not None])
    }

    def breakdown_row(label: str, stats: dict, sends: int, row_cost: Decimal) -> dict:
        row_revenue = money(stats["revenue"])
        row_cost = money(row_cost)
        return {
            "label": label,
            "sends": sends,
            "customers": stats["customers"],
            "clicks": stats["clicked"],
            "conversions": stats["conversions"],
            "conversion_rate": _ratio(stats["conversions"], stats["customers"]),
            "revenue": str(row_revenue),
            "cost": str(row_cost),
            **_economics(row_revenue, row_cost, stats["conversions"]),
        }

    channels = sorted({*by_channel, *sends_by_channel, *cost_by_channel})
    creatives = sorted({*by_creative, *sends_by_creative, *cost_by_creative}, key=lambda k: (k is None, k or 0))
    return {
        "campaign": {"id": campaign.pk, "name": campaign.name},
        "goal": goal_kind,
        "window_days": window,
        "currency": settings.REPORTING_CURRENCY,
        "timezone": tz_name,
        "sends": sum(sends_by_channel.values()),
        "messages_sent": messages_sent,
        "opens": treated["opened"],
        "clicks": treated["clicked"],
        "conversions": treated["conversions"],
        "orders": treated["orders"],
        "revenue": str(revenue),
        "messages_cost": str(messages_cost),
        "fixed_cost": str(fixed_cost),
        "cost": str(cost),
        "open_rate": _ratio(treated["opened"], treated["customers"]),
        "ctr": _ratio(treated["clicked"], treated["customers"]),
        "cvr": _ratio(treated["clicked_converted"], treated["clicked"]),
        **_economics(revenue, cost, treated["conversions"]),
        "treated": _group_answer(treated),
        "control": _group_answer(control),
        "lift": {"conversion_rate": conversion_lift.as_dict(), "revenue_per_customer": revenue_lift.as_dict()},
        "incremental_conversions": incremental_conversions,
        "incremental_revenue": str(incremental_revenue) if incremental_revenue is not None else None,
        "incremental_roi": _ratio(incremental_revenue - cost, cost) if incremental_revenue is not None else None,
        "by_channel": [
            {
                "channel": channel,
                **breakdown_row(
                    channel or "(none)", by_channel[channel], sends_by_channel[channel], cost_by_channel[channel]
                ),
            }
            for channel in channels
        ],
        "by_creative": [
            {
                "creative": creative,
                **breakdown_row(
                    _creative_label(creative, creative_names),
                    by_creative[creative],
                    sends_by_creative[creative],
                    cost_by_creative[creative],
                ),
            }
            for creative in creatives
        ],
        "daily": [
            {
                "date": day.isoformat(),
                "sends": values["sends"],
                "conversions": values["conversions"],
                "revenue": str(money(values["revenue"])),
            }
            for day, values in sorted(daily.items())
        ],
        "notes": notes,
    }


def _creative_label(creative_id: int | None, names: dict) -> str:
    if creative_id is None:
        return "(none)"
    if creative_id in names:
        name, channel_kind = names[creative_id]
        return f"{name} ({channel_kind})"
    return f"creative {creative_id}"


def campaign_message_count(campaign_id: int) -> int:
    """Messages of the campaign that were or will be sent (for the sync-or-queue rule):
    its sent touchpoints when it has no messages (an imported experiment)."""
    count = Message.objects.filter(campaign_id=campaign_id).count()
    if count:
        return count
    return Touchpoint.objects.filter(campaign_id=campaign_id, kind__in=("sent", "held_out")).count()
