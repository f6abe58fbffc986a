"""The funnel query: per customer, when they reached each step; per step (and breakdown
value), how many reached it and how long it took. One query builder per order mode, for
PostgreSQL (everything in one SQL statement: a hash aggregate of step 1's rows for the
entries, then the later steps' rows hash-joined to them inside each customer's window;
no sort of the touchpoints, see chain_postgres) and SQLite (the per-customer chains in
SQL with one correlated lookup per step, the percentiles in Python: SQLite has none). A
funnel whose steps name only kinds, without a breakdown, runs in customer ranges at once
on REPORT_PARALLELISM connections over one snapshot (analytics.db.run_parts): counts add
up, the times are gathered and their percentiles taken here with percentile_cont's own
arithmetic, so the answer is the one statement's to the last digit.

Semantics (the same on both databases; tests/test_funnels.py checks them on both):

- Entry: a customer enters with their FIRST touchpoint matching step 1 whose time lies in
  [date_from, date_to): one entry per customer, even if they match step 1 again later.
  The window W runs from the entry: a later step counts only in (entry, entry + W], the
  end included ("exactly at the window end counts").
- "After" means strictly later in time: a touchpoint at the same instant as the previous
  step's cannot be told to come after it. Touchpoints of one instant are ordered by id
  (the order the log received them) where an order is needed (the entry's own columns,
  strict mode's "next touchpoint").
- ordered: each step k is the customer's first touchpoint matching step k after the time
  step k-1 was reached (the earliest such chain: taking the earliest match at each step
  never loses a later step), other touchpoints allowed in between.
- strict: each step k must be the customer's very next touchpoint after step k-1's, of ANY
  kind (the issue's "no other touchpoint of the customer between"; a `delivered` receipt
  or an `open` in between breaks the chain), matching step k's kind and filters and
  strictly later in time. Strict mode therefore reads all the customer's touchpoints in
  the range, not just the funnel's kinds.
- any: each step k >= 2 needs a matching touchpoint in (entry, entry + W], in any order;
  a customer "reaches step k" when they did steps 1..k, at the time the last of them
  happened (so counts never rise from one step to the next and times are never negative).
- Times to convert, in seconds: `from_previous` = reach time of step k minus that of step
  k-1; `from_first` = reach time of step k minus the entry. Median and p90 are
  PostgreSQL's percentile_cont (linear interpolation), recomputed the same way on SQLite.
- Breakdown value: campaign/channel/creative of the entry touchpoint; the customer's
  current attribute, segment memberships (one customer can count under several segments;
  the totals count them once) or cluster of the clustering's champion version. No value
  (no campaign, no channel, attribute missing or empty, in none of the segments) is the
  value "" shown as "(none)". Values ranked by entered customers (then by value, byte
  order) beyond the limit are summed up as "other" (a customer in several segments left
  to "other" counts there once per segment, as in each segment's own row).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from math import ceil, floor
from typing import Any

from django.db import connection
from django.utils.dateparse import parse_datetime

from analytics.db import customer_ranges, report_session, run_parts
from analytics.funnels.spec import FunnelSpec, FunnelStep
from campaigns.models import SegmentMembership
from marketing.models import Customer, Product, Touchpoint
from mlcore.models import CustomerCluster

PERCENTILES = (0.5, 0.9)
# Session settings of the funnel's transaction (PostgreSQL; SET LOCAL, so they end with it):
# - work_mem: the entries' hash table (one row per entered customer, ~120 MB for 1M) and
#   the later steps' join stay in memory;
# - no plain index scans: the timeline index (customer_id, occurred_at) hands rows over in
#   customer order, so the planner likes it for the per-customer grouping, but that order
#   costs a random heap fetch per row: 66 s instead of 5 s for the benchmark's 7M rows
#   (bitmap scans of the kind index stay allowed: they read the heap in physical order);
# - no JIT: compiling the plan took longer than running it (analytics.db says the same).
FUNNEL_SETTINGS = {"work_mem": "'256MB'", "enable_indexscan": "off", "jit": "off"}
# The per-customer plan (chain_by_customer) streams index-only scans of the (kind,
# customer_id, occurred_at) index in customer order through merge joins and sorted
# aggregates: nothing hashed, nothing sorted. The planner cannot estimate how many
# customers a step's grouping keeps (it guessed 200 for 900k), so left alone it hashed
# the first step and sorted the result again, and with small tables (stale statistics)
# it nests loops that rescan a step's subquery per customer: hashing, nested loops, heap
# scans and parallel plans are off for the statement (the breakdowns' joins then merge
# in the chain's customer order).
BY_CUSTOMER_SETTINGS = {
    "work_mem": "'256MB'",
    "jit": "off",
    "enable_hashjoin": "off",
    "enable_nestloop": "off",
    "enable_hashagg": "off",
    "enable_seqscan": "off",
    "enable_bitmapscan": "off",
    "max_parallel_workers_per_gather": "0",
}


@dataclass(frozen=True)
class GroupStats:
    """One row of the answer: the totals, a breakdown value or "other"."""

    group: str  # "total" | "value" | "other"
    value: str | None  # the breakdown value ("" = none); None for total and other
    merged: int  # other: how many values it sums up
    customers: list[int]  # per step
    from_previous: list[list[float] | None]  # per step: [median, p90] seconds; None when nobody
    from_first: list[list[float] | None]


class _Params:
    """Named query parameters (%(p0)s...), so one fragment can be used several times."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"%({name})s"


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def step_condition(step: FunnelStep, p: _Params, alias: str = "t") -> str:
    """SQL that is true when the touchpoint `alias` matches the step (kind and filters)."""
    parts = [f"{alias}.kind = {p.add(step.kind)}"]
    if step.channel is not None:
        parts.append(f"{alias}.channel = {p.add(step.channel)}")
    if step.campaign is not None:
        parts.append(f"{alias}.campaign_id = {p.add(step.campaign)}")
    if step.sku is not None:
        parts.append(f"{alias}.sku = {p.add(step.sku)}")
    if step.category is not None:
        parts.append(
            f"{alias}.sku IN (SELECT pr.sku FROM {_table(Product)} pr WHERE pr.category = {p.add(step.category)})"
        )
    for key, value in step.properties:
        if _postgres():
            # Containment of a one-key object with a scalar value is exact equality.
            parts.append(f"{alias}.properties @> {p.add(json.dumps({key: value}))}::jsonb")
            continue
        path = p.add(f'$."{key}"')
        json_type = f"json_type({alias}.properties, {path})"
        if isinstance(value, bool):
            parts.append(f"{json_type} = '{'true' if value else 'false'}'")
        elif isinstance(value, str):
            parts.append(f"{json_type} = 'text' AND json_extract({alias}.properties, {path}) = {p.add(value)}")
        else:
            parts.append(
                f"{json_type} IN ('integer', 'real') AND json_extract({alias}.properties, {path}) = {p.add(value)}"
            )
    return "(" + " AND ".join(parts) + ")"


def _entry_value(spec: FunnelSpec, alias: str = "t") -> str | None:
    """The breakdown value taken from the entry touchpoint, as text ("" for none)."""
    by = spec.breakdown.by if spec.breakdown else None
    column = {"campaign": "campaign_id", "creative": "creative_id"}.get(by)
    if column:
        return f"COALESCE(CAST({alias}.{column} AS TEXT), '')"
    if by == "channel":
        return f"{alias}.channel"
    return None


def _plus_window(column: str, p: _Params, spec: FunnelSpec) -> str:
    if _postgres():
        return f"({column} + {p.add(spec.window_seconds)} * INTERVAL '1 second')"
    # Django's own SQLite function for datetime + duration (microseconds).
    return f"django_format_dtdelta('+', {column}, {p.add(spec.window_seconds * 10**6)})"


def _range_end(p: _Params, spec: FunnelSpec) -> str:
    """Nothing after date_to + W can be a step of an entry before date_to."""
    if _postgres():
        return _plus_window(f"{p.add(spec.date_to)}::timestamptz", p, spec)
    return _plus_window(p.add(connection.ops.adapt_datetimefield_value(spec.date_to)), p, spec)


def _instant(p: _Params, value: datetime) -> str:
    return p.add(value if _postgres() else connection.ops.adapt_datetimefield_value(value))


# --- per-customer chains ----------------------------------------------------------------------------
# Each builder returns SQL of one row per entered customer: customer_id, eb (the entry's
# breakdown value or NULL), r1..rn (when the customer reached each step; NULL = not).


def _reach_columns(n: int, prefix: str = "") -> str:
    return ", ".join(f"{prefix}r{k}" for k in range(1, n + 1))


def _any_reach(n: int) -> str:
    """r2..rn of `any` order from a2..an, each step's first time in the window: step k is
    reached once all of steps 2..k are, at the latest of their times."""
    return ", ".join(
        f"CASE WHEN {' AND '.join(f'a{j} IS NOT NULL' for j in range(2, k + 1))} "
        f"THEN GREATEST({', '.join(f'a{j}' for j in range(2, k + 1))}) END AS r{k}"
        for k in range(2, n + 1)
    )


def _entries(spec: FunnelSpec, p: _Params, conditions: list[str]) -> str:
    """Each entered customer's entry time: their first step-1 touchpoint in the range (a
    hash aggregate of step 1's rows, which PostgreSQL runs in parallel)."""
    date_from, date_to = _instant(p, spec.date_from), _instant(p, spec.date_to)
    return f"""
        SELECT t.customer_id, MIN(t.occurred_at) AS r1 FROM {_table(Touchpoint)} t
        WHERE {conditions[0]} AND t.occurred_at >= {date_from} AND t.occurred_at < {date_to}
        GROUP BY t.customer_id
    """


def chain_postgres(spec: FunnelSpec, p: _Params) -> str:
    """ordered and any on PostgreSQL, in two passes over the touchpoints that never sort
    them: (1) the entries (hash aggregate of step 1's rows); (2) the later steps' rows of
    the entered customers inside their windows (a hash join to the entries: most rows of
    the year lie outside every window and drop here), grouped per customer into the
    sorted array of each step's times (ordered) or each step's first time (any). The
    ordered chain is then a binary search per step (width_bucket(x, a) = how many
    elements are <= x, so the next element is the first one strictly after x).

    Why not one scan: a single pass must group ALL the funnel's rows per customer in
    time order (a sort of ~7M rows for the benchmark), since the window is only known
    once the customer's entry is; that sort alone took longer than both passes."""
    n = len(spec.steps)
    conditions = [step_condition(step, p, "t") for step in spec.steps]
    entry = _entry_value(spec)
    later_kinds = {step.kind for step in spec.steps[1:]} | ({spec.steps[0].kind} if entry else set())
    kinds = ", ".join(p.add(kind) for kind in sorted(later_kinds))
    date_from = _instant(p, spec.date_from)
    flags = [f"{conditions[k - 1]} AS s{k}" for k in range(2, n + 1)]
    if entry:  # the entry row itself (its time is r1), for its breakdown value
        flags.append(f"({conditions[0]} AND t.occurred_at = e.r1) AS s1, {entry} AS eb")
    # Rows of a step kind that match no step (its filters) drop before the grouping; with
    # no filters every row matches, and the condition would only spoil the row estimates.
    has_filters = any(step.as_json().keys() - {"kind", "name"} for step in spec.steps)
    matches = " OR ".join(f"l.s{k}" for k in range(1 if entry else 2, n + 1)) if has_filters else "TRUE"
    if spec.order == "ordered":
        per_step = [
            f"ARRAY_AGG(l.at ORDER BY l.at) FILTER (WHERE l.s{k} AND l.at > l.r1) AS a{k}" for k in range(2, n + 1)
        ]
    else:
        per_step = [f"MIN(l.at) FILTER (WHERE l.s{k} AND l.at > l.r1) AS a{k}" for k in range(2, n + 1)]
    if entry:
        per_step.append("(ARRAY_AGG(l.eb ORDER BY l.id) FILTER (WHERE l.s1))[1] AS eb")
    sql = f"""
        WITH entries AS MATERIALIZED ({_entries(spec, p, conditions)}),
        per AS (
            SELECT l.customer_id, {", ".join(per_step)}
            FROM (
                SELECT t.customer_id, e.r1, t.id, t.occurred_at AS at, {", ".join(flags)}
                FROM {_table(Touchpoint)} t JOIN entries e ON e.customer_id = t.customer_id
                WHERE t.kind IN ({kinds}) AND t.occurred_at >= {date_from} AND t.occurred_at < {_range_end(p, spec)}
                  AND t.occurred_at >= e.r1 AND t.occurred_at <= {_plus_window("e.r1", p, spec)}
            ) l
            WHERE {matches}
            GROUP BY l.customer_id
        )
        SELECT e.customer_id, {"p.eb" if entry else "NULL"} AS eb, e.r1, {", ".join(f"p.a{k}" for k in range(2, n + 1))}
        FROM entries e LEFT JOIN per p ON p.customer_id = e.customer_id
    """
    if spec.order == "any":
        return f"SELECT customer_id, eb, r1, {_any_reach(n)} FROM ({sql}) z"
    # One layer per step (OFFSET 0 keeps them apart, so each binary search runs once per
    # customer rather than once per later reference to it); every element is in the window.
    for k in range(2, n + 1):
        previous = f"r{k - 1}"
        sql = f"SELECT y.*, a{k}[width_bucket({previous}, a{k}) + 1] AS r{k} FROM ({sql} OFFSET 0) y"
    return f"SELECT customer_id, eb, {_reach_columns(n)} FROM ({sql}) z"


def chain_sqlite_steps(spec: FunnelSpec, p: _Params) -> str:
    """ordered and any on SQLite: the entries, then one correlated lookup per step (the
    timeline index (customer, occurred_at) serves each)."""
    n = len(spec.steps)
    table = _table(Touchpoint)
    conditions = [step_condition(step, p, "t") for step in spec.steps]
    date_from, date_to = _instant(p, spec.date_from), _instant(p, spec.date_to)
    entry = _entry_value(spec)
    eb = (
        f"(SELECT {entry} FROM {table} t WHERE t.customer_id = e0.customer_id AND {conditions[0]} "
        f"AND t.occurred_at = e0.r1 ORDER BY t.id LIMIT 1)"
        if entry
        else "NULL"
    )
    sql = f"""
        SELECT e0.customer_id, {eb} AS eb, e0.r1, {_plus_window("e0.r1", p, spec)} AS e
        FROM (
            SELECT t.customer_id, MIN(t.occurred_at) AS r1 FROM {table} t
            WHERE {conditions[0]} AND t.occurred_at >= {date_from} AND t.occurred_at < {date_to}
            GROUP BY t.customer_id
        ) e0
    """
    for k in range(2, n + 1):
        after = f"y.x{k - 1}" if spec.order == "ordered" and k > 2 else "y.r1"
        sql = f"""
            SELECT y.*, (
                SELECT MIN(t.occurred_at) FROM {table} t
                WHERE t.customer_id = y.customer_id AND {conditions[k - 1]}
                  AND t.occurred_at > {after} AND t.occurred_at <= y.e
            ) AS x{k}
            FROM ({sql}) y
        """
    if spec.order == "ordered":
        reach = [f"x{k} AS r{k}" for k in range(2, n + 1)]  # already within the window
    else:  # multi-argument MAX is NULL when any argument is
        reach = [f"MAX({', '.join(f'x{j}' for j in range(2, k + 1))}, r1) AS r{k}" for k in range(2, n + 1)]
    return f"SELECT customer_id, eb, r1, {', '.join(reach)} FROM ({sql}) z"


def chain_strict(spec: FunnelSpec, p: _Params) -> str:
    """strict, both databases: the entries, then every touchpoint of each entered customer
    inside their window (a hash join: the rest of the year drops there), numbered in
    timeline order (time, id); the entry is the first step-1 row at the entry time, and
    the n-1 rows right after it must be steps 2..n, each strictly later than the one
    before (LEAD-free: the rows are picked by their number)."""
    n = len(spec.steps)
    conditions = [step_condition(step, p, "t") for step in spec.steps]
    mask = " + ".join(f"CASE WHEN {condition} THEN {1 << k} ELSE 0 END" for k, condition in enumerate(conditions))
    entry = _entry_value(spec)
    picks = ", ".join(
        f"MAX(CASE WHEN x.pos = x.entry_pos + {j} THEN x.m END) AS m{j}, "
        f"MAX(CASE WHEN x.pos = x.entry_pos + {j} THEN x.at END) AS at{j}"
        for j in range(1, n)
    )
    reach, ok = [], []
    for k in range(2, n + 1):
        j = k - 1  # step k is the j-th touchpoint after the entry
        previous = f"at{j - 1}" if j > 1 else "r1"
        ok.append(f"(m{j} & {1 << (k - 1)}) <> 0 AND at{j} > {previous} AND at{j} <= e")
        reach.append(f"CASE WHEN {' AND '.join(ok)} THEN at{j} END AS r{k}")
    return f"""
        SELECT customer_id, eb, r1, {", ".join(reach)}
        FROM (
            SELECT x.customer_id, x.r1, x.e, MAX(CASE WHEN x.pos = x.entry_pos THEN x.eb END) AS eb, {picks}
            FROM (
                SELECT w.*, MIN(CASE WHEN (w.m & 1) = 1 AND w.at = w.r1 THEN w.pos END)
                            OVER (PARTITION BY w.customer_id) AS entry_pos
                FROM (
                    SELECT t.customer_id, t.occurred_at AS at, {mask} AS m, {entry or "NULL"} AS eb, e.r1, e.e,
                           ROW_NUMBER() OVER (PARTITION BY t.customer_id ORDER BY t.occurred_at, t.id) AS pos
                    FROM {_table(Touchpoint)} t
                    JOIN (
                        SELECT e0.customer_id, e0.r1, {_plus_window("e0.r1", p, spec)} AS e
                        FROM ({_entries(spec, p, conditions)}) e0
                    ) e ON e.customer_id = t.customer_id
                    WHERE t.occurred_at >= {_instant(p, spec.date_from)} AND t.occurred_at < {_range_end(p, spec)}
                      AND t.occurred_at >= e.r1 AND t.occurred_at <= e.e
                ) w
            ) x
            WHERE x.pos BETWEEN x.entry_pos AND x.entry_pos + {n - 1}
            GROUP BY x.customer_id, x.r1, x.e
        ) g
    """


def by_customer(spec: FunnelSpec) -> bool:
    """Whether the funnel runs as chain_by_customer: PostgreSQL, ordered or any, steps
    that name only a kind (a filter needs the touchpoint row from the heap) and no
    breakdown taken from the entry touchpoint (likewise)."""
    return (
        _postgres()
        and spec.order in ("ordered", "any")
        and all(step.as_json().keys() <= {"kind", "name"} for step in spec.steps)
        and _entry_value(spec) is None
    )


def chain_by_customer(spec: FunnelSpec, p: _Params, customers: tuple[int, int] | None = None) -> str:
    """ordered and any on PostgreSQL when the steps name only kinds: everything in
    customer order from the index touchpoint_kind_customer (kind, customer_id,
    occurred_at), which holds every column the funnel reads, so its index-only scans
    hand over each step's touchpoints per customer in time order, no heap read, no hash
    table of a million customers, no sort (bench/reports.py: 9 s for the join per step
    with hashes, ~2.5 s this way, against ~1.9 s for one plain scan of the rows).

    The entries are the first row per customer of step 1's scan; each later
    step is a merge left join of the chain so far with that step's scan (a sorted
    subquery: OFFSET 0 keeps its ORDER BY, which the index delivers, so the planner
    merges rather than hashes), grouped per customer again (the join keeps customer
    order): ordered takes the first match after the previous step's time, any the first
    match after the entry, both within the entry's window. Same answers as chain_postgres
    (tests/test_funnels.py runs both).

    `customers`: (low, high), only customers with low <= id < high: every scan is then a
    range of the index's customer column, and disjoint ranges partition the funnel
    (funnel_stats runs them at once on several connections)."""
    n = len(spec.steps)
    table = _table(Touchpoint)
    date_from, date_to = _instant(p, spec.date_from), _instant(p, spec.date_to)
    range_end = _range_end(p, spec)
    within = ""
    if customers is not None:
        within = f" AND customer_id >= {p.add(int(customers[0]))} AND customer_id < {p.add(int(customers[1]))}"
    # The entry: each customer's first step-1 row, which the index hands over first (a
    # DISTINCT ON keeps it: cheaper than a MIN per row over the 4.5M visits of the bench).
    sql = f"""
        SELECT DISTINCT ON (t.customer_id) t.customer_id, t.occurred_at AS r1 FROM {table} t
        WHERE t.kind = {p.add(spec.steps[0].kind)}{within.replace(" customer_id", " t.customer_id")}
          AND t.occurred_at >= {date_from} AND t.occurred_at < {date_to}
        ORDER BY t.customer_id, t.occurred_at
    """
    carried = ["r1"]
    for k in range(2, n + 1):
        after = f"c.{carried[-1]}" if spec.order == "ordered" else "c.r1"
        rows = (
            f"SELECT customer_id, occurred_at AS at FROM {table} WHERE kind = {p.add(spec.steps[k - 1].kind)}{within} "
            f"AND occurred_at > {date_from} AND occurred_at <= {range_end} "
            "ORDER BY customer_id, occurred_at OFFSET 0"
        )
        keep = ", ".join(f"MIN(c.{column}) AS {column}" for column in carried)
        sql = f"""
            SELECT c.customer_id, {keep}, MIN(s.at) AS {"r" if spec.order == "ordered" else "a"}{k}
            FROM ({sql}) c LEFT JOIN ({rows}) s
              ON s.customer_id = c.customer_id AND s.at > {after} AND s.at <= {_plus_window("c.r1", p, spec)}
            GROUP BY c.customer_id
        """
        carried.append(f"r{k}" if spec.order == "ordered" else f"a{k}")
    if spec.order == "any":
        return f"SELECT customer_id, NULL AS eb, r1, {_any_reach(n)} FROM ({sql}) z"
    return f"SELECT customer_id, NULL AS eb, {_reach_columns(n)} FROM ({sql}) z"


def chain_sql(spec: FunnelSpec, p: _Params) -> str:
    if spec.order == "strict":
        return chain_strict(spec, p)
    if by_customer(spec):
        return chain_by_customer(spec, p)
    return chain_postgres(spec, p) if _postgres() else chain_sqlite_steps(spec, p)


def source_sql(spec: FunnelSpec, p: _Params, refs: dict[str, Any]) -> str | None:
    """The breakdown's rows over the materialised `chain`: customer_id, b (text, "" for
    none), r1..rn; a customer appears once per segment they are in. None: no breakdown."""
    if spec.breakdown is None:
        return None
    n = len(spec.steps)
    reach = _reach_columns(n, "c.")
    by = spec.breakdown.by
    if by in ("campaign", "channel", "creative"):
        return f"SELECT c.customer_id, c.eb AS b, {reach} FROM chain c"
    if by == "attribute":
        path = p.add(spec.breakdown.key) if _postgres() else p.add(f'$."{spec.breakdown.key}"')
        if _postgres():
            value = f"cu.attributes ->> {path}"
        else:  # as PostgreSQL's ->> writes them: true/false, numbers as text, null as none
            value = (
                f"CASE json_type(cu.attributes, {path}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
                f"WHEN 'null' THEN NULL ELSE CAST(json_extract(cu.attributes, {path}) AS TEXT) END"
            )
        return (
            f"SELECT c.customer_id, COALESCE({value}, '') AS b, {reach} "
            f"FROM chain c JOIN {_table(Customer)} cu ON cu.id = c.customer_id"
        )
    if by == "segment":
        ids = ", ".join(p.add(segment) for segment in spec.breakdown.segments)
        return (
            f"SELECT c.customer_id, COALESCE(CAST(m.segment_id AS TEXT), '') AS b, {reach} FROM chain c "
            f"LEFT JOIN {_table(SegmentMembership)} m ON m.customer_id = c.customer_id AND m.segment_id IN ({ids})"
        )
    if by == "cluster":
        return (
            f"SELECT c.customer_id, COALESCE(CAST(cc.cluster AS TEXT), '') AS b, {reach} FROM chain c "
            f"LEFT JOIN {_table(CustomerCluster)} cc ON cc.customer_id = c.customer_id "
            f"AND cc.model_version_id = {p.add(refs['cluster_version'])}"
        )
    raise ValueError(f"unknown breakdown {by!r}")


# --- the answer ---------------------------------------------------------------------------------------


def funnel_stats(spec: FunnelSpec, refs: dict[str, Any] | None = None) -> list[GroupStats]:
    """The totals (first) and, with a breakdown, one GroupStats per shown value (most
    entered first) and "other" (last) when values were left out."""
    refs = refs or {}
    if _postgres():
        return _stats_postgres(spec, refs)
    return _stats_python(spec, refs)


def _aggregates(n: int) -> str:
    counts = [f"COUNT(r{k})" for k in range(1, n + 1)]
    pct = "ARRAY[" + ", ".join(str(q) for q in PERCENTILES) + "]::float8[]"
    times = []
    for k in range(2, n + 1):
        times.append(f"percentile_cont({pct}) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM r{k} - r{k - 1})::float8)")
        if k > 2:  # step 2's time from the first is its time from the previous
            times.append(f"percentile_cont({pct}) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM r{k} - r1)::float8)")
    return ", ".join(counts + times)


def funnel_query(spec: FunnelSpec, refs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The whole PostgreSQL query and its parameters."""
    p = _Params()
    n = len(spec.steps)
    chain = chain_sql(spec, p)
    aggregates = _aggregates(n)
    source = source_sql(spec, p, refs)
    # Materialised only when two parts read it (the totals and the breakdown).
    sql = f"WITH chain AS {'MATERIALIZED' if source else ''} ({chain})"
    if source is None:
        return f"{sql} SELECT 'total', NULL, 0, {aggregates} FROM chain", p.values
    limit = p.add(spec.breakdown.limit)
    sql += f""",
        src AS MATERIALIZED ({source}),
        ranked AS (
            SELECT b, ROW_NUMBER() OVER (ORDER BY COUNT(*) DESC, b COLLATE "C") AS rank FROM src GROUP BY b
        )
        SELECT 'total', NULL, 0, {aggregates} FROM chain
        UNION ALL
        SELECT CASE WHEN k.rank <= {limit} THEN 'value' ELSE 'other' END,
               CASE WHEN k.rank <= {limit} THEN s.b END, COUNT(DISTINCT s.b), {aggregates}
        FROM src s JOIN ranked k ON k.b = s.b
        GROUP BY 1, 2
    """
    return sql, p.values


def _stats_postgres(spec: FunnelSpec, refs: dict[str, Any]) -> list[GroupStats]:
    if by_customer(spec) and spec.breakdown is None:
        ranges = customer_ranges(partial(_entry_id_bounds, spec))
        if len(ranges) > 1:
            return [_merged_totals(spec, run_parts([partial(_part_totals, spec, customers) for customers in ranges]))]
    n = len(spec.steps)
    sql, params = funnel_query(spec, refs)
    with report_session(), connection.cursor() as cursor:
        _settings(cursor, spec)
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    out = []
    for group, value, merged, *rest in rows:
        counts, times = list(rest[:n]), list(rest[n:])
        from_previous: list[list[float] | None] = [None]
        from_first: list[list[float] | None] = [None]
        for k in range(2, n + 1):
            previous = times.pop(0)
            from_previous.append(_rounded(previous))
            from_first.append(_rounded(previous) if k == 2 else _rounded(times.pop(0)))
        out.append(GroupStats(group, value, merged, counts, from_previous, from_first))
    return _ordered(out)


# --- the per-customer plan in customer ranges, on several connections -----------------------------------
# Counts add up over disjoint customer ranges; percentiles do not, so each part returns its
# times (seconds, float8 as PostgreSQL computes them) and the percentiles are taken over
# all of them here, with percentile_cont's own arithmetic: the same figures as one statement.


def _entry_id_bounds(spec: FunnelSpec) -> tuple[int | None, int | None]:
    """The lowest and highest id of a customer with a step-1 touchpoint (None, None: none):
    two probes of the (kind, customer_id, ...) index."""
    table = _table(Touchpoint)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT MIN(customer_id) FROM {table} WHERE kind = %s), "
            f"(SELECT MAX(customer_id) FROM {table} WHERE kind = %s)",
            [spec.steps[0].kind] * 2,
        )
        return cursor.fetchone()


def _part_totals(spec: FunnelSpec, customers: tuple[int, int]) -> tuple:
    """One customer range's counts per step, then its times: from the previous step for
    steps 2..n, from the first for steps 3..n (arrays of seconds; None when nobody)."""
    n = len(spec.steps)
    p = _Params()
    chain = chain_by_customer(spec, p, customers)
    counts = [f"COUNT(r{k})" for k in range(1, n + 1)]

    def seconds(k: int, origin: int) -> str:
        return f"ARRAY_AGG(EXTRACT(EPOCH FROM r{k} - r{origin})::float8) FILTER (WHERE r{k} IS NOT NULL)"

    times = [seconds(k, k - 1) for k in range(2, n + 1)] + [seconds(k, 1) for k in range(3, n + 1)]
    with connection.cursor() as cursor:
        _settings(cursor, spec)
        cursor.execute(f"WITH chain AS ({chain}) SELECT {', '.join(counts + times)} FROM chain", p.values)
        return cursor.fetchone()


def _merged_totals(spec: FunnelSpec, rows: list[tuple]) -> GroupStats:
    n = len(spec.steps)
    counts = [sum(row[k] for row in rows) for k in range(n)]

    def percentiles(column: int) -> list[float] | None:
        seconds = sorted(value for row in rows for value in (row[column] or ()))
        return _rounded([percentile_cont(seconds, q) for q in PERCENTILES]) if seconds else None

    from_previous = [None, *(percentiles(n + k - 2) for k in range(2, n + 1))]
    from_first = [None, from_previous[1], *(percentiles(2 * n - 1 + k - 3) for k in range(3, n + 1))]
    return GroupStats("total", None, 0, counts, from_previous, from_first)


def _settings(cursor, spec: FunnelSpec) -> None:
    for name, value in (BY_CUSTOMER_SETTINGS if by_customer(spec) else FUNNEL_SETTINGS).items():
        cursor.execute(f"SET LOCAL {name} = {value}")


def _rounded(values: list[float] | None) -> list[float] | None:
    if values is None or values[0] is None:
        return None
    return [round(value, 3) for value in values]


def _ordered(rows: list[GroupStats]) -> list[GroupStats]:
    """Totals first, then values by entered customers (most first) and value, other last."""
    rank = {"total": 0, "value": 1, "other": 2}
    return sorted(rows, key=lambda row: (rank[row.group], -row.customers[0], row.value or ""))


# --- SQLite: the chains in SQL, the figures in Python ----------------------------------------------------


def _as_instant(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return parse_datetime(value).replace(tzinfo=UTC)


def percentile_cont(values: list[float], q: float) -> float:
    """PostgreSQL's percentile_cont on sorted values, computed the same way (same floats)."""
    position = q * (len(values) - 1)
    low, high = floor(position), ceil(position)
    return values[low] + (position - low) * (values[high] - values[low])


def _group_stats(group: str, value: str | None, merged: int, rows: list[tuple], n: int) -> GroupStats:
    customers = [sum(1 for row in rows if row[k] is not None) for k in range(n)]
    from_previous: list[list[float] | None] = [None]
    from_first: list[list[float] | None] = [None]
    for k in range(1, n):
        for origin, out in ((k - 1, from_previous), (0, from_first)):
            seconds = sorted((row[k] - row[origin]).total_seconds() for row in rows if row[k] is not None)
            out.append(_rounded([percentile_cont(seconds, q) for q in PERCENTILES]) if seconds else None)
    return GroupStats(group, value, merged, customers, from_previous, from_first)


def _stats_python(spec: FunnelSpec, refs: dict[str, Any]) -> list[GroupStats]:
    n = len(spec.steps)
    p = _Params()
    chain = chain_sql(spec, p)
    source = source_sql(spec, p, refs)
    # With a breakdown, its rows name every entered customer (at least once: the joins
    # keep customers without a value), so one query gives both the totals and the values.
    sql = f"WITH chain AS ({chain}) " + (source or f"SELECT customer_id, '', {_reach_columns(n)} FROM chain")
    with connection.cursor() as cursor:
        cursor.execute(sql, p.values)
        rows = cursor.fetchall()
    times: dict[int, list[datetime | None]] = {}
    by_value: dict[str, list[list[datetime | None]]] = {}
    for customer_id, value, *reached in rows:
        if customer_id not in times:
            times[customer_id] = [_as_instant(instant) for instant in reached]
        by_value.setdefault(value, []).append(times[customer_id])
    out = [_group_stats("total", None, 0, list(times.values()), n)]
    if source is None:
        return out
    ranked = sorted(by_value, key=lambda value: (-len(by_value[value]), value.encode()))
    limit = spec.breakdown.limit
    for value in ranked[:limit]:
        out.append(_group_stats("value", value, 1, by_value[value], n))
    if len(ranked) > limit:
        rest = [row for value in ranked[limit:] for row in by_value[value]]
        out.append(_group_stats("other", None, len(ranked) - limit, rest, n))
    return _ordered(out)


def explain(spec: FunnelSpec, refs: dict[str, Any] | None = None) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the PostgreSQL query, for the benchmark."""
    from django.db import transaction

    sql, params = funnel_query(spec, refs or {})
    with transaction.atomic(), connection.cursor() as cursor:
        _settings(cursor, spec)
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
        return [line for (line,) in cursor.fetchall()]
